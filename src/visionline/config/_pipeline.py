"""The `pipeline:` section of `visionline.yaml`: which lifecycle steps run, and with what.

Training and tuning settings stay plain mappings here and are validated by `TrainConfig` and
`TuneConfig` when the pipeline loads, so this module never imports torch.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Executor(str, Enum):
    """Where pipeline steps and batch scoring run."""

    LOCAL = "local"
    RAY = "ray"


class TrainMethod(str, Enum):
    """What `pipeline.train.method` fits: one `visionline train` run, the leaderboard of
    classical, probe, fine-tuned, anomaly and stacked entries (settings under
    `pipeline.train.leaderboard`), whose best exportable entry goes on down the pipeline, or an
    anomaly detector fitted on good images only (AnomalyConfig under `pipeline.train.anomaly`),
    exported as an anomaly bundle; `both` fits both, registers both and lets the registry's
    champion comparison judge them (the supervised model goes on down the pipeline)."""

    SUPERVISED = "supervised"
    LEADERBOARD = "leaderboard"
    ANOMALY = "anomaly"
    BOTH = "both"


TRAIN_METHOD_KEYS = ("method", "leaderboard", "anomaly")
"""Keys of `pipeline.train` that are not TrainConfig settings."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestStep(_Strict):
    source: str | None = Field(
        None, description="image folder, CSV or Label Studio export; relative to the project"
    )
    name: str | None = None


class ValidateStep(_Strict):
    min_images_per_class: int = Field(5, ge=1)
    verify_blobs: bool = Field(True, description="re-hash every blob of the version")


class SplitStep(_Strict):
    val: float = Field(0.15, gt=0, lt=1, description="early stopping and tuning")
    calib: float = Field(
        0.15, ge=0, lt=1,
        description="sets the decision threshold (0: val sets it, and the report says so)",
    )
    test: float = Field(0.15, gt=0, lt=1, description="measured once, at the end")
    seed: int = 0
    group_by: str | None = Field(
        None,
        description="group spec keeping one object's images in one split, e.g. "
        "'sequence:num_(\\d+):400' or 'regex:PATTERN' (default: near-duplicates)",
    )


class TuneStep(_Strict):
    enabled: bool = False
    trials: int = Field(8, ge=1)
    config: str | None = Field(None, description="tune.yaml with the search space")
    storage: str | None = Field(None, description="Optuna storage URL shared by many workers")


class EvaluateStep(_Strict):
    split: str = "test"
    bootstrap: int = Field(1000, ge=0)


class GateStep(_Strict):
    enforce: bool = Field(True, description="stop the pipeline when a quality gate fails")


class ExportStep(_Strict):
    parity_atol: float = Field(1e-4, gt=0)


class QuantiseStep(_Strict):
    enabled: bool = True
    calibration: str = Field("auto", description="auto (measured), minmax, entropy or percentile")
    calibration_images: int = Field(200, ge=1)
    tolerance: float = Field(0.01, ge=0, le=1)


class BenchmarkStep(_Strict):
    enabled: bool = True
    threads: int = Field(2, ge=1)
    runs: int = Field(50, ge=5)
    enforce: bool = Field(False, description="fail when p95 exceeds goals.edge_p95_latency_ms")


class BundleStep(_Strict):
    signing_key: str | None = Field(None, description="Ed25519 private key; relative to the project")


class RegisterStep(_Strict):
    promote: bool = Field(True, description="compare with the champion and promote if not worse")


class DeployStep(_Strict):
    repository: str = Field("model-repository", description="server model repository folder")
    server: str | None = Field(None, description="URL of a running server to hot-swap, e.g. http://127.0.0.1:8000")
    only_champion: bool = Field(True, description="deploy only a model the registry promoted")
    trust_store: str | None = Field(
        None, description="folder of trusted .pub keys (or one .pub file); relative to the project"
    )
    require_signature: bool = Field(
        False, description="deploy only a bundle signed by a key in trust_store"
    )


class RetrainSettings(_Strict):
    """Continuous training: when `visionline retrain --if-triggered` builds a challenger."""

    on_drift: bool = Field(True, description="a drift alarm since the last retraining")
    min_new_labels: int = Field(50, ge=1, description="labelled production images since then")
    max_recall_drop: float = Field(
        0.05, gt=0, le=1, description="realised recall below the validated recall by this much"
    )
    min_labelled_defects: int = Field(20, ge=1, description="defect verdicts needed to judge recall")
    val_share: float = Field(0.2, ge=0, lt=1, description="new images that go to val (rest: train)")
    holdout_share: float = Field(
        0.3, ge=0, lt=1,
        description="new labelled images kept out of training to judge the challenger on the "
        "conditions that triggered retraining",
    )
    min_holdout: int = Field(
        20, ge=1, description="held-out production images needed for that judgement"
    )
    label_budget: int | None = Field(
        None, ge=1,
        description="when a trigger fires with too few new labels: how many kept production "
        "images active learning (mixed) asks the operator to label (default: min_new_labels)",
    )
    epochs: int = Field(3, ge=1, description="fine-tuning epochs, starting from the champion")
    lr: float = Field(5e-4, gt=0, le=1)


class PipelineConfig(BaseModel):
    """`pipeline:` in `visionline.yaml`."""

    executor: Executor = Executor.LOCAL
    ray_address: str | None = Field(None, description="Ray cluster address; local Ray when unset")
    ingest: IngestStep = Field(default_factory=IngestStep)
    validate_data: ValidateStep = Field(default_factory=ValidateStep, alias="validate")
    split: SplitStep = Field(default_factory=SplitStep)
    tune: TuneStep = Field(default_factory=TuneStep)
    train: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig settings, plus method and leaderboard"
    )
    evaluate: EvaluateStep = Field(default_factory=EvaluateStep)
    gate: GateStep = Field(default_factory=GateStep)
    export: ExportStep = Field(default_factory=ExportStep)
    quantise: QuantiseStep = Field(default_factory=QuantiseStep)
    benchmark: BenchmarkStep = Field(default_factory=BenchmarkStep)
    bundle: BundleStep = Field(default_factory=BundleStep)
    register_model: RegisterStep = Field(default_factory=RegisterStep, alias="register")
    deploy: DeployStep = Field(default_factory=DeployStep)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @field_validator("train")
    @classmethod
    def _known_train_method(cls, value: dict[str, Any]) -> dict[str, Any]:
        method = value.get("method", TrainMethod.SUPERVISED.value)
        known = [m.value for m in TrainMethod]
        if method not in known:
            raise ValueError(f"pipeline.train.method must be one of {', '.join(known)}, not {method!r}")
        return value

    def step_settings(self, step: str) -> dict[str, Any]:
        """One step's settings as a plain mapping (what its cache key hashes)."""
        field = {"validate": "validate_data", "register": "register_model"}.get(step, step)
        value = getattr(self, field)
        return dict(value) if isinstance(value, dict) else value.model_dump(mode="json")
