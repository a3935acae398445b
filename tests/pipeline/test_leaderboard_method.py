"""`pipeline.train.method`: validated in visionline.yaml; its keys never reach TrainConfig."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from visionline.config import PipelineConfig
from visionline.pipeline._steps_model import train_config


def test_leaderboard_is_a_train_method_and_unknown_methods_are_refused():
    config = PipelineConfig.model_validate(
        {"train": {"method": "leaderboard", "leaderboard": {"budget_min": 5}}}
    )
    assert config.train["method"] == "leaderboard"
    with pytest.raises(ValidationError, match="pipeline.train.method must be one of"):
        PipelineConfig.model_validate({"train": {"method": "automl"}})


def test_method_keys_are_not_training_settings():
    settings = {"method": "leaderboard", "leaderboard": {"budget_min": 5}, "epochs": 3}
    assert train_config(settings).epochs == 3
