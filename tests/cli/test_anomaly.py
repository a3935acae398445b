"""`visionline anomaly fit|eval` as a user runs them: one-sentence errors, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, run_visionline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.anomaly.test_run import make_dataset, make_project


def test_fitting_on_a_train_split_of_defects_only_is_one_sentence(tmp_path):
    project = make_project(tmp_path)
    dataset = make_dataset(project, {"train": (0, 2), "val": (2, 1), "test": (1, 1)})
    result = run_visionline(
        "anomaly", "fit", "--data", dataset[:12], "--image-size", "128", cwd=tmp_path
    )
    assert_one_line_error(result, "holds only defect images", "add good ones")


def test_an_image_size_the_backbone_cannot_take_is_one_sentence(tmp_path):
    project = make_project(tmp_path)
    dataset = make_dataset(project, {"train": (2, 0), "val": (2, 1), "test": (1, 1)})
    result = run_visionline(
        "anomaly", "fit", "--data", dataset[:12], "--image-size", "100", cwd=tmp_path
    )
    assert_one_line_error(result, "multiple of 32", "--image-size 96")


def test_evaluating_a_missing_model_is_one_sentence(tmp_path):
    make_project(tmp_path)
    result = run_visionline("anomaly", "eval", "nope.pt", "--data", "abc", cwd=tmp_path)
    assert_one_line_error(result, "No model at 'nope.pt'")


@pytest.mark.slow
def test_export_writes_a_parity_checked_onnx_model(tmp_path):
    from tests.anomaly.conftest import tile
    from visionline.anomaly import AnomalyConfig, fit_detector, save_anomaly_model

    make_project(tmp_path)
    config = AnomalyConfig(image_size=128, max_bank=64, coreset_ratio=0.1)
    goods = [tile(seed)[0] for seed in range(3)]
    model, spec, _ = fit_detector(goods, len(goods), config)
    spec.threshold = 2.5
    save_anomaly_model(tmp_path / "model.pt", model, spec)
    result = run_visionline("anomaly", "export", "model.pt", "--out", "a.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "threshold 2.5000" in result.stdout and "parity on 4 images" in result.stdout
    assert (tmp_path / "a.onnx").stat().st_size > 100_000


def test_train_method_anomaly_refuses_supervised_only_options(tmp_path):
    project = make_project(tmp_path)
    dataset = make_dataset(project, {"train": (2, 0), "val": (2, 1), "test": (1, 1)})
    result = run_visionline(
        "train", "--method", "anomaly", "--data", dataset[:12], "--epochs", "3", cwd=tmp_path
    )
    assert_one_line_error(result, "--epochs only apply to supervised training")


@pytest.mark.slow
def test_train_method_anomaly_is_tracked_and_eval_dispatches_on_the_model_kind(tmp_path):
    import mlflow

    project = make_project(tmp_path)
    dataset = make_dataset(project)
    (tmp_path / "anomaly.yaml").write_text("max_bank: 64\ncoreset_ratio: 0.1\n")
    result = run_visionline(
        "train", "--method", "anomaly", "--data", dataset[:12], "--config", "anomaly.yaml",
        "--image-size", "64", cwd=tmp_path, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split("MLflow run")[1].split()[0]
    run = mlflow.MlflowClient(project.tracking_uri).get_run(run_id)
    assert run.data.tags["visionline.model_kind"] == "anomaly"
    assert run.data.params["image_size"] == "64" and run.data.params["max_bank"] == "64"

    evaluated = run_visionline(
        "eval", f"runs:/{run_id}", "--data", f"{dataset[:12]}:test", "--bootstrap", "0",
        "--out", "report", cwd=tmp_path, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert "pixel AUROC" in evaluated.stdout and (tmp_path / "report" / "report.html").is_file()
