"""`visionline init`: write a project file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import console


def init(
    directory: Annotated[Path, typer.Argument(help="Project directory to create.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Project name.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing visionline.yaml.")] = False,
) -> None:
    """Create visionline.yaml with default classes, goals and storage."""
    from visionline.config import init_project

    path = init_project(directory, name=name, force=force)
    console.print(f"[green]Wrote[/green] {path}. Edit the classes and goals, then add data:")
    console.print(f"  visionline data add IMAGES_DIR --project {directory}")
