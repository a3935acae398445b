"""`visionline pipeline run|show|status` and `visionline retrain` as users run them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from cli_support import assert_one_line_error, run_visionline
from pipeline_support import make_project


def test_a_pipeline_without_data_fails_in_one_line_and_status_shows_where(tmp_path):
    project = make_project(tmp_path / "p", images=20, ingest={"source": None})
    result = run_visionline("pipeline", "run", cwd=project.root)
    assert result.returncode == 2
    assert_one_line_error(result, "pipeline.ingest.source", "--data")

    status = run_visionline("pipeline", "status", cwd=project.root)
    assert status.returncode == 0
    assert "failed" in status.stdout and "ingest:" in status.stdout


def test_show_lists_every_step_in_order_with_its_status(tmp_path):
    project = make_project(tmp_path / "p", images=20)
    result = run_visionline("pipeline", "show", cwd=project.root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    order = ["ingest", "validate", "split", "tune", "train", "evaluate", "gate", "export",
             "quantise", "bundle", "benchmark", "register", "deploy"]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(f"│ {s} ")) for s in order]
    assert positions == sorted(positions)
    assert "disabled" in lines[positions[3]] and "external" in lines[positions[0]]


def test_bad_options_are_one_line_errors(tmp_path):
    project = make_project(tmp_path / "p", images=20)
    assert_one_line_error(
        run_visionline("pipeline", "run", "--force", "trian", cwd=project.root), "trian"
    )
    assert_one_line_error(
        run_visionline("pipeline", "run", "--data", "feedbeef", cwd=project.root), "feedbeef"
    )
    assert run_visionline("pipeline", "status", cwd=tmp_path).returncode != 0


def test_retrain_waits_for_a_trigger_and_needs_a_model_when_forced(tmp_path):
    project = make_project(tmp_path / "p", images=20)
    quiet = run_visionline("retrain", "--if-triggered", cwd=project.root)
    assert quiet.returncode == 0, quiet.stderr
    assert "No retraining trigger fired" in quiet.stdout
    forced = run_visionline("retrain", "--always", cwd=project.root)
    assert forced.returncode == 1
    assert_one_line_error(forced, "no registered version", "visionline pipeline run")
