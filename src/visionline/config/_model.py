"""The project file `visionline.yaml` as pydantic models: YAML keys map 1:1 onto fields."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from visionline.config._pipeline import PipelineConfig

GOOD_CLASS = "good"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClassSpec(_Strict):
    """One class: `good`, or a defect class with optional subtypes."""

    name: str
    subtypes: list[str] = Field(default_factory=list)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lower-case letters, digits and '_', starting with a letter")
        return value

    @field_validator("subtypes")
    @classmethod
    def _valid_subtypes(cls, value: list[str]) -> list[str]:
        for subtype in value:
            if not _NAME.match(subtype):
                raise ValueError(
                    f"subtype {subtype!r}: use lower-case letters, digits and '_', "
                    "starting with a letter"
                )
        if len(set(value)) != len(value):
            raise ValueError("subtypes must be unique")
        return value


class Goals(_Strict):
    """What the customer needs; these become quality gates."""

    max_false_reject_rate: float = Field(0.02, gt=0, lt=1)
    threshold_false_reject_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="false-reject rate the threshold is set for on validation good images; "
        "below the maximum it leaves headroom for unseen images (default: the maximum)",
    )
    min_defect_recall: float = Field(0.90, gt=0, le=1)
    min_subtype_recall: dict[str, float] = Field(default_factory=dict)
    edge_p95_latency_ms: float = Field(20.0, gt=0)
    image_size: int = Field(128, ge=16, le=1024)

    @model_validator(mode="after")
    def _headroom_within_budget(self) -> Goals:
        if (self.threshold_false_reject_rate or 0) > self.max_false_reject_rate:
            raise ValueError(
                "threshold_false_reject_rate must not exceed max_false_reject_rate"
            )
        return self

    @property
    def operating_false_reject_rate(self) -> float:
        """The false-reject rate every threshold is set for (training, evaluation, export)."""
        return self.threshold_false_reject_rate or self.max_false_reject_rate


class Storage(_Strict):
    """Where artifacts live. Relative paths resolve against the project directory."""

    blob_store: str = ".visionline/store"
    datasets: str = ".visionline/datasets"
    tracking_uri: str = "sqlite:///.visionline/mlflow.db"
    monitor_db: str = "sqlite:///.visionline/monitor.db"
    cache: str = ".visionline/cache"
    reports: str = "reports"


class ProjectConfig(_Strict):
    """The whole `visionline.yaml`."""

    name: str = "apple-inspection"
    classes: list[ClassSpec] = Field(
        default_factory=lambda: [
            ClassSpec(name=GOOD_CLASS, description="sound apple, ready to pack"),
            ClassSpec(
                name="defect",
                subtypes=["bruise", "rot", "scab", "cut", "insect_hole"],
                description="apple that must not reach the customer",
            ),
        ]
    )
    goals: Goals = Field(default_factory=Goals)
    storage: Storage = Field(default_factory=Storage)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @model_validator(mode="after")
    def _one_good_class(self) -> ProjectConfig:
        names = [c.name for c in self.classes]
        if GOOD_CLASS not in names:
            raise ValueError(f"classes must include a class named '{GOOD_CLASS}'")
        if len(names) < 2:
            raise ValueError("classes need at least one defect class besides 'good'")
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        for spec in self.classes:
            if spec.name == GOOD_CLASS and spec.subtypes:
                raise ValueError("the 'good' class cannot have subtypes")
        return self

    def model_classes(self) -> list[str]:
        """Output classes of a model: `good` first, then each defect subtype (or class)."""
        names = [GOOD_CLASS]
        for spec in self.classes:
            if spec.name != GOOD_CLASS:
                names.extend(spec.subtypes or [spec.name])
        return names

    def defect_labels(self) -> dict[str, list[str]]:
        """Defect class → its subtypes, as dataset manifests use them (label, subtype)."""
        return {c.name: list(c.subtypes) for c in self.classes if c.name != GOOD_CLASS}
