"""`visionline monitor ...`: the prediction log, drift, feedback, deliveries and the dashboard."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from visionline.cli._common import ProjectOption, console, load_project
from visionline.errors import ConfigError, ServiceUnavailableError, VisionlineError

app = typer.Typer(
    help="Prediction log, drift detection, feedback, per-delivery defect rates, dashboard.",
    no_args_is_help=True,
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="Prediction log URL (default: monitor_db of the project).", show_default=False
    ),
]
BundleOption = Annotated[
    Path | None,
    typer.Option(
        "--bundle", "-b", help="Edge bundle whose reference statistics and validated rates to use."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class By(str, Enum):
    delivery = "delivery"
    supplier = "supplier"


class Period(str, Enum):
    day = "day"
    week = "week"


def _project(project: Path | None, required: bool = True) -> Any:
    try:
        return load_project(project)
    except VisionlineError:
        if required:
            raise
        return None


def _db(project: Path | None, db: str | None, must_exist: bool = True) -> Any:
    from visionline.monitor import MonitorDB

    if db:
        return MonitorDB(db, must_exist=must_exist)
    return MonitorDB.for_project(_project(project), must_exist=must_exist)


def _blobs(proj: Any) -> Any:
    from visionline.data import BlobStore

    return BlobStore(proj.blob_store_uri) if proj is not None else None


def _reference(bundle: Path | None) -> Any:
    from visionline.monitor import Reference

    return Reference.from_bundle(bundle) if bundle is not None else None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command("recent")
def recent_command(
    n: Annotated[int, typer.Option("--n", min=1, help="How many predictions.")] = 10,
    flagged: Annotated[bool, typer.Option("--flagged", help="Only flagged images.")] = False,
    db: DbOption = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the latest logged predictions (their ids are what `feedback` takes)."""
    from datetime import UTC, datetime

    from rich.table import Table

    log = _db(project, db)
    frame = log.frame(
        columns=[
            "id",
            "ts",
            "model",
            "version",
            "delivery_id",
            "defect_score",
            "flagged",
            "decision",
        ],
        newest_first=True,
        limit=None if flagged else n,
    )
    if flagged:
        frame = frame[frame["flagged"].astype(bool)]
    frame = frame.head(n)
    if as_json:
        _print_json(frame.to_dict("records"))
        return
    table = Table("id", "time (UTC)", "model", "delivery", "score", "decision")
    for row in frame.itertuples():
        table.add_row(
            row.id[:12],
            datetime.fromtimestamp(row.ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            f"{row.model} v{row.version}",
            str(row.delivery_id or "–"),
            f"{row.defect_score:.3f}",
            row.decision,
        )
    console.print(table)


@app.command("feedback")
def feedback_command(
    prediction_id: Annotated[
        str | None, typer.Argument(help="Prediction id (or a unique prefix).")
    ] = None,
    verdict: Annotated[
        str | None,
        typer.Option("--verdict", help="good, defect or defect/SUBTYPE (e.g. defect/bruise)."),
    ] = None,
    import_file: Annotated[
        Path | None,
        typer.Option(
            "--import", help="Label Studio JSON export of tasks from 'monitor export-tasks'."
        ),
    ] = None,
    db: DbOption = None,
    project: ProjectOption = None,
) -> None:
    """Record a person's verdict on a prediction, or import a Label Studio export."""
    from visionline.monitor import import_feedback, record_feedback

    proj = _project(project)
    if (prediction_id is None) == (import_file is None):
        raise ConfigError("Pass either PREDICTION_ID --verdict V, or --import EXPORT.json.")
    log = _db(project, db)
    if import_file is not None:
        result = import_feedback(log, import_file, proj.config)
        console.print(
            f"Imported {result.matched} verdicts from {import_file} "
            f"({result.unmatched} tasks matched no logged image, {len(result.issues)} issues)."
        )
        for issue in result.issues[:10]:
            console.print(f"  [yellow]•[/yellow] {issue}", highlight=False)
        return
    if verdict is None:
        raise ConfigError("Pass --verdict good|defect[/SUBTYPE] with the prediction id.")
    full, label, subtype = record_feedback(log, prediction_id, verdict, proj.config)
    console.print(
        f"Recorded verdict {label}{'/' + subtype if subtype else ''} for prediction {full[:12]}."
    )


@app.command("performance")
def performance_command(
    period: Annotated[
        Period, typer.Option("--period", help="Group verdicts by day or ISO week.")
    ] = Period.day,
    db: DbOption = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Realised false-reject and escape rates from feedback, and the label-free (CBPE) estimate."""
    from rich.table import Table

    from visionline.monitor import CBPE_ASSUMPTIONS, estimate_from_log, realised_performance

    log = _db(project, db)
    realised = realised_performance(log, period.value)
    frame = log.frame(columns=["ts", "model", "version", "flagged", "probabilities"])
    estimated = (
        {f"{m} v{v}": e.to_dict() for (m, v), e in estimate_from_log(frame).items()}
        if len(frame)
        else {}
    )
    if as_json:
        _print_json({"realised": realised, "estimated": estimated})
        return

    def cell(rate: dict[str, Any]) -> str:
        if rate["n"] == 0:
            return "–"
        return (
            f"{rate['rate']:.1%} [{rate['low']:.1%}, {rate['high']:.1%}] ({rate['k']}/{rate['n']})"
        )

    table = Table(
        "model",
        period.value,
        "verdicts",
        "false-reject rate [95%]",
        "escape rate [95%]",
        title="Realised (from feedback)",
    )
    for row in realised:
        table.add_row(
            f"{row['model']} v{row['version']}",
            row["period"],
            str(row["verdicts"]),
            cell(row["false_reject"]),
            cell(row["escape"]),
        )
    console.print(
        table
        if realised
        else "No feedback yet: record verdicts with 'visionline monitor feedback'."
    )
    est = Table(
        "model",
        "predictions",
        "flag rate",
        "expected accuracy",
        "expected FRR",
        "expected escape",
        title="Estimated without labels (CBPE)",
    )
    for name, e in estimated.items():
        est.add_row(
            name,
            str(e["n"]),
            f"{e['flag_rate']:.1%}",
            f"{e['expected_accuracy']:.1%}",
            f"{e['expected_false_reject_rate']:.2%}",
            f"{e['expected_escape_rate']:.1%}",
        )
    console.print(est)
    console.print(f"[dim]{CBPE_ASSUMPTIONS}[/dim]")


@app.command("deliveries")
def deliveries_command(
    by: Annotated[By, typer.Option("--by", help="Group by delivery or by supplier.")] = By.delivery,
    bundle: BundleOption = None,
    rates: Annotated[
        Path | None,
        typer.Option("--rates", help="metrics.json from 'visionline eval' (instead of --bundle)."),
    ] = None,
    confidence: Annotated[
        float, typer.Option("--confidence", min=0.5, max=0.999, help="Interval confidence.")
    ] = 0.90,
    db: DbOption = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Defect rate per delivery or supplier, corrected with the validated rates, with intervals."""
    from rich.table import Table

    from visionline.evaluate import ValidatedRates
    from visionline.monitor import estimate_deliveries, validated_rates

    log = _db(project, db)
    found = None
    if rates is not None:
        if not rates.is_file():
            raise ConfigError(
                f"No rates file at {rates}; pass the metrics.json from 'visionline eval'."
            )
        found = ValidatedRates.from_metrics(json.loads(rates.read_text()))
    elif bundle is not None:
        found = validated_rates(_reference(bundle))
    key = f"{by.value}_id"
    rows = estimate_deliveries(log, key, found, confidence)
    if as_json:
        _print_json(rows)
        return
    table = Table(
        by.value, "images", "flagged", "raw rate", "estimate", f"{confidence:.0%} interval"
    )
    for r in rows:
        interval = f"{r['low']:.1%} – {r['high']:.1%}" if "low" in r else "–"
        est = f"{r['estimate']:.1%}" if "estimate" in r else "–"
        table.add_row(
            str(r[key]), str(r["n"]), str(r["flagged"]), f"{r['raw_rate']:.1%}", est, interval
        )
    console.print(table)
    if found is None:
        console.print(
            "[dim]Raw flagged shares only: pass --bundle or --rates to correct them.[/dim]"
        )


@app.command("drift")
def drift_command(
    bundle: Annotated[
        Path, typer.Option("--bundle", "-b", help="Deployed bundle (reference statistics).")
    ],
    window: Annotated[int, typer.Option("--window", help="Images per window.")] = 100,
    seconds: Annotated[
        float | None, typer.Option("--seconds", help="Also close windows after this long.")
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Family-wise error per window (Holm).")
    ] = 0.01,
    persistence: Annotated[
        int, typer.Option("--persistence", help="Drifted windows in a row for an alarm.")
    ] = 2,
    webhook: Annotated[
        list[str] | None, typer.Option("--webhook", help="POST alarms here (repeatable).")
    ] = None,
    db: DbOption = None,
    project: ProjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Test the predictions logged since the last check against the bundle's reference."""
    from rich.table import Table

    from visionline.monitor import DriftConfig, check_drift, webhook_callback

    log = _db(project, db)
    reference = _reference(bundle)
    config = DriftConfig.build(size=window, seconds=seconds, alpha=alpha, persistence=persistence)
    windows = check_drift(log, reference, config, [webhook_callback(url) for url in webhook or []])
    if as_json:
        _print_json(
            [
                {
                    "window": w.window,
                    "images": [w.start_index, w.end_index],
                    "adjusted_p": w.adjusted,
                    "drifted": w.drifted,
                    "alarm": w.alarm.to_dict() if w.alarm else None,
                }
                for w in windows
            ]
        )
        return
    if not windows:
        console.print(
            f"No complete window of {window} new predictions for {reference.model} v{reference.version} yet."
        )
        return
    names = list(windows[0].adjusted)
    table = Table("window", *names, "drift", title="Holm-adjusted p-values")
    for w in windows:
        table.add_row(
            str(w.window),
            *(f"{w.adjusted.get(n, 1.0):.3g}" for n in names),
            "[red]" + ", ".join(w.drifted) + "[/red]" if w.drifted else "ok",
        )
    console.print(table)
    for w in windows:
        if w.alarm:
            console.print(
                f"[bold red]ALARM[/bold red] window {w.window}: {w.alarm.cause}", highlight=False
            )


@app.command("export-tasks")
def export_tasks_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Label Studio tasks JSON to write.")],
    n: Annotated[int, typer.Option("--n", help="How many images.")] = 100,
    bundle: BundleOption = None,
    document_root: Annotated[
        Path | None,
        typer.Option(
            "--document-root", help="LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT for image URLs."
        ),
    ] = None,
    db: DbOption = None,
    project: ProjectOption = None,
) -> None:
    """Export the most uncertain (and, with --bundle, most drifted) logged images for labelling."""
    from collections import Counter

    from visionline.monitor._tasks import export_tasks

    proj = _project(project)
    tasks = export_tasks(_db(project, db), _blobs(proj), out, n, _reference(bundle), document_root)
    reasons = Counter(t["data"]["reason"] for t in tasks)
    console.print(
        f"Wrote {len(tasks)} tasks to {out} ({', '.join(f'{v} {k}' for k, v in sorted(reasons.items()))}); "
        "import them into Label Studio, then 'visionline monitor feedback --import EXPORT.json'."
    )


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on; 0.0.0.0 for all.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port of the dashboard and the API.")
    ] = 8050,
    bundle: BundleOption = None,
    db: DbOption = None,
    project: ProjectOption = None,
    channel: Annotated[Path | None, typer.Option(
        "--channel", help="Fleet channel folder: serve each line the newest bundle in DIR/LINE/ "
        "(or DIR/) at /api/channel/LINE for 'visionline edge run --channel http://…'."
    )] = None,
) -> None:
    """Serve the dashboard (HTML at /, JSON under /api, Prometheus at /metrics) and take edge
    agents' verdicts (POST /api/ingest); an empty log is created."""
    import uvicorn

    from visionline.monitor import validated_rates
    from visionline.monitor._dashboard import create_app

    proj = _project(project, required=db is None)
    reference = _reference(bundle)
    rates = validated_rates(reference) if reference is not None else None
    if channel is not None and not channel.is_dir():
        raise ConfigError(f"No channel folder {channel}; create it or fix --channel.")
    app_ = create_app(_db(project, db, must_exist=False), _blobs(proj), reference, rates, channel)
    console.print(f"Dashboard on http://{host}:{port}/ (Ctrl+C stops it).")
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning")
    except SystemExit as exc:  # uvicorn's way to say it could not bind (it logged why)
        raise ServiceUnavailableError(
            f"Could not listen on {host}:{port}; pick a free --port."
        ) from exc
