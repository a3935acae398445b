"""`AnomalyConfig`: every setting of an anomaly fit as one validated pydantic model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from visionline.errors import ConfigError, TrainingError
from visionline.preprocessing import ResizeMode


class AnomalyConfig(BaseModel):
    """A fit's settings; logged as MLflow params and saved beside the model. The defaults were
    chosen on validation images carved from the magnetic tiles' training tiles
    (benchmarks/anomaly_ablation.py), never on a test split."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backbone: str = "efficientnet_lite0"
    pretrained: str = Field("imagenet", description="'imagenet' or a visionline model.pt path")
    stages: list[int] = Field(default_factory=lambda: [3, 4], description="two backbone stages")
    neighbourhood: int = Field(1, ge=1, le=9, description="patch neighbourhood averaged (odd)")
    image_size: int = Field(224, ge=16, le=1024)
    resize_mode: ResizeMode = Field(
        ResizeMode.STRETCH,
        description="stretch (squash) ranked above letterbox on validation tiles; letterbox "
        "keeps the aspect ratio, which thin defects on very elongated parts may need",
    )
    autocontrast: bool = Field(True, description="stretch each image's intensity range first")
    standardise: bool = Field(
        True, description="z-score every feature channel on the fit's patches before the search"
    )
    coreset_ratio: float = Field(0.0025, gt=0, le=1, description="bank size / all training patches")
    min_bank: int = Field(
        256, ge=1, description="lower bound on the bank size, so few-shot fits keep a usable bank"
    )
    max_bank: int = Field(8192, ge=16, description="upper bound on the memory-bank size")
    projection_dim: int = Field(64, ge=0, description="random projection for coreset selection")
    max_candidates: int = Field(200_000, ge=16, description="patches kept for coreset selection")
    reweight_neighbours: int = Field(9, ge=1, description="PatchCore image-score reweighting")
    score_neighbours: int = Field(
        3, ge=1, le=64, description="patch score = mean distance to this many nearest bank patches"
    )
    image_neighbours: int = Field(
        3,
        ge=0,
        le=64,
        description="fuse an image-level kNN (this many nearest training images, on pooled patch "
        "features) into the image score; 0 = patch score only",
    )
    smoothing_sigma: float = Field(12.0, ge=0, description="Gaussian smoothing of the map, pixels")
    flip_average: bool = Field(
        True,
        description="score each image and its left-right mirror and average the two scores and "
        "maps: raised validation image and pixel AUROC on the tiles, at twice the backbone work",
    )
    subtract_background: bool = Field(
        True,
        description="score each image relative to its own median patch distance: a new physical "
        "tile sits farther from the bank everywhere, a defect stands out from its own tile; raised "
        "validation image AUROC on the tiles (the map keeps absolute distances)",
    )
    batch_size: int = Field(16, ge=1)
    max_memory_gb: float | None = Field(
        None, gt=0, description="memory the fit may use; default half of what is available"
    )
    max_good_images: int | None = Field(
        None, ge=1, description="use only this many good training images (few-shot)"
    )
    seed: int = 0

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from visionline.train._backbones import resolve_backbone

        try:
            name = resolve_backbone(value).value
        except TrainingError as exc:
            raise ValueError(str(exc).rstrip("?")) from None
        if not name.startswith("efficientnet_lite"):
            raise ValueError(
                f"{name} has no staged feature maps here; use an efficientnet_lite backbone"
            )
        return name

    @field_validator("image_size")
    @classmethod
    def _size_the_backbone_takes(cls, value: int) -> int:
        from visionline.anomaly._features import check_image_size

        try:
            check_image_size(value)
        except ConfigError as exc:
            raise ValueError(str(exc).rstrip(".")) from None
        return value

    @field_validator("stages")
    @classmethod
    def _two_stages(cls, value: list[int]) -> list[int]:
        if len(set(value)) != 2:
            raise ValueError("give two different stages, e.g. [2, 4]")
        return sorted(value)

    def flat(self) -> dict[str, str]:
        """Flattened string values: what MLflow stores as params."""
        return {
            k: (v.value if isinstance(v, Enum) else str(v)) for k, v in self.model_dump().items()
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_anomaly_config(path: Path | None = None, **overrides: Any) -> AnomalyConfig:
    """An `AnomalyConfig` from an optional YAML file with non-None `overrides` on top."""
    data: dict[str, Any] = {}
    source = "anomaly config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"Anomaly config {path} does not exist; pass an existing YAML file.")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{path} is not valid YAML ({type(exc).__name__}); fix its syntax."
            ) from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a YAML mapping of anomaly settings.")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AnomalyConfig.model_validate(data)
    except ValidationError as exc:
        from visionline.config import describe_validation_error

        raise ConfigError(describe_validation_error(exc, source)) from exc
