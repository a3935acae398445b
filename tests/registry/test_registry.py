"""Register → promote → reject → promote → rollback, read back through MlflowClient."""

from __future__ import annotations

import json

import pytest
from eval_builders import log_run

from visionline.errors import NotFoundError
from visionline.registry import (
    CHALLENGER,
    CHAMPION,
    HISTORY_TAG,
    list_models,
    promote,
    register,
    rollback,
    show_model,
)
from visionline.registry._resolve import client


def _alias(mlflow_client, name, alias):
    found = mlflow_client.get_registered_model(name).aliases.get(alias)
    return None if found is None else str(found)


@pytest.mark.slow
def test_promote_reject_and_rollback_round_trip(eval_env):
    project, name = eval_env.project, "apples-roundtrip"
    mlflow_client = client(project.tracking_uri)
    good_run = log_run(project, eval_env.model, eval_env.dataset)

    first = register(project, good_run, name)
    assert first["version"] == "1"
    version = mlflow_client.get_model_version(name, "1")
    assert version.run_id == good_run
    assert version.tags["dataset_version"] == eval_env.dataset
    assert json.loads(version.tags["preprocessing"])["size"] == 32
    assert version.tags["metric.val_accuracy"] == "0.9"
    assert _alias(mlflow_client, name, CHALLENGER) == "1"

    decision = promote(project, name, bootstrap=0)
    assert decision.promoted and decision.champion is None
    assert "there is no champion yet" in decision.reasons
    assert _alias(mlflow_client, name, CHAMPION) == "1"
    assert CHALLENGER not in mlflow_client.get_registered_model(name).aliases
    assert mlflow_client.get_model_version(name, "1").tags["gate.passed"] == "true"

    register(project, log_run(project, eval_env.useless_model, eval_env.dataset), name)
    decision = promote(project, name, bootstrap=0)
    assert not decision.promoted
    assert any("fails gates" in reason for reason in decision.reasons)
    assert any("champion is significantly better" in reason for reason in decision.reasons)
    assert decision.mcnemar["only_b"] > decision.mcnemar["only_a"]
    assert _alias(mlflow_client, name, CHAMPION) == "1"
    assert mlflow_client.get_model_version(name, "2").tags["promotion"].startswith("rejected")

    register(project, log_run(project, eval_env.model, eval_env.dataset), name)
    decision = promote(project, name, bootstrap=0)
    assert decision.promoted and decision.champion == "1"
    assert decision.mcnemar == {"only_a": 0, "only_b": 0, "p_value": 1.0}
    assert _alias(mlflow_client, name, CHAMPION) == "3"
    assert json.loads(mlflow_client.get_registered_model(name).tags[HISTORY_TAG]) == ["1", "3"]

    assert rollback(project, name) == ("3", "1")
    assert _alias(mlflow_client, name, CHAMPION) == "1"
    assert json.loads(mlflow_client.get_registered_model(name).tags[HISTORY_TAG]) == ["1"]
    with pytest.raises(NotFoundError, match="no previous champion"):
        rollback(project, name)

    listed = {row["name"]: row for row in list_models(project)}[name]
    assert listed["versions"] == 3 and listed["aliases"] == {CHAMPION: "1"}
    shown = show_model(project, name)
    assert [row["version"] for row in shown] == ["1", "2", "3"]
    assert shown[0]["aliases"] == [CHAMPION]
    assert shown[0]["dataset_version"] == eval_env.dataset and shown[0]["run_id"] == good_run
    assert shown[1]["gates"]["passed"] == "false"


def test_register_errors_name_the_fix(eval_env):
    with pytest.raises(NotFoundError, match="No MLflow run"):
        register(eval_env.project, "0" * 32, "apples-missing")
    run_without_model = log_run(
        eval_env.project, eval_env.model, eval_env.dataset, with_model=False
    )
    with pytest.raises(NotFoundError, match="no logged model named 'model'"):
        register(eval_env.project, run_without_model, "apples-missing")
    with pytest.raises(
        NotFoundError, match="No registered model version apples-missing@challenger"
    ):
        promote(eval_env.project, "apples-missing")
    with pytest.raises(NotFoundError, match="No registered model 'nope'"):
        rollback(eval_env.project, "nope")


@pytest.mark.slow
def test_an_anomaly_challenger_is_compared_with_a_supervised_champion(eval_env):
    from visionline.anomaly import AnomalyConfig, fit_anomaly

    project, name = eval_env.project, "apples-two-routes"
    register(project, log_run(project, eval_env.model, eval_env.dataset), name)
    assert promote(project, name, bootstrap=0).promoted
    config = AnomalyConfig(image_size=64, max_bank=64, coreset_ratio=0.1, autocontrast=False)
    fitted = fit_anomaly(config, eval_env.dataset, project, progress=False)
    register(project, fitted.run_id, name, tags={"kind": "anomaly"})

    decision = promote(project, name, bootstrap=0)
    assert decision.champion == "1" and decision.challenger == "2"
    assert decision.mcnemar is not None  # judged on the same test images as the champion
    assert set(decision.metrics) == {"challenger", "champion"}
    assert 0.0 <= decision.metrics["challenger"]["accuracy"] <= 1.0
    verdict = client(project.tracking_uri).get_model_version(name, "2").tags["promotion"]
    assert verdict.startswith("promoted" if decision.promoted else "rejected")
