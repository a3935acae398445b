"""Structured pruning removes channels: fewer parameters and a smaller ONNX file, same IO."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from visionline.errors import ConfigError
from visionline.export import footprint, prune_channels
from visionline.export._data import SplitPixels
from visionline.export._prune import (
    PruneScope,
    count_macs,
    finetune,
    recover,
)
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
    prune_channels(model, 64, 0.3, scope=PruneScope.ALL)
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


def _lite0(size: int = 64):
    spec = ModelSpec(
        backbone="efficientnet_lite0",
        class_names=["good", "bruise"],
        preprocessing=Preprocessing(size=size),
    )
    torch.manual_seed(0)
    return build_model(spec).eval(), spec


def test_expansion_pruning_thins_only_the_blocks_hidden_channels() -> None:
    model, _ = _lite0()
    before = {name: tuple(p.shape) for name, p in model.named_parameters()}
    macs = count_macs(model, 64)
    prune_channels(model, 64, 0.4)
    changed = {name for name, p in model.named_parameters() if tuple(p.shape) != before[name]}
    assert 0.30 <= 1 - count_macs(model, 64) / macs <= 0.45
    assert changed and all(".blocks." in name for name in changed)
    # The residual stream keeps its width: projections lose inputs, never outputs.
    assert all(model.get_parameter(n).shape[0] == before[n][0] for n in changed if "conv_pwl" in n)
    assert model.embedding_dim == model.head.in_features == 1280
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_expansion_pruning_refuses_a_backbone_without_inverted_residuals() -> None:
    spec = ModelSpec("resnet18", ["good", "bruise"], Preprocessing(size=32))
    with pytest.raises(ConfigError, match="inverted-residual"):
        prune_channels(build_model(spec).eval(), 32, 0.4)


def test_recover_refits_the_pruned_blocks_towards_the_unpruned_model() -> None:
    reference, spec = _lite0(32)
    pixels = np.random.default_rng(1).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    images = torch.from_numpy(spec.preprocessing.normalize(pixels))
    pruned = prune_channels(
        copy.deepcopy(reference), 32, 0.4, pixels=pixels, preprocessing=spec.preprocessing
    )
    with torch.no_grad():
        target = reference.embed(images)
        gap_before = (pruned.embed(images) - target).pow(2).mean()
    errors = recover(pruned, reference, spec.preprocessing, pixels)
    with torch.no_grad():
        gap_after = (pruned.embed(images) - target).pow(2).mean()
    assert errors["after"] < errors["before"]
    assert gap_after < 0.5 * gap_before
    torch.testing.assert_close(pruned.head.weight, reference.head.weight)
    narrow = prune_channels(copy.deepcopy(reference), 32, 0.3, scope=PruneScope.ALL)
    with pytest.raises(ConfigError, match="expansion scope"):
        recover(narrow, reference, spec.preprocessing, pixels)
