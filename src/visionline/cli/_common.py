"""Shared pieces of the CLI: the console, the --project option and project loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from visionline.config import Project

console = Console()
err_console = Console(stderr=True)

ProjectOption = Annotated[
    Path,
    typer.Option(
        "--project",
        "-p",
        help="Project directory (holds visionline.yaml); parents are searched too.",
        show_default=False,
    ),
]


def load_project(directory: Path | None = None) -> Project:
    """Load the project that the command runs in; errors name `visionline init`."""
    return Project.load(directory)
