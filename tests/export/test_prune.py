"""Structured pruning removes channels: fewer parameters and a smaller ONNX file, same IO."""

from __future__ import annotations

import torch

from visionline.export import footprint, prune_channels
from visionline.preprocessing import Preprocessing
from visionline.train import ModelSpec, build_model


def test_pruning_shrinks_parameters_and_onnx_file() -> None:
    spec = ModelSpec(
        backbone="mobilenetv3_small_100",
        class_names=["good", "bruise", "rot"],
        preprocessing=Preprocessing(size=64),
    )
    torch.manual_seed(0)
    model = build_model(spec).eval()
    before = footprint(model, spec.preprocessing, None, 0.02, runs=3)
    prune_channels(model, 64, 0.3)
    after = footprint(model, spec.preprocessing, None, 0.02, runs=3)
    assert after.params < 0.8 * before.params
    assert after.onnx_bytes < 0.8 * before.onnx_bytes
    out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 3)
    assert model.embedding_dim == model.head.in_features < 1024
