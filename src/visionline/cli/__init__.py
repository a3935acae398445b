"""The `visionline` command. Subcommands mirror the lifecycle; heavy imports happen inside them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from visionline.cli._common import err_console
from visionline.cli._init import init
from visionline.errors import VisionlineError

app = typer.Typer(
    name="visionline",
    help="MLOps for industrial machine vision: data → model → edge → monitoring → retraining.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command()(init)
from visionline.cli._label import app as label_app  # noqa: E402

app.add_typer(label_app, name="label")


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


def main() -> None:
    """Console-script entry point: domain errors become one sentence and a non-zero exit."""
    try:
        app()
    except VisionlineError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted; finished work is kept, rerun to resume.[/yellow]")
        sys.exit(130)
