"""The CLI as a user meets it: a real subprocess, one-line errors, fast start."""

import subprocess
import sys
from pathlib import Path

VISIONLINE = Path(sys.executable).parent / "visionline"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VISIONLINE), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_help_lists_lifecycle_commands(tmp_path):
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "init" in result.stdout


def test_help_does_not_import_heavy_libraries(tmp_path):
    code = (
        "import sys; from visionline.cli import app; "
        "heavy = {'torch', 'mlflow', 'onnxruntime', 'sklearn', 'matplotlib', 'pyarrow'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_init_writes_a_loadable_project(tmp_path):
    result = run("init", "plant", "--name", "apples", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "name: apples" in (tmp_path / "plant" / "visionline.yaml").read_text()


def test_errors_are_one_line_without_traceback(tmp_path):
    run("init", ".", cwd=tmp_path)
    (tmp_path / "visionline.yaml").write_text("goals:\n  max_false_reject_rate: -1\n")
    result = run("init", ".", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
