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
