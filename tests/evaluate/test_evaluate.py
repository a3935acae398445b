"""`evaluate_model` end to end on a tiny dataset version: metrics, report, calibration, MLflow."""

from __future__ import annotations

import json
import math

import pytest
from eval_builders import log_run, make_dataset

from visionline.errors import DataError, NotFoundError
from visionline.evaluate import evaluate_model
from visionline.registry import resolve_model
from visionline.registry._resolve import client
from visionline.train import load_model


def test_evaluate_model_file_writes_metrics_and_report(eval_env, tmp_path):
    result = evaluate_model(
        eval_env.project, str(eval_env.model), eval_env.dataset, output_dir=tmp_path, bootstrap=100
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_good"] == 40 and metrics["n_defect"] == 20
    assert metrics["class_names"] == ["good", "bruise", "rot"]
    assert metrics["defect_recall"] >= 0.5
    assert metrics["gates"]["passed"] is True
    assert metrics["operating_point"]["n_good"] == 40
    assert "add good validation images" in metrics["warnings"][0]
    assert metrics["threshold_split"] == "val" and "split with a calib" in metrics["warnings"][1]
    assert metrics["dataset_version"] == eval_env.dataset and metrics["split"] == "test"
    assert metrics["rates"]["n_good"] == 40
    assert sum(map(sum, metrics["confusion_matrix"])) == 60
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert f"{metrics['false_reject_rate']:.2%}" in html
    assert result.correct().shape == (60,)


def test_useless_model_fails_the_recall_gate(eval_env, tmp_path):
    result = evaluate_model(
        eval_env.project,
        str(eval_env.useless_model),
        eval_env.dataset,
        output_dir=tmp_path,
        bootstrap=0,
    )
    assert result.metrics["defect_recall"] == 0.0
    assert not result.gates.passed
    assert "defect_recall 0.00% is below the minimum 50.00%" in result.gates.summary()
    assert math.isnan(result.metrics["intervals"]["accuracy"][0])


def test_calibration_fits_a_temperature_and_saves_it_with_the_model(eval_env, tmp_path):
    result = evaluate_model(
        eval_env.project,
        str(eval_env.model),
        eval_env.dataset,
        calibrate=True,
        output_dir=tmp_path,
        bootstrap=0,
    )
    assert result.temperature != 1.0
    _, spec = load_model(result.calibrated_model_path)
    assert spec.temperature == pytest.approx(result.temperature)
    assert json.loads(result.metrics_path.read_text())["temperature"] == pytest.approx(
        result.temperature
    )


def test_dataset_without_the_split_is_a_one_line_error(eval_env, tmp_path):
    no_val = make_dataset(eval_env.project, seed=5, splits=("train", "test"))
    with pytest.raises(DataError, match="has no images in split 'val'.*it has: test, train"):
        evaluate_model(eval_env.project, str(eval_env.model), no_val, output_dir=tmp_path)


@pytest.mark.parametrize(
    "uri", ["missing/model.pt", "runs:/0123456789abcdef", "models:/nope@champion"]
)
def test_unknown_model_uri_is_not_found(eval_env, uri):
    with pytest.raises(NotFoundError):
        resolve_model(uri, eval_env.project.tracking_uri)


def test_run_model_is_evaluated_and_results_logged_to_the_run(eval_env, tmp_path):
    run_id = log_run(eval_env.project, eval_env.model, eval_env.dataset, with_model=False)
    result = evaluate_model(
        eval_env.project, f"runs:/{run_id}", eval_env.dataset, output_dir=tmp_path, bootstrap=0
    )
    assert result.metrics["run_id"] == run_id
    mlflow_client = client(eval_env.project.tracking_uri)
    run = mlflow_client.get_run(run_id)
    assert run.data.tags["gate.passed"] == "true"
    assert run.data.metrics["test_defect_recall"] == pytest.approx(result.metrics["defect_recall"])
    artifacts = {a.path for a in mlflow_client.list_artifacts(run_id, "eval")}
    assert {"eval/report.html", "eval/metrics.json"} <= artifacts


def test_threshold_headroom_sets_the_threshold_below_the_false_reject_budget(eval_env, tmp_path):
    from visionline.config import Project

    config = eval_env.project.config
    strict = config.model_copy(
        update={"goals": config.goals.model_copy(update={"threshold_false_reject_rate": 0.025})}
    )
    common = {"dataset": eval_env.dataset, "bootstrap": 0}
    budget = evaluate_model(eval_env.project, str(eval_env.model), output_dir=tmp_path / "a", **common)
    headroom = evaluate_model(
        Project(eval_env.project.root, strict), str(eval_env.model), output_dir=tmp_path / "b", **common
    )
    point = headroom.metrics["operating_point"]
    assert point["target_false_reject_rate"] == 0.025 and point["false_rejects"] <= 1
    assert budget.metrics["operating_point"]["target_false_reject_rate"] == 0.1
    assert headroom.metrics["threshold"] >= budget.metrics["threshold"]


def test_the_calib_split_sets_the_threshold_when_the_version_has_one(eval_env, tmp_path):
    with_calib = make_dataset(eval_env.project, seed=0, splits=("train", "val", "calib", "test"))
    result = evaluate_model(
        eval_env.project, str(eval_env.model), with_calib, output_dir=tmp_path, bootstrap=0
    )
    assert result.metrics["threshold_split"] == "calib"
    assert result.operating_point.n_good == 50  # the calib split's good images, not val's 40
    assert not any("calib fraction" in w for w in result.warnings)
    assert "calib split" in (tmp_path / "report.html").read_text()
