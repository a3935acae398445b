"""`LeaderboardConfig`: which entries run, on what budget, with what settings (YAML keys 1:1)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from visionline.errors import ConfigError, TrainingError

OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


class Family(str, Enum):
    """Kinds of leaderboard entry, in the order they run (cheapest first)."""

    CLASSICAL = "classical"
    PROBE = "probe"
    ANOMALY = "anomaly"
    FINETUNE = "finetune"
    STACK = "stack"


class LeaderboardConfig(BaseModel):
    """A leaderboard's settings; logged as MLflow params of every entry."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    budget_min: float = Field(20.0, gt=0, description="wall-clock minutes for all entries")
    families: list[Family] = Field(default_factory=lambda: list(Family))
    backbones: list[str] = Field(default_factory=lambda: list(OFFLINE_BACKBONES))
    image_size: int | None = Field(
        None, ge=16, le=1024, description="probe input size; default: the project goal"
    )
    finetune: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig settings over fit's defaults (e.g. epochs)"
    )
    anomaly: dict[str, Any] = Field(default_factory=dict, description="AnomalyConfig settings")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of the test intervals")
    latency_threads: int = Field(2, ge=1, description="threads for the batch-1 latency")
    torch_threads: int | None = Field(
        None, ge=1, description="threads for fitting and scoring; default: torch's own"
    )
    seed: int = 0
    register_best: bool = Field(True, description="register the best entry that passes the gates")
    model_name: str | None = Field(None, description="registered model name; default: project name")

    @field_validator("backbones")
    @classmethod
    def _known_backbones(cls, value: list[str]) -> list[str]:
        from visionline.train import resolve_backbone

        names = []
        for name in value:
            try:
                names.append(resolve_backbone(name).value)
            except TrainingError as exc:
                raise ValueError(str(exc).rstrip("?")) from None
        return names

    def flat(self) -> dict[str, str]:
        """Flattened string values: what MLflow stores as params."""
        return {f"leaderboard.{k}": str(v) for k, v in self.model_dump(mode="json").items()}


def load_leaderboard_config(
    data: dict[str, Any] | None = None, **overrides: Any
) -> LeaderboardConfig:
    """A config from a mapping (e.g. `pipeline.train.leaderboard`) with non-None overrides."""
    values = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return LeaderboardConfig.model_validate(values)
    except ValidationError as exc:
        from visionline.config import describe_validation_error

        raise ConfigError(describe_validation_error(exc, "leaderboard settings")) from exc
