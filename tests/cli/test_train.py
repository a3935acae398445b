"""`visionline train` as a user runs it: a real subprocess, its summary, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from cli_support import assert_one_line_error, run_visionline
from train_builders import make_project


def run(*args: str, cwd: Path):
    return run_visionline("train", *args, cwd=cwd, OMP_NUM_THREADS="1")


@pytest.fixture
def project(tmp_path: Path):
    return make_project(tmp_path / "proj")


@pytest.mark.slow
def test_train_prints_run_best_epoch_and_model_path(project, tmp_path: Path) -> None:
    proj, version = project
    (proj.root / "train.yaml").write_text("freeze_epochs: 0\naugment: 0.2\nbatch_size: 16\n")
    result = run(
        "--data",
        version.short_id,
        "--config",
        "train.yaml",
        "--backbone",
        "mobilenetv3_small_100",
        "--pretrained",
        "none",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        cwd=proj.root,
    )
    assert result.returncode == 0, result.stderr
    assert "MLflow run" in result.stdout
    assert "best epoch 1: val defect recall" in result.stdout
    assert f"model: {tmp_path / 'run' / 'model.pt'}" in result.stdout.replace("\n", "")
    resolved = (tmp_path / "run" / "train_config.yaml").read_text()
    assert (
        "batch_size: 8" in resolved and "augment: 0.2" in resolved and "image_size: 32" in resolved
    )


def test_unknown_backbone_suggests_names(project) -> None:
    proj, version = project
    result = run("--data", version.short_id, "--backbone", "resnet5", cwd=proj.root)
    assert_one_line_error(result, "Unknown backbone 'resnet5'", "did you mean resnet50")


def test_unknown_config_key_is_named(project) -> None:
    proj, version = project
    (proj.root / "train.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    result = run("--data", version.short_id, "--config", "train.yaml", cwd=proj.root)
    assert_one_line_error(result, "unknown key 'learning_rate'")
    assert result.returncode == 2


def test_unknown_dataset_version_is_named(project) -> None:
    proj, _ = project
    result = run("--data", "ffffffff", "--pretrained", "none", cwd=proj.root)
    assert_one_line_error(result, "ffffffff")


def test_resume_refuses_new_settings(project) -> None:
    proj, version = project
    result = run("--data", version.short_id, "--resume", "--epochs", "3", cwd=proj.root)
    assert_one_line_error(result, "--resume continues with the run's saved settings", "--epochs")
    result = run("--data", version.short_id, "--resume", cwd=proj.root)
    assert_one_line_error(result, "No interrupted run", "to resume")
