"""The CLI as a user meets it: a real subprocess, one-line errors, fast start."""

import subprocess
import sys
from pathlib import Path

import pytest

VISIONLINE = Path(sys.executable).parent / "visionline"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VISIONLINE), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
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
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
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


def _help_texts() -> list[tuple[str, str]]:
    import typer.core
    import typer.main

    from visionline.cli import app

    texts: list[tuple[str, str]] = []

    def walk(command, path: str) -> None:
        texts.append((path, command.help or ""))
        texts.extend(
            (f"{path} {param.name}", getattr(param, "help", None) or "") for param in command.params
        )
        if isinstance(command, typer.core.TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "visionline")
    return texts


def test_every_help_text_is_valid_rich_markup():
    """Help is rendered as rich markup: `train/val[/calib]/test` read as a closing tag crashed
    `visionline data --help` and `data split --help`."""
    from rich.errors import MarkupError
    from rich.markup import render
    from typer.testing import CliRunner

    from visionline.cli import app

    texts = _help_texts()
    assert len(texts) > 300
    for where, text in texts:
        try:
            render(text)
        except MarkupError as exc:
            pytest.fail(f"{where}: {exc}")
    result = CliRunner().invoke(app, ["data", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "split" in result.output, result.exception


def test_every_command_option_and_argument_has_help():
    missing = [where for where, text in _help_texts() if not text.strip()]
    assert missing == []


def test_file_system_errors_become_one_sentence(tmp_path, monkeypatch, capsys):
    """A path where a folder is needed is a user's mistake: one line, no traceback."""
    from visionline.cli import main

    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["visionline", "keys", "generate", "--out", str(target)])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {target} is a file where a folder is needed; pass a folder path."
    assert target.read_text() == "keep me"


def test_an_existing_folder_error_keeps_its_traceback(tmp_path):
    """EEXIST on a folder means code made a folder that exists (a bug), not a file in the way."""
    import errno

    from visionline.cli import _file_error

    folder = tmp_path / "runs"
    folder.mkdir()
    assert _file_error(FileExistsError(errno.EEXIST, "File exists", str(folder))) is None
    afile = tmp_path / "runs.txt"
    afile.write_text("x")
    assert "is a file where a folder is needed" in _file_error(
        FileExistsError(errno.EEXIST, "File exists", str(afile))
    )
