"""`visionline models register|list|show`, `promote` and `rollback` in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))

from eval_builders import log_run

from visionline.registry._resolve import client

VISIONLINE = Path(sys.executable).parent / "visionline"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [str(VISIONLINE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_register_promote_show_and_rollback(eval_env, tmp_path):
    project = str(eval_env.project.root)
    run_id = log_run(eval_env.project, eval_env.model, eval_env.dataset)
    result = run("models", "register", run_id, "--name", "cli-apples", "-p", project, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Registered cli-apples v1 (alias challenger) from run {run_id}" in result.stdout

    result = run("promote", "cli-apples", "--bootstrap", "0", "-p", project, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "there is no champion yet" in result.stdout
    assert "Promoted cli-apples v1 to champion." in result.stdout
    assert (
        str(
            client(eval_env.project.tracking_uri)
            .get_model_version_by_alias("cli-apples", "champion")
            .version
        )
        == "1"
    )

    result = run("models", "list", "-p", project, cwd=tmp_path)
    assert result.returncode == 0 and "champion→v1" in result.stdout
    result = run("models", "show", "cli-apples/1", "-p", project, cwd=tmp_path)
    assert result.returncode == 0
    assert f"{eval_env.dataset[:12]} → {run_id}" in result.stdout
    assert "passed: true" in result.stdout

    result = run("rollback", "cli-apples", "-p", project, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no previous champion to roll back to" in result.stderr


@pytest.mark.slow
def test_registry_bad_input_is_one_line(eval_env, tmp_path):
    project = str(eval_env.project.root)
    for args, text in (
        (("promote", "ghost"), "No registered model version ghost@challenger"),
        (("models", "show", "ghost"), "No registered model 'ghost'"),
        (("models", "register", "f" * 32), "No MLflow run"),
    ):
        result = run(*args, "-p", project, cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and text in lines[0], result.stderr
