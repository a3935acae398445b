"""`visionline tune`: an Optuna study over training settings; many workers may share one study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import ProjectOption, console, load_project


def tune_command(
    data: Annotated[
        str, typer.Option("--data", "-d", help="Dataset version id (or unique prefix).")
    ],
    trials: Annotated[
        int, typer.Option("--trials", "-n", help="Total trials of the study (all workers).")
    ] = 20,
    study: Annotated[
        str | None, typer.Option(help="Study name; workers with the same name share it.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="postgresql://… (or any SQLAlchemy URL) to share a study across machines, or "
            "a journal file path; default: a journal file in the project cache."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="tune.yaml: search space, fixed train settings."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting trials after this many seconds.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the best TrainConfig YAML."),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: the project's sqlite db).")
    ] = None,
    project_dir: ProjectOption = None,
) -> None:
    """Tune lr, weight decay, backbone, image size, augmentation and freezing for defect recall."""
    from rich.table import Table

    from visionline.train._tune import load_tune_config, tune

    settings = load_tune_config(config)
    project = load_project(project_dir)

    def finished(trial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.3f}"
        console.print(f"trial {trial.number}: {trial.state.name.lower()}  recall {value}")

    result = tune(
        project,
        data,
        trials,
        study_name=study,
        storage=storage,
        config=settings,
        timeout=timeout,
        tracking_uri=tracking_uri,
        best_config_path=out,
        on_trial=finished,
    )
    goal = project.config.goals.operating_false_reject_rate
    table = Table(title=f"study {result.study_name} ({result.storage})")
    for column in ("trial", "state", f"val recall@FRR≤{goal:g}", "epochs", "params"):
        table.add_column(column)
    for row in result.trials:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["params"].items()
        )
        value = "" if row["value"] is None else f"{row['value']:.3f}"
        table.add_row(str(row["number"]), row["state"].lower(), value, str(row["epochs"]), params)
    console.print(table)
    console.print(
        f"{result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed; "
        f"MLflow parent run {result.parent_run_id}"
    )
    if result.best_config_path is None:
        console.print("[yellow]no trial completed yet[/yellow]")
        return
    console.print(
        f"[green]best[/green] trial {result.best_trial}: val defect recall "
        f"{result.best_value:.3f}; config: {result.best_config_path}"
    )
    console.print(f"train it: visionline train --data {data} --config {result.best_config_path}")
