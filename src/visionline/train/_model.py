"""The inspection model: a timm backbone, a linear head, and the spec that travels with it."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionline.config import GOOD_CLASS
from visionline.errors import NotFoundError, TrainingError, UnsafeFileError
from visionline.preprocessing import Preprocessing

CHECKPOINT_FORMAT = "visionline.model/1"


@dataclass
class ModelSpec:
    """What a trained model is: architecture, output classes and input preprocessing.

    Class 0 is always `good`; the defect score of an image is 1 - p(good).
    """

    backbone: str
    class_names: list[str]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    pretrained: str = "none"
    dropout: float = 0.2
    temperature: float = 1.0
    features: str = "pooled"
    """`visionline.train.Features`: a linear head on the pooled embedding, or a patch head."""

    def __post_init__(self) -> None:
        if not self.class_names or self.class_names[0] != GOOD_CLASS:
            raise TrainingError(
                f"class_names must start with '{GOOD_CLASS}', got {self.class_names}; "
                "reorder the classes."
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "class_names": list(self.class_names),
            "preprocessing": self.preprocessing.to_dict(),
            "pretrained": self.pretrained,
            "dropout": self.dropout,
            "temperature": self.temperature,
            "features": self.features,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        values = dict(data)
        values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
        return cls(**values)


class InspectionModel(nn.Module):
    """Backbone → features → head. Takes and returns batches.

    `features="pooled"`: the pooled embedding (N, D) and a linear head; `"patches"`: the feature
    map before the last stage (N, D, H, W) and a `PatchHead` (see `visionline.train._features`).
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int, dropout: float,
                 features: str = "pooled"):
        from visionline.train._features import Features, PatchHead

        super().__init__()
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.patches = Features(features) is Features.PATCHES
        self.dropout = nn.Identity() if self.patches else nn.Dropout(dropout)
        self.head: nn.Module = (
            PatchHead(embedding_dim, num_classes, dropout)
            if self.patches
            else nn.Linear(embedding_dim, num_classes)
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the head classifies, and what stage 1 caches: (N, D) or (N, D, H, W)."""
        if self.patches:
            from visionline.train._features import patch_map

            return patch_map(self.backbone, images)
        return self.backbone(images)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The (N, D) embedding of `features`: a map is averaged over its cells."""
        return features.mean(dim=(2, 3)) if features.ndim == 4 else features

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, D): what drift monitoring compares."""
        return self.pool(self.features(images))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) of `features` (the output of `features`)."""
        return self.head(self.dropout(features))

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, logits) from one backbone pass."""
        features = self.features(images)
        return self.pool(features), self.classify(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C)."""
        return self.classify(self.features(images))


def build_model(spec: ModelSpec) -> InspectionModel:
    """A fresh model for `spec`, without pretrained weights (see `load_pretrained`)."""
    from visionline.train._backbones import create_backbone
    from visionline.train._features import Features, patch_channels

    backbone = create_backbone(spec.backbone, pretrained=False, num_classes=0)
    if Features(spec.features) is Features.PATCHES:
        width = patch_channels(backbone)
    else:  # MobileNetV3's pooled output passes a conv head, so it is wider than `num_features`.
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    return InspectionModel(backbone, width, spec.num_classes, spec.dropout, spec.features)


def _scalar(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars and 0-d tensors
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a plain metadata value")


def plain(value: Any) -> Any:
    """`value` as JSON types (numpy scalars become numbers), so a file holding it loads with
    `weights_only=True`."""
    return json.loads(json.dumps(value, default=_scalar))


def read_torch_file(path: Path, fix: str) -> Any:
    """`torch.load` restricted to tensors and plain data, so reading a file cannot run code.

    A file holding any other pickled object (a model class, a numpy scalar, or a payload that
    would execute something) is refused with `UnsafeFileError`, a damaged one with
    `TrainingError`; `fix` ends either message.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:
            detail = str(exc).partition("WeightsUnpickler error:")[2].strip() or str(exc)
            raise TrainingError(
                f"{path} cannot be read as a PyTorch checkpoint ({detail.splitlines()[0][:160]}); "
                f"{fix}"
            ) from None
        raise UnsafeFileError(
            f"{path} holds a Python object ({found.group(1)}) besides tensors and plain data, "
            f"which visionline refuses to unpickle because that can run code; {fix}"
        ) from None
    except Exception as exc:  # noqa: BLE001  (torch raises many types for a damaged file)
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise TrainingError(
            f"{path} cannot be read as a PyTorch checkpoint ({reason}); {fix}"
        ) from None


def save_model(path: Path, model: InspectionModel, spec: ModelSpec, **extra: Any) -> Path:
    """Write weights + spec as one file, atomically, so a crash never leaves half a checkpoint.

    Everything but the weights is stored as JSON types, so `load_model` reads it safely.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "spec": plain(spec.to_dict()),
        "state_dict": model.state_dict(),
    }
    payload.update(plain(extra))
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model(path: Path | str) -> tuple[InspectionModel, ModelSpec]:
    """Load a model file written by `save_model`, in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"No model file at {path}; pass the path of a trained model.pt.")
    payload = read_torch_file(path, "retrain it with this visionline version or re-download it.")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(
            f"{path} is not a visionline model file; export it with visionline train."
        )
    spec = ModelSpec.from_dict(payload["spec"])
    model = build_model(spec)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, spec
