"""Patch features: a per-cell head on the feature map, so a small defect is not averaged away."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from visionline.errors import TrainingError
from visionline.preprocessing import Preprocessing
from visionline.train import Features, ModelSpec, TrainConfig, build_model, load_model, save_model
from visionline.train._features import (
    MaskTarget,
    PatchHead,
    cell_mask_loss,
    cell_targets,
    patch_channels,
)


def _identity_head() -> PatchHead:
    """A patch head whose cell score for class k is the cell's channel k."""
    head = PatchHead(2, 2, dropout=0.0, hidden=2).eval()
    with torch.no_grad():
        for conv in (head.cells[0], head.cells[3]):
            conv.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
            conv.bias.zero_()
    return head


def test_one_defective_cell_carries_the_image_where_an_average_would_not():
    head = _identity_head()
    uniform = torch.full((1, 2, 7, 7), 3.0)
    torch.testing.assert_close(head(uniform), torch.tensor([[3.0, 3.0]]))

    spot = torch.zeros(1, 2, 7, 7)
    spot[0, 1, 3, 4] = 10.0  # one cell of 49 says "defect"
    logits = head(spot).detach()
    assert logits[0, 1] > 5.0 > 10.0 / 49  # near the cell's score, far above the mean
    assert logits[0, 0] == pytest.approx(0.0, abs=1e-6)


def test_standardise_stores_the_training_maps_statistics_in_the_state_dict():
    head = _identity_head()
    maps = torch.randn(16, 2, 3, 3) * torch.tensor([100.0, 0.01]).reshape(1, 2, 1, 1) + 5.0
    head.standardise(maps)
    state = head.state_dict()
    torch.testing.assert_close(state["mean"].flatten(), maps.mean(dim=(0, 2, 3)))
    normalised = (maps - state["mean"]) / state["std"]
    torch.testing.assert_close(normalised.std(dim=(0, 2, 3)), torch.ones(2))


@pytest.mark.parametrize(
    ("backbone", "channels"),
    [("efficientnet_lite0", 192), ("mobilenetv3_small_100", 96), ("resnet18", 256)],
)
def test_patch_map_stops_before_the_last_stage(backbone, channels):
    spec = ModelSpec(backbone, ["good", "x", "y"], Preprocessing(size=64), features="patches")
    model = build_model(spec).eval()
    assert patch_channels(model.backbone) == channels == model.embedding_dim
    images = torch.randn(2, 3, 64, 64)
    maps = model.features(images)
    assert maps.shape[:2] == (2, channels) and maps.ndim == 4
    embedding, logits = model.predict(images)
    torch.testing.assert_close(embedding, maps.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, model(images))
    assert logits.shape == (2, 3)


def test_an_unsupported_backbone_gets_one_sentence_naming_the_fix():
    spec = ModelSpec("convnext_atto", ["good", "x"], Preprocessing(size=32), features="patches")
    with pytest.raises(TrainingError, match="use features: pooled"):
        build_model(spec)


def test_a_patch_model_round_trips_through_its_checkpoint(tmp_path):
    spec = ModelSpec(
        "mobilenetv3_small_100", ["good", "x"], Preprocessing(size=48), features="patches"
    )
    model = build_model(spec).eval()
    model.head.standardise(torch.randn(4, model.embedding_dim, 2, 2) * 3 + 1)
    loaded, loaded_spec = load_model(save_model(tmp_path / "model.pt", model, spec))
    assert loaded_spec.features == "patches"
    assert isinstance(loaded.head, PatchHead) and isinstance(loaded.dropout, nn.Identity)
    images = torch.randn(3, 3, 48, 48)
    torch.testing.assert_close(loaded(images), model(images))


def test_an_old_checkpoint_without_features_loads_as_pooled():
    data = ModelSpec("mobilenetv3_small_100", ["good", "x"]).to_dict()
    del data["features"]
    spec = ModelSpec.from_dict(data)
    assert spec.features == "pooled"
    assert isinstance(build_model(spec).head, nn.Linear)


def test_patch_map_exports_to_onnx_with_parity(tmp_path):
    from visionline.export._onnx import check_parity, export_onnx

    spec = ModelSpec(
        "mobilenetv3_small_100", ["good", "x", "y"], Preprocessing(size=64), features="patches"
    )
    model = build_model(spec).eval()
    path = export_onnx(model, 64, tmp_path / "model.onnx")
    batch = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    report = check_parity(model, path, batch)
    assert report.images == 3


def test_config_takes_features_by_name_and_refuses_others():
    assert TrainConfig(features="patches").features is Features.PATCHES
    assert TrainConfig().features is Features.POOLED
    with pytest.raises(ValueError, match="features"):
        TrainConfig(features="max")


def test_cell_targets_pool_each_mask_to_the_cells_of_the_map():
    masks = np.zeros((2, 8, 8), dtype=np.float32)
    masks[0, :2, :2] = 1.0  # a quarter of the top-left 4x4 cell
    masks[1] = np.nan  # an image whose mask is unknown
    share = cell_targets(masks, (2, 2), MaskTarget.SHARE)
    np.testing.assert_allclose(share[0], [[0.25, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(cell_targets(masks, (2, 2), MaskTarget.ANY)[0], [[1, 0], [0, 0]])
    assert np.isnan(share[1]).all()


def test_cell_mask_loss_scores_the_defect_against_the_good_logit_of_known_cells_only():
    targets = torch.tensor([[[1.0, 0.0]], [[float("nan"), float("nan")]]])  # (N=2, H=1, W=2)
    right = torch.zeros(2, 3, 1, 2)
    right[0, 2, 0, 0] = 8.0  # a defect class says "here" in the masked cell
    right[0, 0, 0, 1] = 8.0  # good says "fine" in the other one
    wrong = right.flip(3)
    assert cell_mask_loss(right, targets) < 0.01
    assert cell_mask_loss(wrong, targets) > 5.0
    assert cell_mask_loss(right[1:], targets[1:]).item() == 0.0


def test_mask_weight_needs_a_patch_head():
    assert TrainConfig(features="patches", mask_weight=1).mask_target is MaskTarget.SHARE
    with pytest.raises(ValueError, match="features: patches"):
        TrainConfig(mask_weight=1)
