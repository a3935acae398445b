"""`visionline score DATASET|DIR`: batch scoring of a large image set with an edge bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import ProjectOption, console, err_console
from visionline.cli._trust import PubkeyOption, RequireSignatureOption, TrustStoreOption
from visionline.config import Project
from visionline.errors import ProjectNotFoundError


def _project(directory: Path | None) -> Project | None:
    """The named project, else the one around the working directory, else none (a folder needs none)."""
    if directory is not None:
        return Project.load(directory)
    try:
        return Project.load()
    except ProjectNotFoundError:
        return None


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def score_command(
    source: Annotated[
        str,
        typer.Argument(
            help="Folder of images (searched recursively) or a dataset version id.",
            show_default=False,
        ),
    ],
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Bundle directory or .tar.gz, or REPO/<model> for its highest version; default: "
            "the only model in the project's model repository.",
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Only this split of a dataset version (train, val, test).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Rows as Parquet, or CSV when it ends in .csv; default: reports/score-<name>.parquet.",
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            help="local (multiprocessing) or ray (Ray Data); default: pipeline.executor in visionline.yaml.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes; default: one per CPU core.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 32,
    pubkey: PubkeyOption = None,
    trust_store: TrustStoreOption = None,
    require_signature: RequireSignatureOption = False,
    project: ProjectOption = None,
) -> None:
    """Score every image with an edge bundle in parallel; write one row per image and a summary."""
    from rich.table import Table

    from visionline.pipeline._score import score

    result = score(
        source,
        bundle,
        project=_project(project),
        split=split,
        out=out,
        executor=executor,
        workers=workers,
        batch_size=batch_size,
        pubkey=pubkey,
        trust_store=trust_store,
        require_signature=require_signature,
        show_progress=True,
    )
    s = result.summary
    table = Table(title=f"Scored {source} with {result.bundle}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("images", str(s.images))
    table.add_row("failed (unreadable)", str(s.failed))
    table.add_row("flagged", str(s.flagged))
    table.add_row("flagged rate", _rate(s.flagged_rate))
    table.add_row("estimated defect rate", _rate(s.estimate))
    if s.low is not None and s.high is not None:
        table.add_row(f"{s.confidence:.0%} CI", f"{s.low:.1%} – {s.high:.1%}")
    if s.n_defect:
        table.add_row("realised recall", f"{_rate(s.recall)} ({s.detected}/{s.n_defect})")
    if s.n_good:
        table.add_row(
            "realised false-reject rate",
            f"{_rate(s.false_reject_rate)} ({s.false_rejects}/{s.n_good})",
        )
    console.print(table)
    if s.scored and not s.corrected:
        err_console.print(
            "[yellow]warning:[/yellow] the bundle has no validated recall/false-reject counts, so "
            "the estimate is the raw flagged rate; export with --data to correct it."
        )
    console.print(
        f"Wrote {result.output} ({result.executor.value} executor, {result.workers} workers)"
    )
