"""Project configuration: `visionline.yaml` as validated pydantic models."""

from visionline.config._load import (
    CONFIG_FILE,
    Project,
    describe_validation_error,
    dump_config,
    init_project,
    parse_config,
)
from visionline.config._model import GOOD_CLASS, ClassSpec, Goals, ProjectConfig, Storage
from visionline.config._pipeline import Executor, PipelineConfig

__all__ = [
    "CONFIG_FILE",
    "GOOD_CLASS",
    "ClassSpec",
    "Executor",
    "Goals",
    "PipelineConfig",
    "Project",
    "ProjectConfig",
    "Storage",
    "describe_validation_error",
    "dump_config",
    "init_project",
    "parse_config",
]
