"""`visionline anomaly fit|eval`: detectors learned from good images only, tracked and registered
like supervised models."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from visionline.cli._common import ProjectOption, console, err_console, load_project
from visionline.cli._eval import parse_data, quiet_mlflow
from visionline.errors import ConfigError, GateFailedError

if TYPE_CHECKING:
    from visionline.anomaly import AnomalyConfig

app = typer.Typer(
    help="Anomaly detection from good images only: fit a memory bank, evaluate with heatmaps.",
    no_args_is_help=True,
)


def _stages(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise ConfigError(
            f"--stages {value!r} is not two stage numbers; write e.g. --stages 2,4."
        ) from None


@app.command("fit")
def fit_command(
    data: Annotated[
        str, typer.Option("--data", "-d", help="Dataset version id (or unique prefix).")
    ],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of AnomalyConfig settings.")
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="efficientnet_lite0 (or another lite).")
    ] = None,
    stages: Annotated[str | None, typer.Option(help="Two backbone stages, e.g. 2,4.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Input size (multiple of 32).")] = None,
    coreset_ratio: Annotated[float | None, typer.Option(help="Memory bank / all patches.")] = None,
    max_bank: Annotated[int | None, typer.Option(help="Upper bound on the bank size.")] = None,
    autocontrast: Annotated[
        bool | None,
        typer.Option("--autocontrast/--no-autocontrast", help="Per-image contrast stretch."),
    ] = None,
    max_good_images: Annotated[
        int | None, typer.Option(help="Fit on at most this many good images (few-shot).")
    ] = None,
    max_memory_gb: Annotated[float | None, typer.Option(help="Memory the fit may use.")] = None,
    register: Annotated[
        str | None, typer.Option(help="Register the run under this model name (alias challenger).")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: the project's sqlite db).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory.")] = None,
    project_dir: ProjectOption = None,
) -> None:
    """Fit on the train split's good images; threshold on the val split's good images."""
    from visionline.anomaly import load_anomaly_config

    settings = load_anomaly_config(
        config,
        backbone=backbone,
        stages=_stages(stages),
        image_size=image_size,
        coreset_ratio=coreset_ratio,
        max_bank=max_bank,
        autocontrast=autocontrast,
        max_good_images=max_good_images,
        max_memory_gb=max_memory_gb,
    )
    run_fit(settings, data, register, tracking_uri, out, project_dir)


def run_fit(
    settings: AnomalyConfig,
    data: str,
    register: str | None = None,
    tracking_uri: str | None = None,
    out: Path | None = None,
    project_dir: Path | None = None,
) -> None:
    """Fit, print what the fit found, and optionally register the run (`anomaly fit`, and
    `train --method anomaly`)."""
    from visionline.anomaly import fit_anomaly

    quiet_mlflow()
    project = load_project(project_dir)
    result = fit_anomaly(settings, data, project, out_dir=out, tracking_uri=tracking_uri)
    stats, point = result.stats, result.operating_point
    console.print(f"[green]MLflow run[/green] {result.run_id}")
    console.print(
        f"fitted on {stats.n_images} good images in {stats.fit_seconds:.1f} s: bank of "
        f"{stats.bank_size:,} patches from {stats.total_patches:,} ({stats.feature_dim} features)"
    )
    auroc = result.val_metrics["roc_auc"]
    console.print(
        f"threshold {point.threshold:.4f} from {point.n_good} good val images "
        f"(target FRR {point.target_false_reject_rate:.1%}, val FRR {point.false_reject_rate:.2%})"
        + (f"; val image AUROC {auroc:.3f}" if math.isfinite(auroc) else "")
    )
    if point.warning:
        err_console.print(f"[yellow]warning:[/yellow] {point.warning}", highlight=False)
    console.print(f"model: {result.model_path}")
    if register and result.run_id:
        from visionline.registry import register as register_run

        found = register_run(project, result.run_id, register, tags={"kind": "anomaly"})
        console.print(f"Registered {found['name']} v{found['version']} (alias {found['alias']}).")


@app.command("eval")
def eval_command(
    model: Annotated[
        str,
        typer.Argument(help="model.pt path, runs:/<run_id> or models:/<name>@<alias>|/<version>."),
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help="VERSION[:SPLIT]; the split defaults to test.")
    ],
    gate: Annotated[
        bool, typer.Option(help="Exit with status 3 when a quality gate fails.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Output directory for report.html and metrics.json.")
    ] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples (0 = none).")] = 1000,
    project: ProjectOption = Path("."),
) -> None:
    """Image AUROC, recall per subtype at the FRR budget, pixel AUROC and AUPRO, heatmap report."""
    from visionline.anomaly import evaluate_anomaly
    from visionline.cli._eval import print_gates

    version, split = parse_data(data)
    quiet_mlflow()
    result = evaluate_anomaly(load_project(project), model, version, split, out, bootstrap)
    m = result.metrics

    def fmt(value: float | None) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"

    console.print(
        f"{model} on {version}:{split} ({m['n_good']} good, {m['n_defect']} defective): "
        f"image AUROC {fmt(m['roc_auc'])}, defect recall {fmt(m['defect_recall'])}, "
        f"false-reject rate {fmt(m['false_reject_rate'])}, pixel AUROC {fmt(m['pixel_auroc'])}, "
        f"AUPRO {fmt(m['aupro'])} ({m['pixel_images']} images with masks)"
    )
    for name, recall in m["subtype_recall"].items():
        low, high = m["subtype_recall_exact_ci"][name]
        console.print(
            f"  recall {name}: {fmt(recall)} ({fmt(low)}–{fmt(high)}, n={m['subtype_support'][name]})"
        )
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    print_gates(m["gates"])
    console.print(f"Report: {result.report_path}\nMetrics: {result.metrics_path}")
    if gate and not result.gates.passed:
        raise GateFailedError(result.gates.summary())


@app.command("export")
def export_command(
    model: Annotated[
        str,
        typer.Argument(help="model.pt path, runs:/<run_id> or models:/<name>@<alias>|/<version>."),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write the .onnx file.")
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Write a signed edge bundle directory here instead (+ .tar.gz beside it).",
        ),
    ] = None,
    sign: Annotated[
        Path | None, typer.Option("--sign", help="Ed25519 private key that signs bundle.json.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Bundle name (default: the project).")] = None,
    version: Annotated[str | None, typer.Option(help="Bundle version (default: UTC time).")] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="VERSION[:SPLIT] whose images check parity (default val)."
        ),
    ] = None,
    project: ProjectOption = Path("."),
) -> None:
    """ONNX with the bank and search inside (score, decision, anomaly map), parity-checked;
    with --bundle, a signed edge bundle that visionline-edge, score and serve load."""
    import numpy as np

    if (out is None) == (bundle is None):
        raise ConfigError("Pass exactly one of --out FILE.onnx and --bundle DIR.")
    if bundle is not None:
        _export_bundle(model, bundle, data, sign, name, version, project)
        return
    if sign is not None:
        raise ConfigError("--sign signs a bundle; pass --bundle DIR with it.")

    from visionline.anomaly import check_anomaly_parity, export_anomaly_onnx, load_anomaly_model
    from visionline.registry import resolve_model

    quiet_mlflow()
    loaded = load_project(project)
    detector, spec = load_anomaly_model(resolve_model(model, loaded.tracking_uri).path)
    size = spec.preprocessing.size
    if data:
        from visionline.anomaly._records import images, split_records
        from visionline.data import DatasetRepo

        version, split = data.partition(":")[0], data.partition(":")[2] or "val"
        repo = DatasetRepo(loaded)
        records = split_records(repo.get(version), split)[:8]
        batch = spec.preprocessing(list(images(repo.blobs, records)))
    else:
        batch = np.random.default_rng(0).normal(size=(4, 3, size, size)).astype(np.float32)
    path = export_anomaly_onnx(detector, spec, out)
    report = check_anomaly_parity(detector, spec, path, batch)
    console.print(
        f"ONNX model: {path} (threshold {spec.threshold:.4f}); parity on {len(batch)} images: "
        f"score {report['max_score_diff']:.1e}, map {report['max_map_diff']:.1e} relative"
    )


def _export_bundle(
    model: str,
    bundle: Path,
    data: str | None,
    sign: Path | None,
    name: str | None,
    version: str | None,
    project: Path,
) -> None:
    from visionline.cli._export import _optional_project, _resolve_model
    from visionline.export import ExportConfig, export_model

    proj = _optional_project(project)
    path, lineage = _resolve_model(model, proj)
    config = ExportConfig(data=data.partition(":")[0] if data else None, name=name, version=version)
    result = export_model(path, bundle, config, proj, sign, None, lineage, progress=False)
    m = result.manifest
    parity = m["gates"]["parity_fp32"]
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    signed = "signed" if (result.bundle_dir / "bundle.sig").exists() else "unsigned"
    console.print(
        f"[green]Wrote[/green] anomaly bundle {result.bundle_dir} ({signed}; anomaly threshold "
        f"{m['anomaly']['threshold']:.4f}; parity on {parity['images']} images: score "
        f"{parity['max_score_diff']:.1e}, map {parity['max_map_diff']:.1e}) and {result.archive.name}"
    )
