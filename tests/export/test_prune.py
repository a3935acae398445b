"""Structured pruning removes channels: fewer parameters and a smaller ONNX file, same IO."""

from __future__ import annotations

import torch

from visionline.export import footprint, prune_channels
from visionline.export._data import SplitPixels
from visionline.export._prune import count_macs, finetune
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
    macs = count_macs(model, 64)
    prune_channels(model, 64, 0.3)
    after = footprint(model, spec.preprocessing, None, 0.02, runs=3)
    assert count_macs(model, 64) < 0.7 * macs
    assert after.params < 0.8 * before.params
    assert after.onnx_bytes < 0.8 * before.onnx_bytes
    out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 3)
    assert model.embedding_dim == model.head.in_features < 1024


def test_finetune_adds_the_teacher_term_to_every_step() -> None:
    spec = ModelSpec(
        backbone="mobilenetv3_small_100",
        class_names=["good", "bruise"],
        preprocessing=Preprocessing(size=32),
    )
    torch.manual_seed(0)
    model = build_model(spec)
    pixels = torch.randint(0, 255, (6, 32, 32, 3), dtype=torch.uint8).numpy()
    train = SplitPixels("train", pixels, ["good", "bruise"] * 3)
    seen = []

    def teacher(images, logits, labels, loss):
        seen.append((images.shape, logits.shape, labels.tolist()))
        return loss + 0.0 * logits.sum()

    finetune(
        model, spec.class_names, spec.preprocessing, train, epochs=2, batch_size=4, teacher=teacher
    )
    assert [s[0][0] for s in seen] == [4, 2, 4, 2]
    assert all(
        tuple(images) == (len(labels), 3, 32, 32) and tuple(logits) == (len(labels), 2)
        for images, logits, labels in seen
    )
