"""`visionline eval`: metrics, operating threshold, gates and an HTML report for one model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import ProjectOption, console, err_console, load_project
from visionline.errors import ConfigError, GateFailedError


def quiet_mlflow() -> None:
    """Keep MLflow's INFO lines (database migrations, run links) out of the command's output."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def parse_data(value: str) -> tuple[str, str]:
    """`VERSION[:SPLIT]` → (version, split); the split defaults to `test`."""
    version, _, split = value.partition(":")
    if not version:
        raise ConfigError(
            f"--data {value!r} names no dataset version; write --data VERSION[:SPLIT]."
        )
    return version, split or "test"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def print_gates(gates: dict) -> None:
    """The pass/fail table with the reason for each failure."""
    from rich.table import Table

    table = Table(title="Quality gates")
    for column in ("gate", "value", "goal", "result"):
        table.add_column(column)
    for gate in gates["gates"]:
        fmt = _pct if gate["unit"] == "%" else _num
        goal = ("≤ " if gate["direction"] == "max" else "≥ ") + fmt(gate["limit"])
        result = "[green]pass[/green]" if gate["passed"] else f"[red]fail[/red] {gate['reason']}"
        table.add_row(gate["name"], fmt(gate["value"]), goal, result)
    console.print(table)


def _is_anomaly_model(model: str, project) -> bool:  # project: Project
    """Whether `model` (a path or an MLflow URI) resolves to an anomaly detector's file."""
    from visionline.registry import resolve_model

    path = resolve_model(model, project.tracking_uri).path  # a bad path fails before torch loads
    from visionline.anomaly import is_anomaly_checkpoint

    return is_anomaly_checkpoint(path)


def eval_command(
    model: Annotated[
        str,
        typer.Argument(help="model.pt path, runs:/<run_id> or models:/<name>@<alias>|/<version>."),
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help="Dataset version (id prefix) and split: VERSION[:SPLIT], split defaults to test.",
        ),
    ],
    calibrate: Annotated[
        bool,
        typer.Option(help="Fit temperature scaling on the val split and save a calibrated model."),
    ] = False,
    gate: Annotated[
        bool, typer.Option(help="Exit with status 3 when a quality gate fails.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Output directory for report.html and metrics.json.")
    ] = None,
    bootstrap: Annotated[
        int,
        typer.Option(min=0, help="Bootstrap resamples for the confidence intervals (0 = none)."),
    ] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 64,
    project: ProjectOption = Path("."),
) -> None:
    """Evaluate a model: false rejects, escapes, per-class and per-subtype recall, AUCs, calibration.

    The threshold is set on the val split's good images for the project's max false-reject rate.
    An anomaly model gets 'visionline anomaly eval' (image and pixel metrics, heatmap report).
    """
    from rich.table import Table

    from visionline.evaluate import evaluate_model

    version, split = parse_data(data)
    quiet_mlflow()
    loaded = load_project(project)
    if _is_anomaly_model(model, loaded):
        from visionline.cli._anomaly import eval_command as anomaly_eval

        if calibrate:
            raise ConfigError(
                f"{model} is an anomaly model, whose scores are distances, not probabilities to "
                "calibrate; drop --calibrate."
            )
        anomaly_eval(model, data, gate, out, bootstrap, project)
        return
    result = evaluate_model(
        loaded,
        model,
        version,
        split,
        calibrate=calibrate,
        output_dir=out,
        bootstrap=bootstrap,
        batch_size=batch_size,
        progress=True,
    )
    metrics = result.metrics
    point = result.operating_point
    table = Table(
        title=f"{model} on {version}:{split} ({metrics['n_good']} good, {metrics['n_defect']} defective)"
    )
    for column in ("metric", "value", f"{metrics['confidence']:.0%} CI"):
        table.add_column(column)
    for label, key, fmt in (
        ("false-reject rate", "false_reject_rate", _pct),
        ("escape rate", "escape_rate", _pct),
        ("defect recall", "defect_recall", _pct),
        ("accuracy", "accuracy", _pct),
        ("ROC-AUC", "roc_auc", _num),
        ("PR-AUC", "pr_auc", _num),
    ):
        low, high = metrics["intervals"][key]
        table.add_row(label, fmt(metrics[key]), f"{fmt(low)} – {fmt(high)}")
    table.add_row("ECE", _num(metrics["ece"]), "")
    console.print(table)
    recalls = ", ".join(f"{k} {_pct(v)}" for k, v in metrics["subtype_recall"].items())
    console.print(f"Recall per defect subtype: {recalls}")
    console.print(
        f"Threshold {point.threshold:.4f} from {point.n_good} good val images "
        f"(target FRR {point.target_false_reject_rate:.1%}, val FRR {point.false_reject_rate:.2%}, "
        f"{point.confidence:.0%} upper bound {point.false_reject_upper_bound:.2%}); "
        f"temperature {result.temperature:.3f}."
    )
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    print_gates(metrics["gates"])
    console.print(f"Report: {result.report_path}\nMetrics: {result.metrics_path}")
    if result.calibrated_model_path:
        console.print(f"Calibrated model: {result.calibrated_model_path}")
    if gate and not result.gates.passed:
        raise GateFailedError(result.gates.summary())
