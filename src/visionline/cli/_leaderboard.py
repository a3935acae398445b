"""`visionline leaderboard`: classical features, probes, fine-tuned backbones, the anomaly model
and a stacked ensemble on one split within a time budget, ranked; the best registered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import ProjectOption, console, load_project


def leaderboard_command(
    data: Annotated[
        str, typer.Option("--data", "-d", help="Dataset version id (or unique prefix).")
    ],
    budget_min: Annotated[
        float | None,
        typer.Option("--budget-min", help="Wall-clock minutes for all entries (default 20)."),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated families to run: classical, probe, anomaly, finetune, stack."
        ),
    ] = None,
    backbones: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated backbones for probes and fine-tuning (default lite0-2)."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Fine-tuning epochs (default: visionline train's).")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Probe input size (default: the project goal).")
    ] = None,
    register: Annotated[
        bool, typer.Option(help="Register the best entry that passes the gates as challenger.")
    ] = True,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: the project's sqlite db).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default reports/leaderboard-<data>)."),
    ] = None,
    project_dir: ProjectOption = None,
) -> None:
    """Rank classical vision against deep models on one split: only use AI when you have to."""
    from visionline.leaderboard import load_leaderboard_config, run_leaderboard

    config = load_leaderboard_config(
        None,
        budget_min=budget_min,
        families=only.split(",") if only else None,
        backbones=backbones.split(",") if backbones else None,
        finetune={"epochs": epochs} if epochs else None,
        image_size=image_size,
        register_best=register,
    )
    project = load_project(project_dir)

    def _report(entry) -> None:
        detail = f" ({entry.reason})" if entry.reason else ""
        console.print(
            f"{entry.name}: {entry.status} in {entry.seconds:.0f} s{detail}", highlight=False
        )

    result = run_leaderboard(
        project,
        data,
        config,
        out_dir=out,
        tracking_uri=tracking_uri,
        progress=True,
        on_entry=_report,
    )
    from visionline.leaderboard._report import print_table

    print_table(result, console)
    console.print(f"written: {', '.join(str(p) for p in result.paths.values())}", highlight=False)
