"""`TrainConfig`: every training setting as one validated pydantic model (YAML keys map 1:1)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visionline.errors import ConfigError, TrainingError
from visionline.preprocessing import ResizeMode
from visionline.train._backbones import IMAGENET, NO_WEIGHTS, Backbone, resolve_backbone
from visionline.train._features import Features, MaskTarget


class Schedule(str, Enum):
    """Learning-rate schedule over all optimiser steps."""

    COSINE = "cosine"
    ONE_CYCLE = "onecycle"


class Balance(str, Enum):
    """How rare defect classes get their share of the gradient."""

    NONE = "none"
    CLASS_WEIGHT = "class_weight"
    SAMPLER = "sampler"


class AugmentPolicy(str, Enum):
    """Which augmentations run (their strength is `augment`).

    `general`: random resized crop, flips, small rotation, colour jitter and blur. `texture`: flips,
    quarter turns and brightness/contrast only, for surfaces without a canonical orientation whose
    defects are small or thin (a crop can cut a defect at the border, blur can erase a crack).
    """

    GENERAL = "general"
    TEXTURE = "texture"


class Device(str, Enum):
    """Where training runs; `auto` picks CUDA when present."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


PRETRAINED_BACKBONE_LR_MULT = 0.1
"""Discriminative learning rate: a pretrained backbone moves ten times slower than the head."""

HEAD_EPOCHS = 100
HEAD_LR = 1e-2
HEAD_WEIGHT_DECAY = 1e-2
FINETUNE_BLOCKS = 2
"""The two-stage recipe's defaults, chosen on the magnetic tiles' val split (docs/quality.md)."""


class TrainConfig(BaseModel):
    """A training run's settings. Saved next to every output and logged as MLflow params."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False)

    backbone: Backbone = Backbone.EFFICIENTNET_LITE0
    pretrained: str = Field(IMAGENET, description="'imagenet', 'none' or a checkpoint path")
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, le=1)
    backbone_lr_mult: float | None = Field(
        None,
        gt=0,
        le=1,
        description=f"backbone lr = lr × this; default {PRETRAINED_BACKBONE_LR_MULT}, or 1 from scratch",
    )
    weight_decay: float = Field(1e-4, ge=0)
    head_epochs: int = Field(
        HEAD_EPOCHS,
        ge=0,
        le=100_000,
        description="stage 1: epochs of the head alone on cached frozen embeddings (computed once "
        "per image), best epoch on val kept; 0 skips the stage; skipped with pretrained 'none'",
    )
    head_lr: float = Field(HEAD_LR, gt=0, le=1, description="stage 1's AdamW learning rate")
    head_weight_decay: float = Field(
        HEAD_WEIGHT_DECAY, ge=0, description="stage 1's AdamW weight decay (keeps the head small)"
    )
    features: Features = Field(
        Features.POOLED,
        description="what the head classifies: 'pooled' (a linear head on the globally pooled "
        "embedding) or 'patches' (a per-cell MLP on the map before the last stage, pooled by "
        "log-sum-exp, so a small defect is not averaged away)",
    )
    mask_weight: float = Field(
        0.0,
        ge=0,
        description="stage 1 with features 'patches': weight of a per-cell loss that teaches each "
        "cell of the map where the defect is, from the masks the records carry (data add "
        "--masks); good images' cells are all negative, defect images without a mask add only "
        "the image loss; 0 turns it off",
    )
    mask_target: MaskTarget = Field(
        MaskTarget.SHARE,
        description="a masked cell's target: 'share' (the share of the cell the mask covers) or "
        "'any' (1 where the mask touches the cell at all)",
    )
    embedding_views: int = Field(
        1,
        ge=1,
        le=8,
        description="stage 1 trains on this many fixed views of each image: identity, then "
        "horizontal/vertical flips, half and quarter turns, transposes",
    )
    finetune_blocks: int | None = Field(
        FINETUNE_BLOCKS,
        ge=0,
        description="stage 2 fine-tunes only the backbone's top N blocks (and the layers above "
        "them); 0 keeps the stage-1 head only, None (YAML null) fine-tunes the whole backbone, "
        "as does every start from pretrained 'none'",
    )
    freeze_epochs: int = Field(
        0, ge=0, description="fine-tuning epochs with the whole backbone frozen (old warm-up)"
    )
    freeze_batchnorm: bool | None = Field(
        None,
        description="keep the backbone's BatchNorm statistics fixed while fine-tuning, so the "
        "features stay the ones the stage-1 head was fitted on; default: on for pretrained "
        "starts, off from scratch (random statistics must adapt)",
    )
    schedule: Schedule = Schedule.COSINE
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    balance: Balance = Balance.CLASS_WEIGHT
    augment: float = Field(0.5, ge=0, le=1, description="augmentation strength; 0 turns it off")
    augment_policy: AugmentPolicy = AugmentPolicy.GENERAL
    image_size: int | None = Field(None, ge=16, le=1024, description="default: the project goal")
    resize_mode: ResizeMode = ResizeMode.STRETCH
    dropout: float = Field(0.2, ge=0, lt=1)
    patience: int = Field(5, ge=1, description="epochs without a better val metric before stopping")
    seed: int = 0
    device: Device = Device.AUTO
    amp: bool = Field(True, description="bf16/fp16 autocast on CUDA; ignored on the CPU")
    deterministic: bool = True
    cache_pixels: bool = Field(True, description="keep decoded pixels as .npy under the cache dir")
    num_workers: int = Field(0, ge=0)
    teacher: str | None = Field(
        None,
        description="knowledge distillation: a model.pt path, runs:/<id> or models:/<name>@alias",
    )
    kd_alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's soft targets")
    kd_temperature: float = Field(4.0, gt=0, description="softmax temperature of the KD loss")

    @field_validator("backbone", mode="before")
    @classmethod
    def _known_backbone(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, Backbone):
            try:
                return resolve_backbone(value)
            except TrainingError as exc:
                raise ValueError(str(exc).rstrip("?")) from None
        return value

    @field_validator("pretrained")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value in (IMAGENET, NO_WEIGHTS) or value.endswith((".pt", ".pth", ".ckpt", ".bin")):
            return value
        raise ValueError("use 'imagenet', 'none' or the path of a .pt/.pth checkpoint")

    @model_validator(mode="after")
    def _masks_need_patches(self) -> TrainConfig:
        if self.mask_weight > 0 and self.features is not Features.PATCHES:
            raise ValueError(
                "mask_weight teaches the cells of a patch head; set features: patches or "
                "mask_weight: 0"
            )
        return self

    @property
    def backbone_lr(self) -> float:
        """Discriminative learning rates protect pretrained features; a backbone that starts from
        random weights has nothing to protect and learns at the head's rate unless told otherwise."""
        if self.backbone_lr_mult is not None:
            return self.lr * self.backbone_lr_mult
        if self.pretrained == NO_WEIGHTS:
            return self.lr
        return self.lr * PRETRAINED_BACKBONE_LR_MULT

    @property
    def batchnorm_frozen(self) -> bool:
        """`freeze_batchnorm`, or its default for the starting weights."""
        if self.freeze_batchnorm is not None:
            return self.freeze_batchnorm
        return self.pretrained != NO_WEIGHTS

    @property
    def trained_blocks(self) -> int | None:
        """How many top blocks stage 2 fine-tunes (None: all); a random backbone trains whole."""
        return None if self.pretrained == NO_WEIGHTS else self.finetune_blocks

    def flat(self) -> dict[str, str]:
        """Flattened string values: what MLflow stores as params."""
        return {
            k: (v.value if isinstance(v, Enum) else str(v)) for k, v in self.model_dump().items()
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_train_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """A `TrainConfig` from an optional YAML file with command-line `overrides` on top.

    Overrides that are None are ignored, so unset CLI options keep the file's value.
    """
    data: dict[str, Any] = {}
    source = "train config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"Training config {path} does not exist; pass an existing YAML file.")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{path} is not valid YAML ({exc.__class__.__name__}); fix its syntax."
            ) from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a YAML mapping of training settings.")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(data.get("backbone"), str):
        resolve_backbone(data["backbone"])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        from visionline.config import describe_validation_error

        raise ConfigError(describe_validation_error(exc, source)) from exc
