"""Edge steps: export → quantise → bundle → benchmark → register → deploy.

`export` and `quantise` make the ONNX files with their own checks (parity, INT8 accuracy gate);
`bundle` packs exactly those files with reference statistics and a signature; `benchmark` times
the bundle that ships; `register` and `deploy` change external state and are never cached.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from visionline.errors import ConfigError, ServiceUnavailableError
from visionline.pipeline._graph import Artifact, StepContext, file_digest, relative

PARITY_IMAGES = 64


def _model(ctx: StepContext) -> tuple[Any, Any]:
    from visionline.train import load_model

    return load_model(ctx.artifact("model").resolve(ctx.project))


def _split(ctx: StepContext, split: str, spec: Any, limit: int | None = None) -> Any:
    from visionline.data import DatasetRepo
    from visionline.export._data import load_split

    repo = DatasetRepo(ctx.project)
    version = repo.get(ctx.artifact("dataset").id)
    return load_split(version, repo.blobs, split, spec.preprocessing, limit)


def _threshold_split(ctx: StepContext) -> str:
    """The split that sets the bundle's threshold (calib when the version has one), so the
    quantise step judges INT8 at the same threshold and on the same images as the bundle's gate."""
    from visionline.data import DatasetRepo
    from visionline.evaluate import threshold_split

    return threshold_split(DatasetRepo(ctx.project).get(ctx.artifact("dataset").id))


def _is_anomaly(ctx: StepContext) -> bool:
    return ctx.artifact("model").meta.get("kind") == "anomaly"


def _export_anomaly(ctx: StepContext) -> dict[str, Artifact]:
    """The detector's ONNX graph (bank and search inside), refused unless scores, maps and
    decisions match PyTorch on validation images."""
    from visionline.anomaly import check_anomaly_parity, export_anomaly_onnx, load_anomaly_model

    detector, spec = load_anomaly_model(ctx.artifact("model").resolve(ctx.project))
    val = _split(ctx, "val", spec, PARITY_IMAGES)
    path = export_anomaly_onnx(detector, spec, ctx.workdir / "model.onnx")
    parity = check_anomaly_parity(detector, spec, path, spec.preprocessing.normalize(val.pixels))
    return {
        "onnx": Artifact(
            "onnx", file_digest(path), relative(ctx.project, path),
            {"precision": "fp32", "kind": "anomaly", "parity": parity},
        )
    }


def export(ctx: StepContext) -> dict[str, Artifact]:
    """ONNX FP32, refused unless it matches PyTorch on validation images."""
    from visionline.export import check_parity, export_onnx

    if _is_anomaly(ctx):
        return _export_anomaly(ctx)
    model, spec = _model(ctx)
    val = _split(ctx, "val", spec, PARITY_IMAGES)
    path = export_onnx(model, spec.preprocessing.size, ctx.workdir / "model.onnx", spec.temperature)
    parity = check_parity(
        model, path, spec.preprocessing.normalize(val.pixels), spec.temperature,
        ctx.settings["parity_atol"],
    )
    return {
        "onnx": Artifact(
            "onnx", file_digest(path), relative(ctx.project, path),
            {"precision": "fp32", "parity": parity.to_dict()},
        )
    }


def quantise(ctx: StepContext) -> dict[str, Artifact]:
    """INT8 chosen by measurement on class-stratified train images (calibration method, float
    node groups), then judged by the paired gate on the threshold split (calib, else val), which
    calibration did not see, at the bundle's threshold; a
    refused INT8 model is recorded with the reason and the bundle ships FP32. An anomaly
    model is not quantised here: its bundle ships FP32, and the step records that."""
    from visionline.evaluate import conformal_threshold
    from visionline.export import Calibration, compare_decisions
    from visionline.export._onnx import onnx_predict
    from visionline.export._quantize import search_int8, speedup, stratified_indices

    if _is_anomaly(ctx):
        return {
            "int8": Artifact(
                "note", "anomaly-fp32-only",
                meta={"precision": "int8", "accepted": False,
                      "gate": "not quantised: anomaly bundles ship FP32"},
            )
        }
    _, spec = _model(ctx)
    settings = ctx.settings
    fp32 = ctx.artifact("onnx").resolve(ctx.project)
    prep = spec.preprocessing
    train = _split(ctx, "train", spec, 4 * settings["calibration_images"])
    picked = stratified_indices(train.classes, settings["calibration_images"])
    val = _split(ctx, _threshold_split(ctx), spec)
    batch = prep.normalize(val.pixels)
    fp32_scores = 1.0 - onnx_predict(fp32, batch)[0][:, 0]
    target = ctx.project.config.goals.operating_false_reject_rate
    threshold = conformal_threshold(fp32_scores[~val.is_defect], target)
    path = ctx.workdir / "model.int8.onnx"
    choice = search_int8(
        fp32, path, prep.normalize(train.pixels[picked]), [train.classes[i] for i in picked],
        threshold, Calibration(settings["calibration"]), settings["tolerance"],
    )
    int8_scores = 1.0 - onnx_predict(path, batch)[0][:, 0]
    gate = compare_decisions(
        "INT8", fp32_scores, int8_scores, val.is_defect, threshold, settings["tolerance"]
    )
    verdict = "no significant loss" if gate.passed else "refused: " + ", ".join(
        name for name, bad in (("recall", gate.recall_loss_significant),
                               ("false rejects", gate.frr_rise_significant)) if bad
    ) + " worse"
    return {
        "int8": Artifact(
            "onnx", file_digest(path), relative(ctx.project, path),
            {
                "precision": "int8",
                "accepted": gate.passed,
                "speedup_vs_fp32": round(speedup(fp32, path, one=batch[:1]), 2),
                "gate": verdict,
                "calibration": choice.method,
                "float_groups": len(choice.float_groups),
                "evidence": gate.to_dict(),
                "quantisation": choice.to_dict(),
            },
        )
    }


def bundle(ctx: StepContext) -> dict[str, Artifact]:
    """The signed edge bundle from exactly the files the export and quantise steps checked."""
    from visionline.export import ExportConfig, export_model

    model = ctx.artifact("model")
    model_path = model.resolve(ctx.project)
    onnx_files = [a for out in ctx.inputs.values() for a in out.values() if a.kind == "onnx"]
    prebuilt = {a.meta["precision"]: a.resolve(ctx.project) for a in onnx_files}
    int8 = next((a for a in onnx_files if a.meta["precision"] == "int8"), None)
    use_int8 = int8 is not None  # export re-runs the same gate: a refusal lands in bundle.json
    key = ctx.settings.get("signing_key")
    signing_key = (ctx.project.root / key) if key else None
    quantise = ctx.pipeline.quantise
    config = ExportConfig(
        data=ctx.artifact("dataset").id,
        int8=use_int8,
        calibration=quantise.calibration,
        calibration_images=quantise.calibration_images,
        tolerance=quantise.tolerance,
        parity_atol=ctx.pipeline.export.parity_atol,
        name=ctx.project.config.name,
    )
    if not use_int8:
        prebuilt.pop("int8", None)
    result = export_model(
        model_path, ctx.workdir / "bundle", config, project=ctx.project, signing_key=signing_key,
        lineage={"mlflow_run_id": model.meta.get("run_id")}, progress=False, prebuilt=prebuilt,
        int8_choice=int8.meta.get("quantisation") if int8 else None,
    )
    manifest = result.manifest
    return {
        "bundle": Artifact(
            "bundle",
            file_digest(result.bundle_dir / "bundle.json"),
            relative(ctx.project, result.bundle_dir),
            {
                "deployed": manifest["deployed"],
                "threshold": manifest["threshold"],
                "signed": signing_key is not None,
                "int8_rejected": bool(int8 and manifest["deployed"] != "int8"),
            },
        )
    }


def benchmark(ctx: StepContext) -> dict[str, Artifact]:
    """Latency of the bundle that ships (and of PyTorch eager) against the edge budget."""
    from visionline.export import bench

    model_path = ctx.artifact("model").resolve(ctx.project)
    bundle_dir = ctx.artifact("bundle").resolve(ctx.project)
    if _is_anomaly(ctx):  # PyTorch eager runs classifiers only; the bundle's ONNX is timed
        model_path = None
    report = bench(
        bundle_dir, [1, 8], ctx.settings["threads"], torch_model=model_path,
        runs=ctx.settings["runs"], budget_ms=ctx.project.config.goals.edge_p95_latency_ms,
    )
    path = report.write(ctx.workdir / "bench.json")
    if ctx.settings["enforce"]:
        report.check_gate()
    latency = {k: v["latency_ms"] for k, v in report.backends.items()}
    return {
        "benchmark": Artifact(
            "benchmark", file_digest(path), relative(ctx.project, path),
            {
                "deployed": report.deployed,
                "p50_ms": latency[report.deployed]["p50"],
                "p95_ms": latency[report.deployed]["p95"],
                "ratios": report.ratios(),
                "gate": report.gate(),
            },
        )
    }


def _register_and_promote(
    ctx: StepContext, name: str, run_id: str, kind: str | None
) -> tuple[str, bool, list[str]]:
    """Register `run_id` once as challenger and promote it through the registry's champion
    comparison (a verdict already recorded for it is kept); (version, promoted, reasons)."""
    from visionline.registry import CHAMPION, promote, show_model, version_for_run
    from visionline.registry import register as register_run

    version = version_for_run(ctx.project, name, run_id)
    if version is None:
        tags = {"kind": kind} if kind else None
        version = register_run(ctx.project, run_id, name, tags=tags)["version"]
    row = show_model(ctx.project, name, version)[0]
    decided = row["tags"].get("promotion", "")
    promoted = CHAMPION in row["aliases"]
    reasons = ["already champion"] if promoted else ["left to the caller (register.promote: false)"]
    if not promoted and decided:  # this run was judged before: the registry keeps the verdict
        reasons = [decided.partition(": ")[2]]
    elif not promoted and ctx.settings["promote"]:
        decision = promote(ctx.project, name)
        promoted, reasons = decision.promoted, decision.reasons
    return version, promoted, reasons


def register(ctx: StepContext) -> dict[str, Artifact]:
    """Register the trained run (once per run) as challenger; promote it through the registry's
    champion comparison on the same test images. With `train.method: both` the anomaly run is
    registered and judged first, so the supervised model then competes with it as well."""
    model = ctx.artifact("model")
    run_id = model.meta.get("run_id")
    if not run_id:
        raise ConfigError("The train step logged no MLflow run, so nothing can be registered.")
    name = ctx.project.config.name
    meta: dict[str, Any] = {}
    anomaly = ctx.optional("anomaly_model")
    if anomaly is not None and anomaly.meta.get("run_id"):
        a_version, a_promoted, a_reasons = _register_and_promote(
            ctx, name, anomaly.meta["run_id"], "anomaly"
        )
        meta["anomaly"] = {"version": a_version, "promoted": a_promoted, "reasons": a_reasons}
    version, promoted, reasons = _register_and_promote(ctx, name, run_id, model.meta.get("kind"))
    return {
        "registered_model": Artifact(
            "registered_model", f"{name}/{version}",
            meta={"name": name, "version": version, "promoted": promoted, "reasons": reasons,
                  **meta},
        )
    }


def deploy(ctx: StepContext) -> dict[str, Artifact]:
    """Copy the bundle into the model repository as the registered version (atomically) and,
    when a server is configured, ask it to load that version: it verifies, warms up and swaps."""
    registered = ctx.artifact("registered_model")
    bundle_artifact = ctx.artifact("bundle")
    name, version = registered.meta["name"], registered.meta["version"]
    if ctx.settings["only_champion"] and not registered.meta["promoted"]:
        return {
            "deployment": Artifact(
                "deployment", f"{name}/{version}:skipped",
                meta={"deployed": False, "reason": "not promoted: " + "; ".join(registered.meta["reasons"])},
            )
        }
    repository = ctx.project.root / ctx.settings["repository"]
    target = repository / name / version
    store = ctx.settings.get("trust_store")
    install_bundle(
        bundle_artifact.resolve(ctx.project),
        target,
        trust_store=(ctx.project.root / store) if store else None,
        require_signature=bool(ctx.settings.get("require_signature")),
    )
    server = ctx.settings.get("server")
    if server:
        hot_swap(server, name, version)
    return {
        "deployment": Artifact(
            "deployment", f"{name}/{version}", relative(ctx.project, target),
            {"deployed": True, "server": server, "bundle": bundle_artifact.id},
        )
    }


def install_bundle(
    bundle_dir: Path,
    target: Path,
    *,
    trust_store: Path | None = None,
    require_signature: bool = False,
) -> None:
    """Copy the bundle in beside the target, verify the copy with the edge runtime (and its
    signature against `trust_store`), and only then rename it into place (see `staged_directory`):
    a bundle that fails verification never reaches the model repository."""
    from visionline.export._bundle import staged_directory
    from visionline_edge import verify_bundle

    if (target / "bundle.json").is_file() and file_digest(target / "bundle.json") == file_digest(
        bundle_dir / "bundle.json"
    ):
        verify_bundle(target, trust_store=trust_store, require_signature=require_signature)
        return
    with staged_directory(target) as stage:
        shutil.copytree(bundle_dir, stage, dirs_exist_ok=True)
        verify_bundle(stage, trust_store=trust_store, require_signature=require_signature)


def hot_swap(server: str, name: str, version: str, timeout_s: float = 120.0) -> None:
    """Ask a running server to (re)load `name` and wait until `version` is ready."""
    import os

    import httpx

    admin_key = os.environ.get("VISIONLINE_ADMIN_KEY")
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    base = server.rstrip("/")
    try:
        with httpx.Client(base_url=base, timeout=timeout_s, headers=headers) as client:
            response = client.post(f"/v2/repository/models/{name}/load")
            if response.status_code >= 400:
                raise ServiceUnavailableError(
                    f"Server {base} refused to load {name} v{version} "
                    f"({response.status_code}: {response.text[:200]}); see the server log."
                )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if client.get(f"/v2/models/{name}/versions/{version}/ready").status_code == 200:
                    return
                time.sleep(0.2)
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(
            f"Server {base} is not reachable ({exc.__class__.__name__}); start it or fix "
            "pipeline.deploy.server."
        ) from exc
    raise ServiceUnavailableError(
        f"Server {base} did not report {name} v{version} ready within {timeout_s:.0f} s; see its log."
    )
