"""`visionline promote`, `visionline rollback` and `visionline models list|show|register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import ProjectOption, console
from visionline.cli._common import load_project as _load_project
from visionline.cli._eval import quiet_mlflow
from visionline.errors import ConfigError


def load_project(directory: Path):
    """The project, with MLflow's INFO logging silenced for registry commands."""
    quiet_mlflow()
    return _load_project(directory)


models_app = typer.Typer(
    help="Registered models: versions, aliases, metrics and lineage.", no_args_is_help=True
)


def promote_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="VERSION[:SPLIT] to compare on; default: the challenger's dataset version, test split.",
        ),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples for the intervals.")
    ] = 200,
    project: ProjectOption = Path("."),
) -> None:
    """Compare challenger vs champion on the same test images; move `champion` only if not worse."""
    from rich.table import Table

    from visionline.cli._eval import parse_data
    from visionline.registry import promote

    version, split = parse_data(data) if data else (None, "test")
    decision = promote(load_project(project), name, version, split, bootstrap, progress=True)
    table = Table(
        title=f"{name}: challenger v{decision.challenger} vs champion "
        f"{'v' + decision.champion if decision.champion else '(none)'}"
    )
    table.add_column("metric")
    for role in decision.metrics:
        table.add_column(role)
    for key in decision.metrics["challenger"]:
        table.add_row(key, *(f"{decision.metrics[role][key]:.4f}" for role in decision.metrics))
    console.print(table)
    for reason in decision.reasons:
        console.print(f"  - {reason}")
    if decision.promoted:
        console.print(f"[green]Promoted[/green] {name} v{decision.challenger} to champion.")
    else:
        console.print(f"[red]Not promoted[/red]: champion stays {decision.champion or 'unset'}.")
        raise typer.Exit(1)


def rollback_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    project: ProjectOption = Path("."),
) -> None:
    """Point `champion` back at the previous champion."""
    from visionline.registry import rollback

    current, previous = rollback(load_project(project), name)
    console.print(f"Rolled back {name}: champion v{current} → v{previous}.")


@models_app.command("list")
def list_command(project: ProjectOption = Path(".")) -> None:
    """Registered models with their version count and aliases."""
    from rich.table import Table

    from visionline.registry import list_models

    rows = list_models(load_project(project))
    if not rows:
        console.print(
            "No registered models yet; register a training run with 'visionline models register RUN_ID'."
        )
        return
    table = Table(title="Registered models")
    for column in ("name", "versions", "latest", "aliases", "champion history"):
        table.add_column(column)
    for row in rows:
        aliases = ", ".join(f"{alias}→v{v}" for alias, v in row["aliases"].items()) or "-"
        history = " → ".join(f"v{v}" for v in row["champion_history"]) or "-"
        table.add_row(row["name"], str(row["versions"]), f"v{row['latest']}", aliases, history)
    console.print(table)


@models_app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="NAME or NAME/VERSION.")],
    project: ProjectOption = Path("."),
) -> None:
    """Versions with aliases, metrics, gate results and lineage (dataset → run → version)."""
    from rich.table import Table

    from visionline.registry import show_model

    name, _, version = ref.partition("/")
    if not name:
        raise ConfigError(f"{ref!r} names no model; write NAME or NAME/VERSION.")
    rows = show_model(load_project(project), name, version or None)
    table = Table(title=f"Model {name}")
    for column in ("version", "aliases", "lineage (dataset → run)", "metrics", "gates", "created"):
        table.add_column(column, overflow="fold")
    for row in rows:
        dataset = (row["dataset_version"] or "?")[:12]
        metrics = ", ".join(f"{k}={v}" for k, v in sorted(row["metrics"].items()))
        gates = ", ".join(f"{k}: {v}" for k, v in sorted(row["gates"].items()))
        table.add_row(
            f"v{row['version']}",
            ", ".join(row["aliases"]) or "-",
            f"{dataset} → {row['run_id']}",
            metrics or "-",
            gates or "-",
            row["created"],
        )
    console.print(table)


@models_app.command("register")
def register_command(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a training run.")],
    name: Annotated[
        str, typer.Option("--name", "-n", help="Registered model name.")
    ] = "apple-inspection",
    project: ProjectOption = Path("."),
) -> None:
    """Register a run's model as a new version with alias `challenger`."""
    from visionline.registry import register

    found = register(load_project(project), run_id, name)
    console.print(
        f"Registered {found['name']} v{found['version']} (alias {found['alias']}) from run {run_id}"
        f", dataset {found['tags'].get('dataset_version', 'unknown')}."
    )
