"""`visionline tune` as users run it: concurrent workers on one study, the summary, one-line
errors; and `visionline train --teacher` refusing bad teachers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from cli_support import VISIONLINE, assert_one_line_error
from train_builders import make_project

TUNE_YAML = {
    "space": {
        "backbone": ["mobilenetv3_small_100"],
        "freeze_epochs": {"low": 0, "high": 0},
        "augment": {"low": 0.0, "high": 0.0},
    },
    "train": {"pretrained": "none", "epochs": 1, "batch_size": 8, "device": "cpu"},
    "pruner": "none",
}


def command(*args: str, cwd: Path) -> list[str]:
    return [str(VISIONLINE), *args]


def env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args, cwd=cwd),
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env(),
    )


@pytest.fixture
def project_dir(tmp_path: Path):
    _, version = make_project(tmp_path / "proj")
    (tmp_path / "proj" / "tune.yaml").write_text(yaml.safe_dump(TUNE_YAML))
    return tmp_path / "proj", version


@pytest.mark.slow
def test_two_worker_processes_share_one_journal_study(project_dir):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    root, version = project_dir
    args = (
        "tune",
        "--data",
        version.short_id,
        "--trials",
        "4",
        "--study",
        "shared",
        "--config",
        "tune.yaml",
    )
    workers = [
        subprocess.Popen(
            command(*args, cwd=root),
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert "Traceback" not in out + err

    journal = root / ".visionline" / "cache" / "optuna" / "shared.log"
    study = optuna.load_study(
        study_name="shared", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == [0, 1, 2, 3]  # exactly N in total, no duplicate numbers
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    ran = [
        {int(line.split()[1].rstrip(":")) for line in out.splitlines() if line.startswith("trial ")}
        for out, _ in outputs
    ]
    assert ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == {0, 1, 2, 3}
    best = root / "reports" / "tune" / "shared" / "best.yaml"
    assert "best trial" in outputs[0][0] + outputs[1][0]
    assert yaml.safe_load(best.read_text())["backbone"] == "mobilenetv3_small_100"


def test_unreachable_storage_is_one_line(project_dir):
    root, version = project_dir
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(
        "tune",
        "--data",
        version.short_id,
        "--trials",
        "1",
        "--storage",
        f"postgresql://u:pw@127.0.0.1:{port}/db",
        cwd=root,
    )
    assert_one_line_error(result, "not reachable", f"127.0.0.1:{port}")
    assert ":pw@" not in result.stderr


def test_bad_tune_yaml_and_bad_trials_are_one_line(project_dir):
    root, version = project_dir
    (root / "bad.yaml").write_text(yaml.safe_dump({"space": {"lr": {"low": 1, "high": 0.1}}}))
    assert_one_line_error(
        run("tune", "--data", version.short_id, "--config", "bad.yaml", cwd=root),
        "bad.yaml",
        "low must not exceed high",
    )
    assert_one_line_error(
        run("tune", "--data", version.short_id, "--trials", "0", cwd=root), "--trials"
    )
    assert not (root / ".visionline" / "cache" / "optuna").exists()


def test_train_with_a_missing_teacher_is_one_line(project_dir):
    root, version = project_dir
    result = run(
        "train",
        "--data",
        version.short_id,
        "--teacher",
        "gone.pt",
        "--backbone",
        "mobilenetv3_small_100",
        "--pretrained",
        "none",
        "--epochs",
        "1",
        "--device",
        "cpu",
        cwd=root,
    )
    assert_one_line_error(result, "gone.pt", "runs:/<run_id>")
    assert not (root / ".visionline" / "runs").exists() or not any(
        (root / ".visionline" / "runs").glob("*/model.pt")
    )


def test_train_rejects_an_out_of_range_kd_alpha(project_dir):
    root, version = project_dir
    result = run(
        "train", "--data", version.short_id, "--teacher", "t.pt", "--kd-alpha", "1.5", cwd=root
    )
    assert_one_line_error(result, "kd_alpha")
