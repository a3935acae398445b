"""`visionline pipeline run|show|status`: the lifecycle DAG with cached steps."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from visionline.cli._common import ProjectOption, console, load_project
from visionline.cli._trust import RequireSignatureOption, TrustStoreOption
from visionline.config import Executor

app = typer.Typer(
    help="The lifecycle as a DAG: ingest → … → deploy, with cached steps and lineage.",
    no_args_is_help=True,
)

_STATUS_STYLE = {
    "cached": "green", "done": "green", "resumed": "green", "given": "green",
    "succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "yellow",
    "disabled": "dim",
}


def _styled(status: str) -> str:
    style = _STATUS_STYLE.get(status.split(" ")[0], "yellow")
    return f"[{style}]{status}[/{style}]"


@app.command("run")
def run_command(
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Start from this dataset version instead of ingesting."),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Ingest this folder/CSV/Label Studio export (overrides the config).")
    ] = None,
    force: Annotated[
        list[str] | None,
        typer.Option("--force", "-f", help="Run this step even if cached (repeatable; 'all')."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the last failed or interrupted run from where it stopped.")
    ] = False,
    until: Annotated[str | None, typer.Option(help="Stop after this step.")] = None,
    executor: Annotated[
        Executor | None, typer.Option(help="local or ray (default: pipeline.executor).")
    ] = None,
    trust_store: TrustStoreOption = None,
    require_signature: RequireSignatureOption = False,
    project_dir: ProjectOption = None,
) -> None:
    """Run the enabled steps; unchanged steps come from the cache. The deploy step installs only
    a bundle the edge runtime verified (signed by a trusted key with --require-signature)."""
    from visionline.cli._eval import quiet_mlflow
    from visionline.pipeline import run_pipeline

    quiet_mlflow()
    project = load_project(project_dir)
    deploy: dict[str, Any] = {"require_signature": True} if require_signature else {}
    if trust_store is not None:
        deploy["trust_store"] = str(trust_store.resolve())
    run = run_pipeline(
        project, data=data, source=source, force=force or [], resume=resume, until=until,
        executor=executor.value if executor else None, console=console,
        overrides={"deploy": deploy} if deploy else None,
    )
    counts: dict[str, int] = {}
    for record in run.steps.values():
        counts[record.status] = counts.get(record.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    console.print(f"[green]Pipeline run {run.id} succeeded[/green] in {run.seconds:.1f} s ({summary}).")
    deployment = run.outputs("deploy").get("deployment")
    if deployment is not None:
        console.print(
            f"Deployed {deployment.id}" if deployment.meta.get("deployed")
            else f"Not deployed: {deployment.meta.get('reason')}"
        )


@app.command("show")
def show_command(
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="As `run --data`: start from this version.")
    ] = None,
    project_dir: ProjectOption = None,
) -> None:
    """The DAG with each step's status: cached, stale, external or disabled."""
    from rich.table import Table

    from visionline.pipeline import plan

    project = load_project(project_dir)
    table = Table(title=f"pipeline of {project.config.name}")
    for column in ("step", "needs", "status", "cache key", "does"):
        table.add_column(column)
    for row in plan(project, data):
        table.add_row(
            row.name, ", ".join(row.needs) or "-", _styled(row.status),
            (row.key or "")[:12], row.description,
        )
    console.print(table)


@app.command("status")
def status_command(
    limit: Annotated[int, typer.Option("--last", "-n", help="How many runs to list.")] = 10,
    project_dir: ProjectOption = None,
) -> None:
    """The last pipeline runs: status, duration, and what each step did."""
    from rich.table import Table

    from visionline.pipeline import runs

    project = load_project(project_dir)
    found = runs(project, limit)
    if not found:
        console.print("No pipeline runs yet; start one with 'visionline pipeline run'.")
        return
    table = Table(title="pipeline runs")
    for column in ("run", "started", "executor", "status", "seconds", "steps", "stopped at"):
        table.add_column(column)
    for run in found:
        counts: dict[str, int] = {}
        for record in run.steps.values():
            counts[record.status] = counts.get(record.status, 0) + 1
        stopped = next(
            (f"{name}: {record.error or record.status}" for name, record in run.steps.items()
             if record.status in ("failed", "interrupted")),
            "",
        )
        table.add_row(
            run.id, time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at)),
            run.executor, _styled(run.status), f"{run.seconds:.0f}",
            ", ".join(f"{n} {s}" for s, n in counts.items()), stopped[:160],
        )
    console.print(table)


def retrain_command(
    if_triggered: Annotated[
        bool,
        typer.Option(
            "--if-triggered/--always",
            help="Retrain only when drift, new labels or a recall drop call for it (for cron).",
        ),
    ] = True,
    server: Annotated[
        str | None,
        typer.Option(help="Running server to hot-swap (default: pipeline.deploy.server)."),
    ] = None,
    project_dir: ProjectOption = None,
) -> None:
    """Continuous training: champion + labelled production images → challenger → promote → swap."""
    from visionline.cli._eval import quiet_mlflow
    from visionline.pipeline import retrain

    quiet_mlflow()
    project = load_project(project_dir)
    result = retrain(project, if_triggered=if_triggered, server=server, console=console)
    if not result.ran:
        return
    verdict = "promoted to champion" if result.promoted else "not promoted"
    console.print(
        f"Challenger {result.registered} on dataset {str(result.dataset_version)[:12]} "
        f"(+{result.new_images} production images, {result.held_out} held out to judge it): "
        f"{verdict} — {'; '.join(result.reasons)}"
    )
    console.print(f"Deployed {result.deployed}." if result.deployed else "Nothing was deployed.")
