"""`export_model`: model file → optimised, gated, signed edge bundle (+ Triton repository)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visionline.errors import ConfigError, DataError, GateFailedError
from visionline.export._options import Calibration

PARITY_IMAGES = 64
PRUNE_CALIBRATION_IMAGES = 400
"""Train images on which pruning ranks channels and refits the pruned blocks (benchmarks/prune.py)."""


class ExportConfig(BaseModel):
    """Export options; saved into bundle.json."""

    model_config = ConfigDict(extra="forbid")

    data: str | None = None
    int8: bool | None = None
    qat: bool = False
    """When post-training INT8 fails its gate, fine-tune quantisation-aware and quantise again."""
    qat_epochs: int = Field(2, ge=1, le=50)
    fp16: bool = False
    calibration: Calibration = Calibration.AUTO
    calibration_images: int = Field(200, ge=1, le=100_000)
    tolerance: float = Field(0.01, ge=0.0, le=1.0)
    parity_atol: float = Field(1e-4, gt=0.0)
    prune: float = Field(0.0, ge=0.0, lt=0.9)
    finetune_epochs: int = Field(0, ge=0, le=100)
    name: str | None = None
    version: str | None = None
    triton_version: int = Field(1, ge=1)
    seed: int = 0


@dataclass
class ExportResult:
    bundle_dir: Path
    archive: Path
    manifest: dict[str, Any]
    triton_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def _checkpoint_extras(path: Path) -> dict[str, Any]:
    from visionline.train._model import read_torch_file

    payload = read_torch_file(path, "retrain it with this visionline version.")
    skip = {"format", "spec", "state_dict"}
    return {k: v for k, v in payload.items() if k not in skip and _jsonable(v)}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return False
    return True


def _class_labels(class_names: list[str], project: Any) -> dict[str, str]:
    labels = {"good": "good"}
    defect_labels = project.config.defect_labels() if project else {}
    for name in class_names[1:]:
        owner = next(
            (label for label, subs in defect_labels.items() if name in subs or name == label), None
        )
        labels[name] = owner or (next(iter(defect_labels)) if len(defect_labels) == 1 else "defect")
    return labels


def _calibration_set(train: Any, prep: Any, config: ExportConfig) -> tuple[Any, list[str]]:
    """Normalised calibration images stratified by class, and their classes."""
    from visionline.export import _quantize

    picked = _quantize.stratified_indices(train.classes, config.calibration_images, config.seed)
    return prep.normalize(train.pixels[picked]), [train.classes[i] for i in picked]


def _search(
    fp32_path: Path,
    int8_path: Path,
    calib: tuple[Any, list[str]],
    threshold: float,
    config: ExportConfig,
    bar: Any,
) -> dict[str, Any]:
    from visionline.export import _quantize

    return _quantize.search_int8(
        fp32_path, int8_path, calib[0], calib[1], threshold, config.calibration,
        config.tolerance, progress=bar,
    ).to_dict()


def _quantisation_aware(
    model: Any,
    spec: Any,
    train: Any,
    calib: tuple[Any, list[str]],
    int8_path: Path,
    val_batch: Any,
    fp32_scores: Any,
    val: Any,
    threshold: float,
    config: ExportConfig,
    bar: Any,
) -> tuple[dict[str, Any], Any, Any, Any]:
    """QAT a copy of `model`, quantise it into `int8_path`, gate it against the FP32 scores."""
    import copy
    import tempfile

    from visionline.export import _onnx, _qat
    from visionline.export._gate import compare_decisions

    student = copy.deepcopy(model)
    report = _qat.qat_finetune(
        student, spec, train, config.qat_epochs, seed=config.seed, progress=bar
    )
    with tempfile.TemporaryDirectory(prefix="visionline-qat-") as tmp:
        qat_fp32 = _onnx.export_onnx(
            student, spec.preprocessing.size, Path(tmp) / "model.qat.onnx", spec.temperature
        )
        choice = _search(qat_fp32, int8_path, calib, threshold, config, bar)
    probs, emb = _onnx.onnx_predict(int8_path, val_batch)
    gate = compare_decisions(
        "INT8 (quantisation-aware)", fp32_scores, 1.0 - probs[:, 0], val.is_defect, threshold,
        config.tolerance, split=val.split,
    )
    return {**choice, "qat": report.to_dict()}, gate, probs, emb


def export_model(
    model_path: Path,
    out_dir: Path,
    config: ExportConfig,
    project: Any = None,
    signing_key: Path | None = None,
    triton_repo: Path | None = None,
    lineage: dict[str, Any] | None = None,
    progress: bool = True,
    prebuilt: dict[str, Path] | None = None,
    int8_choice: dict[str, Any] | None = None,
) -> ExportResult:
    """Export, check parity, quantise and gate, compute reference statistics, bundle and sign.

    Work happens in a staging directory that replaces `out_dir` only when every check passed, so
    a failed gate leaves no half-written bundle behind. `prebuilt` ({"fp32": path, "int8": path})
    reuses ONNX files that pipeline steps already made from this model; they are still checked
    (`int8_choice` is what the quantise step measured for that INT8 file). An INT8 model that its
    paired gate refuses is left out: the FP32 bundle is written, with the gate's evidence and a note.
    """
    from rich.progress import Progress

    from visionline.evaluate import conformal_threshold
    from visionline.export import _data, _onnx, _prune, _quantize
    from visionline.export._bundle import (
        EDGE_RUNTIME,
        archive_bundle,
        bundle_lineage,
        finalize_bundle,
        staged_directory,
    )
    from visionline.export._gate import compare_decisions, operating_metrics
    from visionline.export._stats import reference_statistics
    from visionline.train import load_model
    from visionline_edge import image_quality

    if signing_key is not None and not signing_key.is_file():
        raise ConfigError(
            f"No signing key at {signing_key}; create one with 'visionline keys generate --out DIR'."
        )
    if config.data and project is None:
        raise ConfigError(
            "--data needs a project; run inside a visionline project or pass --project."
        )
    if config.qat and config.int8 is False:
        raise ConfigError(
            "Quantisation-aware training makes an INT8 model; drop --no-int8 or drop --int8 qat."
        )
    if (config.int8 or config.qat) and not config.data:
        raise ConfigError(
            "INT8 calibration and its accuracy gate need images; pass --data VERSION or --no-int8."
        )
    if config.prune and not config.data:
        raise ConfigError(
            "Pruning needs --data VERSION for its fine-tune and before/after accuracy."
        )
    from visionline.anomaly import is_anomaly_checkpoint

    if is_anomaly_checkpoint(model_path):
        if triton_repo is not None:
            raise ConfigError(
                "An anomaly model has no Triton export; drop --triton (serve its bundle instead)."
            )
        from visionline.export._anomaly_bundle import export_anomaly_bundle

        return export_anomaly_bundle(model_path, out_dir, config, project, signing_key, lineage)
    model, spec = load_model(model_path)
    extras = _checkpoint_extras(model_path)
    prep = spec.preprocessing
    target_frr = project.config.goals.operating_false_reject_rate if project else 0.02
    name = config.name or (project.config.name if project else model_path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(
            f"Bundle name {name!r} must be letters, digits, '.', '_' or '-'; pass --name."
        )
    notes: list[str] = []
    int8 = bool(config.data) if config.int8 is None else config.int8
    out_dir = out_dir.resolve()
    with (
        staged_directory(out_dir) as stage,
        Progress(transient=True, disable=not progress) as bar,
    ):
        version = val = train = None
        if config.data:
            from visionline.data import DatasetRepo

            repo = DatasetRepo(project)
            version = repo.get(config.data)
            from visionline.evaluate import threshold_split

            val_split = threshold_split(version)
            val_split = val_split if version.split_records(val_split) else "test"
            val = _data.load_split(version, repo.blobs, val_split, prep, progress=bar)
            if int8 and (val.is_defect.all() or not val.is_defect.any()):
                raise DataError(
                    f"The {val_split} split of {version.short_id} needs good and defect images for the "
                    "INT8 accuracy gate; add both or export with --no-int8."
                )
            if int8 or config.prune:
                limit = max(4 * config.calibration_images, 10_000 if config.prune else 0)
                train = _data.load_split(
                    version, repo.blobs, "train", prep, limit, config.seed, bar
                )
        prune_report = None
        if config.prune:
            before = _prune.footprint(model, prep, val, target_frr, spec.temperature)
            reference = copy.deepcopy(model)
            calib = train.pixels[:PRUNE_CALIBRATION_IMAGES]
            _prune.prune_channels(model, prep.size, config.prune, pixels=calib, preprocessing=prep)
            _prune.recover(model, reference, prep, calib)
            if config.finetune_epochs:
                _prune.finetune(
                    model,
                    spec.class_names,
                    prep,
                    train,
                    config.finetune_epochs,
                    seed=config.seed,
                    progress=bar,
                )
            after = _prune.footprint(model, prep, val, target_frr, spec.temperature)
            prune_report = _prune.PruneReport(
                config.prune, config.finetune_epochs, before, after
            )
            drop = before.metrics.get("defect_recall", 0.0) - after.metrics.get(
                "defect_recall", 0.0
            )
            if drop > config.tolerance:
                raise GateFailedError(
                    f"Pruning {config.prune:.0%} lost {drop:.1%} defect recall at the false-reject budget "
                    f"({before.metrics['defect_recall']:.1%} → {after.metrics['defect_recall']:.1%}, "
                    f"tolerance {config.tolerance:.1%}); prune less or fine-tune longer (--finetune-epochs)."
                )

        task = bar.add_task("export ONNX FP32", total=None)
        prebuilt = prebuilt or {}
        if "fp32" in prebuilt:
            fp32_path = Path(shutil.copyfile(prebuilt["fp32"], stage / "model.onnx"))
        else:
            fp32_path = _onnx.export_onnx(
                model, prep.size, stage / "model.onnx", spec.temperature
            )
        parity_pixels = (
            val.pixels[:PARITY_IMAGES] if val is not None else _data.synthetic_pixels(prep.size)
        )
        parity = _onnx.check_parity(
            model,
            fp32_path,
            prep.normalize(parity_pixels),
            spec.temperature,
            config.parity_atol,
            "validation" if val is not None else "synthetic",
        )
        bar.remove_task(task)
        if val is None:
            notes.append(
                "No --data: parity ran on synthetic images, no threshold or reference statistics were computed."
            )

        models = {"fp32": {"file": "model.onnx", "precision": "fp32"}}
        deployed = "fp32"
        gates: dict[str, Any] = {"parity_fp32": parity.to_dict()}
        metrics: dict[str, Any] = {}
        threshold = float(extras.get("threshold", 0.5))
        threshold_source = "checkpoint" if "threshold" in extras else "default 0.5"
        if val is not None:
            val_batch = prep.normalize(val.pixels)
            fp32_probs, fp32_emb = _onnx.onnx_predict(fp32_path, val_batch)
            fp32_scores = 1.0 - fp32_probs[:, 0]
            if (~val.is_defect).any():
                threshold = conformal_threshold(fp32_scores[~val.is_defect], target_frr)
                threshold_source = (
                    f"{val.split} good scores, split-conformal rank for false-reject rate {target_frr}"
                )
            metrics["fp32"] = operating_metrics(fp32_scores, val.is_defect, threshold)
            ref_probs, ref_emb = fp32_probs, fp32_emb
        if int8:
            calib = None
            if "int8" in prebuilt:
                int8_path = Path(shutil.copyfile(prebuilt["int8"], stage / "model.int8.onnx"))
                choice = dict(int8_choice or {"method": config.calibration.value})
            else:
                calib = _calibration_set(train, prep, config)
                int8_path = stage / "model.int8.onnx"
                choice = _search(fp32_path, int8_path, calib, threshold, config, bar)
            int8_probs, int8_emb = _onnx.onnx_predict(int8_path, val_batch)
            gate = compare_decisions(
                "INT8", fp32_scores, 1.0 - int8_probs[:, 0], val.is_defect, threshold,
                config.tolerance, split=val.split,
            )
            if not gate.passed and config.qat:
                # Post-training INT8 was refused: fine-tune a copy under fake quantisation and
                # quantise that; the same gate judges it against the original FP32 decisions.
                refused = {**gate.to_dict(), "quantisation": choice}
                calib = calib or _calibration_set(train, prep, config)
                choice, gate, int8_probs, int8_emb = _quantisation_aware(
                    model, spec, train, calib, int8_path, val_batch, fp32_scores, val, threshold,
                    config, bar,
                )
                choice["qat"]["post_training_gate"] = refused
                notes.append(
                    f"Post-training INT8 was refused, so a {config.qat_epochs}-epoch "
                    "quantisation-aware fine-tune made the INT8 model judged below."
                )
            gates["int8_accuracy"] = {**gate.to_dict(), "quantisation": choice}
            if gate.passed:
                metrics["int8"] = gate.candidate
                models["int8"] = {
                    "file": "model.int8.onnx",
                    "precision": "int8",
                    "calibration": choice.get("method"),
                    "float_nodes": choice.get("float_nodes", []),
                    "float_groups": choice.get("float_groups", []),
                    "quantisation_aware": "qat" in choice,
                }
                deployed, ref_probs, ref_emb = "int8", int8_probs, int8_emb
            else:
                int8_path.unlink()
                notes.append(gate.message() + "; the bundle deploys FP32.")
        if config.fp16:
            _quantize.convert_fp16(fp32_path, stage / "model.fp16.onnx")
            models["fp16"] = {"file": "model.fp16.onnx", "precision": "fp16", "target": "gpu"}

        reference = None
        if val is not None:
            scores = 1.0 - ref_probs[:, 0]
            quality = image_quality(val.pixels, prep.channel_order)
            reference = reference_statistics(
                stage / "reference", scores, ref_probs, ref_emb, quality, config.seed
            )
        for entry in models.values():
            entry["bytes"] = (stage / entry["file"]).stat().st_size
        embedding_dim = int(model.head.in_features)
        manifest = {
            "name": name,
            "version": config.version or datetime.now(UTC).strftime("%Y%m%d.%H%M%S"),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "classes": list(spec.class_names),
            "class_labels": _class_labels(spec.class_names, project),
            "threshold": float(threshold),
            "threshold_source": threshold_source,
            "target_false_reject_rate": target_frr,
            "preprocessing": prep.to_dict(),
            "signature": {
                "inputs": [
                    {
                        "name": "image",
                        "dtype": "float32",
                        "shape": [-1, 3, prep.size, prep.size],
                    }
                ],
                "outputs": [
                    {
                        "name": "probabilities",
                        "dtype": "float32",
                        "shape": [-1, len(spec.class_names)],
                    },
                    {"name": "embedding", "dtype": "float32", "shape": [-1, embedding_dim]},
                ],
            },
            "deployed": deployed,
            "models": models,
            "metrics": metrics,
            "gates": gates,
            "pruning": prune_report.to_dict() if prune_report else None,
            "reference": reference,
            "lineage": bundle_lineage(
                version, extras, lineage, training_metrics=extras.get("metrics")
            ),
            "model_spec": {**spec.to_dict(), "backbone_embedding_dim": embedding_dim},
            "export_config": config.model_dump(mode="json"),
            "edge_runtime": EDGE_RUNTIME,
        }
        finalize_bundle(stage, manifest, signing_key)
    archive = archive_bundle(out_dir, out_dir.with_name(out_dir.name + ".tar.gz"))
    triton_dir = None
    if triton_repo is not None:
        from visionline.export._triton import write_triton_repo

        triton_dir = write_triton_repo(
            triton_repo,
            name,
            out_dir / "model.onnx",
            list(spec.class_names),
            prep.size,
            embedding_dim,
            version=config.triton_version,
        )
    final = json.loads((out_dir / "bundle.json").read_text())
    return ExportResult(out_dir, archive, final, triton_dir, notes)
