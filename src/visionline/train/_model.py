"""The inspection model: a timm backbone, a linear head, and the spec that travels with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionline.config import GOOD_CLASS
from visionline.errors import NotFoundError, TrainingError
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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        values = dict(data)
        values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
        return cls(**values)


class InspectionModel(nn.Module):
    """Backbone → pooled embedding → linear head. Takes and returns batches."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embedding_dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (N, D): what drift monitoring compares."""
        return self.backbone(images)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(embedding))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C)."""
        return self.classify(self.embed(images))


def build_model(spec: ModelSpec) -> InspectionModel:
    """A fresh model for `spec`, without pretrained weights (see `load_pretrained`)."""
    from visionline.train._backbones import create_backbone

    backbone = create_backbone(spec.backbone, pretrained=False, num_classes=0)
    # MobileNetV3's pooled output passes a conv head, so it is wider than `num_features`.
    width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    return InspectionModel(backbone, width, spec.num_classes, spec.dropout)


def save_model(path: Path, model: InspectionModel, spec: ModelSpec, **extra: Any) -> Path:
    """Write weights + spec as one file, atomically, so a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec.to_dict(),
        "state_dict": model.state_dict(),
    }
    payload.update(extra)
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model(path: Path | str) -> tuple[InspectionModel, ModelSpec]:
    """Load a model file written by `save_model`, in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"No model file at {path}; pass the path of a trained model.pt.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise TrainingError(
            f"{path} is not a readable model file ({exc}); retrain or re-download it."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(
            f"{path} is not a visionline model file; export it with visionline train."
        )
    spec = ModelSpec.from_dict(payload["spec"])
    model = build_model(spec)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, spec
