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


@pytest.mark.slow
def test_the_train_step_runs_the_leaderboard_and_passes_on_its_best_exportable_entry(tmp_path):
    from tests.leaderboard.conftest import make_dataset, make_project
    from visionline.pipeline._graph import Artifact, StepContext
    from visionline.pipeline._steps_model import train
    from visionline.train import load_model

    project = make_project(tmp_path / "project")
    dataset = make_dataset(project)
    settings = {
        "method": "leaderboard",
        "leaderboard": {
            "families": ["classical", "probe"],
            "backbones": ["efficientnet_lite0"],
            "bootstrap": 20,
        },
    }
    ctx = StepContext(
        project,
        settings,
        PipelineConfig.model_validate({"train": settings}),
        {"split": {"dataset": Artifact("dataset", dataset)}},
        tmp_path / "work",
    )
    model = train(ctx)["model"]
    assert model.meta["entry"] == "probe/efficientnet_lite0"
    assert model.meta["method"] == "leaderboard"
    assert (tmp_path / "work" / "leaderboard" / "leaderboard.json").is_file()
    _, spec = load_model(model.resolve(project))
    assert spec.class_names == ["good", "square", "scratch"]
