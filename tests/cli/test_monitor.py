"""`visionline monitor ...` as a user meets it: real subprocesses against a populated log."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.monitor.conftest import make_predictions
from visionline.config import Project
from visionline.data import BlobStore
from visionline.monitor import MonitorDB, PredictionLogger

VISIONLINE = Path(sys.executable).parent / "visionline"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VISIONLINE), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and text in " ".join(lines), result.stderr


@pytest.fixture
def project(tmp_path):
    assert run("init", ".", cwd=tmp_path).returncode == 0
    return tmp_path


@pytest.fixture
def logged(project):
    proj = Project.load(project)
    items = make_predictions(120, image=True)
    with PredictionLogger(
        MonitorDB(proj.monitor_db_url), BlobStore(proj.blob_store_uri), sample_rate=0.0
    ) as log:
        log.log(items)
    return project, items


def test_missing_log_is_one_line(project):
    assert_one_line_error(run("monitor", "recent", cwd=project), "No prediction log")
    assert_one_line_error(
        run("monitor", "recent", "--db", f"sqlite:///{project}/nope.db", cwd=project),
        "No prediction log",
    )
    assert not (project / "nope.db").exists()


@pytest.mark.slow
def test_feedback_bad_input_is_one_line_and_stores_nothing(logged):
    project, items = logged
    assert_one_line_error(
        run("monitor", "feedback", "deadbeef", "--verdict", "good", cwd=project),
        "No prediction 'deadbeef'",
    )
    assert_one_line_error(
        run("monitor", "feedback", items[0].id, "--verdict", "banana", cwd=project), "not one of"
    )
    assert_one_line_error(run("monitor", "feedback", cwd=project), "either PREDICTION_ID")
    assert_one_line_error(
        run("monitor", "drift", "--bundle", str(project / "nobundle"), cwd=project),
        "No bundle.json",
    )
    assert MonitorDB(Project.load(project).monitor_db_url).feedback_frame().empty


@pytest.mark.slow
def test_feedback_then_performance(logged):
    project, items = logged
    flagged = next(p for p in items if p.flagged)
    result = run("monitor", "feedback", flagged.id[:10], "--verdict", "good", cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"Recorded verdict good for prediction {flagged.id[:12]}" in result.stdout
    perf = json.loads(run("monitor", "performance", "--json", cwd=project).stdout)
    assert perf["realised"][0]["false_reject"] == {
        **perf["realised"][0]["false_reject"],
        "k": 1,
        "n": 1,
    }
    assert perf["estimated"]["apples v1"]["n"] == 120
    table = run("monitor", "performance", cwd=project)
    assert "Realised" in table.stdout and "concept drift" in table.stdout


@pytest.mark.slow
def test_deliveries_and_recent(logged):
    project, items = logged
    rows = json.loads(
        run("monitor", "deliveries", "--by", "supplier", "--json", cwd=project).stdout
    )
    assert {r["supplier_id"]: r["n"] for r in rows} == {"S0": 60, "S1": 60}
    recent = json.loads(run("monitor", "recent", "--n", "3", "--json", cwd=project).stdout)
    assert [r["id"] for r in recent] == [p.id for p in items[::-1][:3]]


@pytest.mark.slow
def test_export_tasks(logged):
    project, items = logged
    out = project / "tasks.json"
    result = run("monitor", "export-tasks", "--out", str(out), "--n", "5", cwd=project)
    assert result.returncode == 0, result.stderr
    tasks = json.loads(out.read_text())
    assert len(tasks) == 5
    by_id = {p.id: p for p in items}
    margins = sorted(abs(p.defect_score - p.threshold) for p in items)
    for task in tasks:
        item = by_id[task["data"]["prediction_id"]]
        assert abs(item.defect_score - 0.5) <= margins[4] + 1e-9  # the 5 most uncertain
        assert Path(task["data"]["image"]).read_bytes() == item.image
        assert task["predictions"][0]["result"][0]["value"]["choices"] == [
            max(item.probabilities, key=item.probabilities.get)
        ]
    assert_one_line_error(
        run("monitor", "export-tasks", "--out", str(out), "--n", "0", cwd=project), "--n"
    )


def test_dashboard_port_out_of_range_or_in_use_is_one_error(tmp_path):
    """--port 99999 had hung with no error; a port in use ended in uvicorn's SystemExit(3)."""
    import socket

    from typer.testing import CliRunner

    from visionline.cli import app
    from visionline.errors import ServiceUnavailableError

    db = f"sqlite:///{tmp_path / 'monitor.db'}"
    runner = CliRunner()
    result = runner.invoke(app, ["monitor", "serve", "--db", db, "--port", "99999"])
    assert result.exit_code == 2 and "65535" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(app, ["monitor", "serve", "--db", db, "--port", port])
    assert isinstance(result.exception, ServiceUnavailableError)
    assert "pick a free --port" in str(result.exception)


def test_recent_refuses_a_count_below_one(tmp_path):
    from typer.testing import CliRunner

    from visionline.cli import app

    db = f"sqlite:///{tmp_path / 'monitor.db'}"
    result = CliRunner().invoke(app, ["monitor", "recent", "--db", db, "--n", "-1"])
    assert result.exit_code == 2 and "--n" in result.output
