"""`visionline export`, `bench`, `keys` and `bundle`: edge optimisation and signed deployment bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import ProjectOption, console
from visionline.cli._trust import PubkeyOption, RequireSignatureOption, TrustStoreOption
from visionline.errors import ConfigError, ProjectNotFoundError
from visionline.export._options import Calibration, Int8Mode

keys_app = typer.Typer(help="Ed25519 keys that sign edge bundles.", no_args_is_help=True)
bundle_app = typer.Typer(help="Inspect and verify edge bundles.", no_args_is_help=True)


def _optional_project(directory: Path | None):  # -> Project | None
    from visionline.config import Project

    try:
        return Project.load(directory)
    except ProjectNotFoundError:
        if directory is not None:
            raise
        return None


def _resolve_model(model: str, project) -> tuple[Path, dict]:
    """A model.pt path, or a runs:/ or models:/ URI resolved through the project's MLflow."""
    if model.startswith(("runs:/", "models:/")):
        if project is None:
            raise ConfigError(
                f"{model} needs a project for its MLflow tracking URI; pass --project."
            )
        from visionline.registry import resolve_model

        ref = resolve_model(model, project.tracking_uri)
        lineage = {"model_uri": model, "mlflow_run_id": ref.run_id}
        if ref.name:
            lineage |= {"registered_model": ref.name, "model_version": ref.version}
        return ref.path, lineage
    path = Path(model)
    if not path.is_file():
        raise ConfigError(
            f"No model file at {model}; pass a model.pt path, runs:/<id> or models:/<name>@<alias>."
        )
    return path, {"model_uri": str(path)}


def export(
    model: Annotated[
        str, typer.Argument(help="model.pt path, runs:/<run_id> or models:/<name>@<alias>.")
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Dataset version: calibration (train), parity, gates and reference statistics (val).",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Bundle directory (a .tar.gz is written next to it)."),
    ] = Path("bundle"),
    int8: Annotated[
        Int8Mode | None,
        typer.Option(
            "--int8",
            help="INT8 static quantisation (default: ptq when --data is given); qat: when "
            "post-training INT8 fails its gate, fine-tune quantisation-aware and quantise again.",
        ),
    ] = None,
    no_int8: Annotated[bool, typer.Option("--no-int8", help="Export FP32 only.")] = False,
    qat_epochs: Annotated[
        int, typer.Option(help="Epochs of the quantisation-aware fine-tune (--int8 qat).")
    ] = 2,
    fp16: Annotated[
        bool, typer.Option("--fp16/--no-fp16", help="Also write an FP16 model for GPU targets.")
    ] = False,
    calibration: Annotated[
        Calibration,
        typer.Option(help="INT8 activation-range calibration (auto: measure all three, keep the best)."),
    ] = Calibration.AUTO,
    calibration_images: Annotated[
        int, typer.Option(help="Train images used for INT8 calibration.")
    ] = 200,
    tolerance: Annotated[
        float,
        typer.Option(
            help="Largest allowed loss of defect recall / rise of false rejects (0.01 = 1 pp)."
        ),
    ] = 0.01,
    prune: Annotated[
        float,
        typer.Option(help="Share of hidden channels to prune (0 = off); a least-squares recovery follows."),
    ] = 0.0,
    finetune_epochs: Annotated[int, typer.Option(help="Label fine-tune epochs after the recovery.")] = 0,
    sign: Annotated[
        Path | None, typer.Option("--sign", help="Ed25519 private key that signs bundle.json.")
    ] = None,
    triton: Annotated[
        Path | None, typer.Option("--triton", help="Also write a Triton model repository here.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Bundle name (default: the project name).")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Bundle version (default: a UTC timestamp).")
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Export a model to an optimised, gated, signed edge bundle."""
    from pydantic import ValidationError

    if no_int8 and int8 is not None:
        raise ConfigError(f"--int8 {int8.value} and --no-int8 contradict each other; pass one of them.")

    from visionline.config import describe_validation_error
    from visionline.export._pipeline import ExportConfig, export_model

    try:
        config = ExportConfig(
            data=data,
            int8=False if no_int8 else (None if int8 is None else True),
            qat=int8 is Int8Mode.QAT,
            qat_epochs=qat_epochs,
            fp16=fp16,
            calibration=calibration,
            calibration_images=calibration_images,
            tolerance=tolerance,
            prune=prune,
            finetune_epochs=finetune_epochs,
            name=name,
            version=version,
        )
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "export options")) from exc
    proj = _optional_project(project)
    model_path, lineage = _resolve_model(model, proj)
    result = export_model(model_path, out, config, proj, sign, triton, lineage)
    m = result.manifest
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    parity = m["gates"]["parity_fp32"]
    if m.get("kind") == "anomaly":
        console.print(
            f"[green]parity[/green] PyTorch vs ONNX on {parity['images']} {parity['source']} "
            f"images: score {parity['max_score_diff']:.1e}, map {parity['max_map_diff']:.1e} "
            f"relative; anomaly threshold {m['anomaly']['threshold']:.4f}"
        )
    else:
        console.print(
            f"[green]parity[/green] PyTorch vs ONNX on {parity['images']} {parity['source']} images: "
            f"max |Δp| {parity['max_abs_diff']:.1e}, argmax agreement {parity['argmax_agreement']:.0%}"
        )
    if "int8_accuracy" in m["gates"]:
        g = m["gates"]["int8_accuracy"]
        colour = "green" if g["passed"] else "yellow"
        console.print(f"[{colour}]{g['message']}[/{colour}]")
    if m.get("pruning"):
        b, a = m["pruning"]["before"], m["pruning"]["after"]
        console.print(
            f"[green]pruned[/green] params {b['params']:,} → {a['params']:,}, ONNX {b['onnx_bytes'] / 1e6:.1f} → "
            f"{a['onnx_bytes'] / 1e6:.1f} MB, latency {b['latency_ms_p50']:.1f} → {a['latency_ms_p50']:.1f} ms"
        )
    sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in m["models"].items())
    signed = "signed" if (result.bundle_dir / "bundle.sig").exists() else "unsigned"
    console.print(
        f"[green]Wrote[/green] {result.bundle_dir} ({signed}; deployed {m['deployed']}; {sizes}) and {result.archive.name}"
    )
    if result.triton_dir:
        console.print(f"[green]Wrote[/green] Triton model {result.triton_dir}")


def bench(
    target: Annotated[Path, typer.Argument(help="A bundle (directory or .tar.gz) or a model.pt.")],
    batch: Annotated[
        str, typer.Option(help="Batch sizes, comma-separated; the first is the latency batch.")
    ] = "1,8,32",
    threads: Annotated[int, typer.Option(help="Intra-op threads per backend.")] = 2,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="model.pt to add PyTorch eager when TARGET is a bundle."),
    ] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per measurement.")] = 50,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Where to write the JSON report.")
    ] = None,
    gate: Annotated[
        bool,
        typer.Option(
            "--gate/--no-gate", help="Fail when p95 exceeds the project's edge_p95_latency_ms."
        ),
    ] = True,
    project: ProjectOption = None,
) -> None:
    """Latency, throughput, peak memory and size of PyTorch eager, ONNX FP32 and ONNX INT8, side by side."""
    from visionline.export._bench import bench as run_bench
    from visionline.export._bench import print_report

    try:
        batches = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError as exc:
        raise ConfigError(
            f"--batch {batch!r} is not a list of integers; write e.g. --batch 1,8,32."
        ) from exc
    if not batches or min(batches) < 1 or threads < 1 or runs < 1:
        raise ConfigError(
            "--batch sizes, --threads and --runs must be positive; write e.g. --batch 1,8,32."
        )
    proj = _optional_project(project)
    budget = proj.config.goals.edge_p95_latency_ms if proj else None
    report = run_bench(target, batches, threads, torch_model=model, runs=runs, budget_ms=budget)
    print_report(report, console)
    path = json_out or Path("bench.json")
    report.write(path)
    console.print(f"[green]Wrote[/green] {path}")
    if gate:
        report.check_gate()


@keys_app.command("generate")
def keys_generate(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for visionline-signing.key and .pub.")
    ],
    force: Annotated[bool, typer.Option(help="Replace existing keys.")] = False,
) -> None:
    """Create an Ed25519 key pair: sign bundles with the .key, verify on the edge with the .pub."""
    from visionline.export._signing import generate_keys

    private, public = generate_keys(out, force)
    console.print(f"[green]Wrote[/green] {private} (secret, mode 600) and {public}")


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")],
    pubkey: PubkeyOption = None,
    trust_store: TrustStoreOption = None,
    require_signature: RequireSignatureOption = False,
) -> None:
    """Check that every file is listed in bundle.json with its sha256 and nothing else is there,
    and (with trusted keys) that a trusted key signed bundle.json."""
    from visionline_edge import release_unpacked, verify_bundle

    manifest = verify_bundle(
        bundle, pubkey, trust_store=trust_store, require_signature=require_signature
    )
    release_unpacked(manifest)  # an archive was unpacked only to be checked
    signer = manifest["_signed_by"]
    what = f"signature by trusted key {signer} and " if signer else ""
    console.print(
        f"[green]OK[/green] {manifest['name']} {manifest['version']}: {what}{len(manifest['files'])} file hashes verified"
    )
    if signer is None:
        console.print(
            "[yellow]note:[/yellow] no trusted key given, so authenticity was not checked; "
            "pass --trust-store DIR or --pubkey FILE."
        )


def register(app: typer.Typer) -> None:
    """Add export, bench, keys and bundle to the main app."""
    app.command("export")(export)
    app.command("bench")(bench)
    app.add_typer(keys_app, name="keys")
    app.add_typer(bundle_app, name="bundle")
