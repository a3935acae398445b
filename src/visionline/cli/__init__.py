"""The `visionline` command. Subcommands mirror the lifecycle; heavy imports happen inside them."""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from visionline.cli._anomaly import app as anomaly_app
from visionline.cli._common import err_console
from visionline.cli._data import app as data_app
from visionline.cli._demo import demo
from visionline.cli._edge import app as edge_app
from visionline.cli._estimate import estimate_command
from visionline.cli._eval import eval_command
from visionline.cli._export import register as register_export
from visionline.cli._init import init
from visionline.cli._label import app as label_app
from visionline.cli._leaderboard import leaderboard_command
from visionline.cli._monitor import app as monitor_app
from visionline.cli._pipeline import app as pipeline_app
from visionline.cli._pipeline import retrain_command
from visionline.cli._registry import models_app, promote_command, rollback_command
from visionline.cli._score import score_command
from visionline.cli._serve import serve
from visionline.cli._synth import app as synth_app
from visionline.cli._train import train
from visionline.cli._tune import tune_command
from visionline.errors import VisionlineError

app = typer.Typer(
    name="visionline",
    help="MLOps for industrial machine vision: data → model → edge → monitoring → retraining.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Registered in lifecycle order.
app.command()(init)
app.add_typer(synth_app, name="synth")
app.add_typer(data_app, name="data")
app.add_typer(label_app, name="label")
app.command()(train)
app.command("tune")(tune_command)
app.command("leaderboard")(leaderboard_command)
app.add_typer(anomaly_app, name="anomaly")
app.command("eval")(eval_command)
app.add_typer(models_app, name="models")
app.command("promote")(promote_command)
app.command("rollback")(rollback_command)
app.command("estimate")(estimate_command)
register_export(app)
app.command()(serve)
app.add_typer(monitor_app, name="monitor")
app.add_typer(edge_app, name="edge")
app.command("score")(score_command)
app.add_typer(pipeline_app, name="pipeline")
app.command("retrain")(retrain_command)
app.command()(demo)


def _print_version(value: bool) -> None:
    if value:
        from visionline import __version__

        typer.echo(f"visionline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """MLOps for industrial machine vision: data → model → edge → monitoring → retraining."""


_FILE_ERRORS = {
    errno.EEXIST: "{path} is a file where a folder is needed; pass a folder path.",
    errno.ENOTDIR: "Part of {path} is a file where a folder is needed; pass a folder path.",
    errno.EISDIR: "{path} is a folder where a file is needed; pass a file path.",
    errno.EACCES: "No permission to use {path}; fix its permissions or pick another path.",
    errno.EPERM: "No permission to use {path}; fix its permissions or pick another path.",
    errno.EROFS: "{path} is on a read-only file system; pick a writable path.",
    errno.ENOSPC: "The disk holding {path} is full; free some space and run the command again.",
}


def _file_error(exc: OSError) -> str | None:
    """One sentence for a file-system error that a user's path or disk caused, else None (a
    bug, which keeps its traceback)."""
    template = _FILE_ERRORS.get(exc.errno or 0)
    if template is None or (exc.filename is None and exc.errno != errno.ENOSPC):
        return None
    if exc.errno == errno.EEXIST and os.path.isdir(exc.filename):
        return None  # a folder that exists where one is made: the code's mistake, not the path's
    return template.format(path=exc.filename if exc.filename is not None else "the output")


def main() -> None:
    """Console-script entry point: domain errors become one sentence and a non-zero exit."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        app()
    except VisionlineError as exc:
        err_console.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except OSError as exc:
        sentence = _file_error(exc)
        if sentence is None:
            raise
        err_console.print(
            f"[bold red]error:[/bold red] {escape(sentence)}", highlight=False, soft_wrap=True
        )
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted; finished work is kept, rerun to resume.[/yellow]")
        sys.exit(130)
