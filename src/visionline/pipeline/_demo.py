"""`visionline demo`: the lifecycle end to end on the embedded synthetic apple line.

Every step calls the same public API as the CLI commands, in a fresh project directory, so the
demo is also the integration check of the stages: synthesise → ingest → split → train →
evaluate + gates → register → export (ONNX, INT8, signed bundle) → serve → stream deliveries
from suppliers over HTTP → per-delivery defect rates with confidence intervals vs the truth.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from visionline.config import Project, dump_config, parse_config
from visionline.errors import ConfigError, DataError

DEMO_MARKER = ".visionline-demo"
"""A file that marks a directory as demo output, so `--force` never deletes anything else."""


class DemoSettings(BaseModel):
    """The demo's budget; the defaults take a few minutes on a 2-core machine."""

    model_config = ConfigDict(extra="forbid")

    directory: Path = Path("demo-project")
    images: int = Field(1000, ge=60)
    image_size: int = Field(128, ge=32, le=512)
    backbone: str = "efficientnet_lite0"
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=2)
    suppliers: int = Field(3, ge=1)
    deliveries: int = Field(6, ge=1)
    delivery_size: int = Field(150, ge=10)
    drift_from_delivery: int = Field(4, ge=1, description="dirty lens develops from this delivery")
    seed: int = 0
    force: bool = False


@dataclass
class DemoResult:
    """What the demo produced, for the summary, the HTML report and the tests."""

    project: Project
    dataset_version: str
    run_id: str | None
    model_version: str
    gates_passed: bool
    bundle_dir: Path
    deliveries: list[dict[str, Any]]
    latency_ms: dict[str, float]
    drift: dict[str, Any]
    report_path: Path
    eval_report: Path | None
    timings: dict[str, float] = field(default_factory=dict)


def _demo_config_yaml(image_size: int) -> str:
    """The demo project's goals: what a short CPU training budget can certify."""
    return f"""name: apples
goals:
  max_false_reject_rate: 0.05
  min_defect_recall: 0.7
  edge_p95_latency_ms: 50
  image_size: {image_size}
"""


def _prepare_directory(settings: DemoSettings) -> Path:
    directory = settings.directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        if not (directory / DEMO_MARKER).exists():
            raise ConfigError(
                f"{directory} exists and is not a demo directory; pass another --dir or remove it."
            )
        if not settings.force:
            raise ConfigError(f"{directory} holds an earlier demo; pass --force to start afresh.")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DEMO_MARKER).write_text("created by visionline demo\n")
    config = parse_config(_demo_config_yaml(settings.image_size))
    (directory / "visionline.yaml").write_text(dump_config(config))
    return directory


class _Steps:
    """Prints one line per finished step with its duration; keeps the timings."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.timings: dict[str, float] = {}

    def run(self, name: str, description: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        with self.console.status(f"[bold]{description}…"):
            result = func(*args, **kwargs)
        self.timings[name] = time.perf_counter() - started
        self.console.print(f"[green]✓[/green] {description} [dim]({self.timings[name]:.1f} s)[/dim]")
        return result


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoResult:
    """Run the whole loop; return what it produced. Raises `VisionlineError`s with a fix."""
    console = console or Console()
    steps = _Steps(console)
    root = _prepare_directory(settings)
    project = Project.load(root)
    console.print(f"[bold]visionline demo[/bold] in {root}")

    version = steps.run("data", "Synthesise, ingest and split the apple dataset", _make_dataset,
                        project, settings)
    console.print(f"  dataset version {version.short_id}: {_counts(version)}")
    trained = steps.run("train", f"Fine-tune {settings.backbone} from offline ImageNet weights",
                        _train, project, version, settings)
    console.print(
        f"  best epoch {trained.best_epoch}: val defect recall "
        f"{trained.best_metrics.get('val_defect_recall', float('nan')):.1%} at the FRR goal"
    )
    evaluation = steps.run("evaluate", "Evaluate on the test split against the goals",
                           _evaluate, project, trained, version)
    _print_gates(console, evaluation)
    registered = steps.run("register", "Register the model; promote it if it is not worse",
                           _register, project, trained)
    verdict = "champion" if registered["promoted"] else "not promoted"
    console.print(f"  {project.config.name} v{registered['version']}: {verdict} — "
                  + "; ".join(registered["reasons"]))
    if not registered["promoted"]:
        console.print("  [yellow]A plant would stop here; the demo deploys it anyway to show the "
                      "rest of the loop. More --images or --epochs give a model that passes.[/yellow]")
    bundle, public_key = steps.run("export", "Export ONNX, quantise to INT8, bundle and sign",
                                   _export, project, trained, version, registered, root / "keys")
    console.print(f"  bundle {bundle.bundle_dir} (serves {bundle.manifest.get('deployed')})")
    stream = steps.run("serve", "Serve the bundle and stream deliveries over HTTP",
                       _serve_and_stream, project, settings, bundle.bundle_dir.parent.parent,
                       public_key)
    drift = steps.run("monitor", "Check the prediction log for drift against the bundle",
                      _check_drift, project, bundle.bundle_dir, stream)
    _print_drift(console, drift)
    deliveries = steps.run("estimate", "Estimate each delivery's defect rate",
                           _estimate, stream, evaluation)
    result = DemoResult(
        project=project,
        dataset_version=version.id,
        run_id=trained.run_id,
        model_version=str(registered["version"]),
        gates_passed=evaluation.gates.passed,
        bundle_dir=bundle.bundle_dir,
        deliveries=deliveries,
        latency_ms=stream["latency_ms"],
        drift=drift,
        report_path=project.reports_dir / "demo.html",
        eval_report=evaluation.report_path,
        timings=steps.timings,
    )
    from visionline.pipeline._demo_report import write_demo_report

    write_demo_report(result)
    _print_summary(console, result)
    return result


def _counts(version: Any) -> str:
    splits = version.split_counts()
    classes = version.class_counts()
    return ", ".join(f"{k} {v}" for k, v in classes.items()) + " | " + ", ".join(
        f"{k} {v}" for k, v in splits.items()
    )


def _make_dataset(project: Project, settings: DemoSettings) -> Any:
    from visionline.data import DatasetRepo
    from visionline.synth import SynthConfig, generate_dataset

    config = SynthConfig(size=settings.image_size, seed=settings.seed, defect_rate=0.35)
    out = project.root / "synth" / "dataset"
    generate_dataset(config, out, settings.images)
    repo = DatasetRepo(project)
    added = repo.add(out, name="apples-synth")
    return repo.split(added.version.id, val=0.2, test=0.2, seed=settings.seed)


def _train(project: Project, version: Any, settings: DemoSettings) -> Any:
    from visionline.train import TrainConfig, fit

    config = TrainConfig(
        backbone=settings.backbone,
        pretrained="imagenet",
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        image_size=settings.image_size,
        freeze_epochs=1,
        lr=3e-3,
        seed=settings.seed,
        patience=settings.epochs,
    )
    return fit(config, version, project, out_dir=project.root / "runs" / "champion",
               run_name="demo-champion", progress=False)


def _evaluate(project: Project, trained: Any, version: Any) -> Any:
    from visionline.evaluate import evaluate_model

    model_uri = f"runs:/{trained.run_id}" if trained.run_id else str(trained.model_path)
    return evaluate_model(project, model_uri, version.id, split="test", bootstrap=300)


def _register(project: Project, trained: Any) -> dict[str, Any]:
    from visionline.registry import promote, register

    registered = register(project, trained.run_id, project.config.name)
    decision = promote(project, project.config.name)
    registered["promoted"] = decision.promoted
    registered["reasons"] = decision.reasons
    return registered


def _export(
    project: Project, trained: Any, version: Any, registered: dict[str, Any], keys_dir: Path
) -> Any:
    from visionline.errors import GateFailedError
    from visionline.export import ExportConfig, export_model, generate_keys

    private_key, public_key = generate_keys(keys_dir)
    name = project.config.name
    out_dir = project.root / "model-repository" / name / "1"
    lineage = {"mlflow_run_id": trained.run_id, "model_version": str(registered["version"])}
    config = ExportConfig(data=version.id, int8=True, calibration_images=100, name=name,
                          version="1")
    try:
        result = export_model(trained.model_path, out_dir, config, project=project,
                              signing_key=private_key, lineage=lineage, progress=False)
    except GateFailedError as exc:
        Console().print(f"  [yellow]INT8 rejected by its accuracy gate[/yellow] ({exc}); "
                        "shipping the FP32 model instead.")
        config = config.model_copy(update={"int8": False})
        result = export_model(trained.model_path, out_dir, config, project=project,
                              signing_key=private_key, lineage=lineage, progress=False)
    return result, public_key


def _serve_and_stream(
    project: Project, settings: DemoSettings, repository: Path, pubkey: Path
) -> dict[str, Any]:
    """Start the server, send every delivery's images as a camera client would, keep the log."""
    import httpx

    from visionline.serve import InferenceServer, ServerConfig
    from visionline.synth import DriftConfig, SynthConfig, generate_deliveries

    drift_start = (settings.drift_from_delivery - 1) * settings.delivery_size
    config = SynthConfig(
        size=settings.image_size,
        seed=settings.seed + 1,
        drift=DriftConfig(kind="dirty_lens", start=drift_start, ramp=settings.delivery_size * 2),
    )
    line = generate_deliveries(config, project.root / "synth" / "line", settings.suppliers,
                               settings.deliveries, settings.delivery_size)
    from visionline.data import BlobStore
    from visionline.monitor import PredictionLogger

    images = _stream_order(line.out)
    records: list[Any] = []
    logger = PredictionLogger(project.monitor_db_url, BlobStore(project.blob_store_uri))

    def hook(batch: list[Any]) -> None:
        records.extend(batch)
        logger(batch)

    server = InferenceServer(
        ServerConfig(repository=repository, http_port=0, grpc_port=None, pubkey=pubkey),
        hook=hook,
    )
    latencies = []
    name = project.config.name
    with server.running() as running:
        base = f"http://127.0.0.1:{running.http_port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            _wait_ready(client, name)
            for row in images:
                data = (line.out / row["file"]).read_bytes()
                started = time.perf_counter()
                response = client.post(
                    f"/v1/models/{name}:predict",
                    params={"delivery": row["delivery"], "supplier": row["supplier"]},
                    files=[("files", (Path(row["file"]).name, data, "image/jpeg"))],
                )
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
        _wait_for_log(records, len(images))
    logger.close()
    latencies.sort()
    return {
        "drift_start": drift_start,
        "images": len(images),
        "truth": line.deliveries,
        "records": records,
        "latency_ms": {
            "p50": statistics.median(latencies),
            "p95": latencies[int(0.95 * (len(latencies) - 1))],
            "requests": len(latencies),
        },
    }


def _stream_order(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sorted(rows, key=lambda row: int(row["index"]))


def _wait_ready(client: Any, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/v2/models/{name}/ready").status_code == 200:
            return
        time.sleep(0.2)
    raise ConfigError(f"Model {name} did not become ready within {timeout:.0f} s; see the server log.")


def _wait_for_log(records: list[Any], expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        time.sleep(0.05)


def _check_drift(project: Project, bundle_dir: Path, stream: dict[str, Any]) -> dict[str, Any]:
    """Windows of the logged stream against the bundle's reference statistics (what
    `visionline monitor drift` does); the delay counts images from the drift's start."""
    from visionline.monitor import DriftConfig, MonitorDB, Reference, check_drift

    window = max(20, min(100, stream["images"] // 9))
    windows = check_drift(
        MonitorDB(project.monitor_db_url), Reference.from_bundle(bundle_dir), DriftConfig(size=window)
    )
    alarms = [
        {"image": w.end_index, "cause": w.alarm.cause, "detectors": w.alarm.detectors}
        for w in windows
        if w.alarm is not None
    ]
    after = [a for a in alarms if a["image"] >= stream["drift_start"]]
    return {
        "window": window,
        "windows": len(windows),
        "drift_start": stream["drift_start"],
        "alarms": alarms,
        "delay_images": after[0]["image"] - stream["drift_start"] if after else None,
    }


def _print_drift(console: Console, drift: dict[str, Any]) -> None:
    console.print(
        f"  {len(drift['alarms'])} alarm(s) in {drift['windows']} windows of {drift['window']} "
        f"images; the dirty lens starts at image {drift['drift_start']}"
    )
    for alarm in drift["alarms"]:
        console.print(
            f"  [bold]alarm[/bold] at image {alarm['image']}: {alarm['cause']} "
            f"[dim]({', '.join(alarm['detectors'])})[/dim]"
        )


def _estimate(stream: dict[str, Any], evaluation: Any) -> list[dict[str, Any]]:
    import pandas as pd

    from visionline.evaluate import ValidatedRates, clopper_pearson, estimate_by_group

    frame = pd.DataFrame(
        {
            "delivery": r.extra["parameters"]["delivery"],
            "supplier": r.extra["parameters"]["supplier"],
            "defect_score": r.defect_score,
            "is_defect": r.is_defect,
        }
        for r in stream["records"]
    )
    try:
        rates = ValidatedRates.from_metrics(evaluation.metrics)
    except DataError as exc:
        Console().print(f"  [yellow]Rates stay uncorrected:[/yellow] {exc}")
        rates = None
    rows = estimate_by_group(frame, "delivery", rates)
    truth = {d["delivery"]: d for d in stream["truth"]}
    for row in rows:
        if rates is None:
            row["estimate"] = row["raw_rate"]
            row["low"], row["high"] = clopper_pearson(row["flagged"], row["n"], 0.90)
        row["supplier"] = truth[row["delivery"]]["supplier"]
        row["true_rate"] = truth[row["delivery"]]["defect_rate"]
    return rows


def _print_gates(console: Console, evaluation: Any) -> None:
    status = "[green]passed[/green]" if evaluation.gates.passed else "[red]FAILED[/red]"
    console.print(f"  quality gates {status}: {evaluation.gates.summary()}")


def _print_summary(console: Console, result: DemoResult) -> None:
    table = Table(title="Defect rate per delivery (90% CI) vs the truth")
    for column in ("delivery", "supplier", "apples", "flagged", "estimate", "90% CI", "true"):
        table.add_column(column, justify="right")
    for row in result.deliveries:
        table.add_row(
            row["delivery"], row["supplier"], str(row["n"]), f"{row['raw_rate']:.1%}",
            f"{row['estimate']:.1%}", f"{row['low']:.1%} – {row['high']:.1%}",
            f"{row['true_rate']:.1%}",
        )
    console.print(table)
    errors = [abs(r["estimate"] - r["true_rate"]) for r in result.deliveries]
    covered = sum(r["low"] <= r["true_rate"] <= r["high"] for r in result.deliveries)
    console.print(
        f"Mean absolute error {statistics.mean(errors):.1%}; the interval holds the truth for "
        f"{covered} of {len(errors)} deliveries."
    )
    console.print(
        f"Serving latency over HTTP: p50 {result.latency_ms['p50']:.1f} ms, "
        f"p95 {result.latency_ms['p95']:.1f} ms ({result.latency_ms['requests']} requests)."
    )
    delay = result.drift["delay_images"]
    console.print(
        f"Dirty lens from image {result.drift['drift_start']}: "
        + (f"first alarm {delay} images later." if delay is not None else "no alarm after it.")
    )
    console.print(f"Model {result.project.config.name} v{result.model_version} "
                  f"(run {result.run_id}); gates {'passed' if result.gates_passed else 'FAILED'}.")
    console.print(f"Report: {result.report_path}")
    console.print("Explore what was just produced:")
    console.print(f"  mlflow ui --backend-store-uri {result.project.tracking_uri}")
    console.print(
        f"  visionline monitor serve -p {result.project.root} --bundle {result.bundle_dir}"
        "    # dashboard"
    )
    console.print(f"  visionline models show {result.project.config.name} -p {result.project.root}")


def summary_json(result: DemoResult) -> str:
    """The demo's headline numbers as JSON (for CI logs and the tests)."""
    return json.dumps(
        {
            "dataset_version": result.dataset_version,
            "run_id": result.run_id,
            "model_version": result.model_version,
            "gates_passed": result.gates_passed,
            "latency_ms": result.latency_ms,
            "drift": result.drift,
            "deliveries": result.deliveries,
            "timings_s": result.timings,
        },
        indent=2,
        default=str,
    )
