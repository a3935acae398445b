"""Training: backbones, transfer learning, the training loop, tracking, tuning."""

from visionline.train._backbones import (
    Backbone,
    create_backbone,
    imagenet_classifier,
    load_pretrained,
    resolve_backbone,
)
from visionline.train._config import (
    AugmentPolicy,
    Balance,
    Device,
    Schedule,
    TrainConfig,
    load_train_config,
)
from visionline.train._distill import DistillationLoss, distillation_hook, kd_loss, load_teacher
from visionline.train._features import Features
from visionline.train._loop import EpochCallback, TeacherHook, TrainResult, evaluate_split, fit
from visionline.train._model import (
    InspectionModel,
    ModelSpec,
    build_model,
    load_model,
    save_model,
)
from visionline.train._tune import (
    FloatRange,
    IntRange,
    Pruner,
    SearchSpace,
    TuneConfig,
    TuneResult,
    load_tune_config,
    tune,
)

__all__ = [
    "AugmentPolicy",
    "Backbone",
    "Balance",
    "Device",
    "DistillationLoss",
    "EpochCallback",
    "Features",
    "FloatRange",
    "InspectionModel",
    "IntRange",
    "ModelSpec",
    "Pruner",
    "Schedule",
    "SearchSpace",
    "TeacherHook",
    "TrainConfig",
    "TrainResult",
    "TuneConfig",
    "TuneResult",
    "build_model",
    "create_backbone",
    "distillation_hook",
    "evaluate_split",
    "fit",
    "imagenet_classifier",
    "kd_loss",
    "load_model",
    "load_pretrained",
    "load_teacher",
    "load_train_config",
    "load_tune_config",
    "resolve_backbone",
    "save_model",
    "tune",
]
