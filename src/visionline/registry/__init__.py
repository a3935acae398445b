"""Model registry: MLflow 3.x registered models with aliases `challenger` and `champion`.

Lineage runs dataset version → MLflow run → model version; promotion is a paired McNemar test on
the same test images plus the project's quality gates; rollback restores the previous champion.
"""

from visionline.registry._registry import (
    CHALLENGER,
    CHAMPION,
    HISTORY_TAG,
    PromotionDecision,
    compare,
    list_models,
    promote,
    register,
    rollback,
    run_dataset_version,
    show_model,
    version_for_run,
)
from visionline.registry._resolve import CHECKPOINT_ARTIFACT, ModelRef, resolve_model

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CHECKPOINT_ARTIFACT",
    "HISTORY_TAG",
    "ModelRef",
    "PromotionDecision",
    "compare",
    "list_models",
    "promote",
    "register",
    "resolve_model",
    "rollback",
    "run_dataset_version",
    "show_model",
    "version_for_run",
]
