"""`export_anomaly_bundle`: a fitted anomaly detector → a parity-checked, signed edge bundle.

The bundle holds the detector's ONNX graph (memory bank and nearest-neighbour search inside;
outputs score, decision, anomaly_map) under `kind: anomaly`. The edge runtime derives the
defect score (normalised anomaly score, 0.5 at the threshold), two-class probabilities and a
map embedding from those outputs (`visionline_edge._anomaly`), so the server, the prediction log
and drift detection read it like any bundle. Reference statistics come from the same derivation.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.errors import ConfigError, DataError

if TYPE_CHECKING:
    from visionline.export._pipeline import ExportConfig, ExportResult

PARITY_IMAGES = 16


def _threshold(spec: Any, model_path: Path) -> float:
    threshold = float(spec.threshold)
    if not math.isfinite(threshold) or threshold <= 0:
        raise ConfigError(
            f"The anomaly model {model_path} has no positive threshold ({threshold}); fit it with "
            "'visionline anomaly fit' on a version whose val split holds good images."
        )
    return threshold


def export_anomaly_bundle(
    model_path: Path,
    out_dir: Path,
    config: ExportConfig,
    project: Any = None,
    signing_key: Path | None = None,
    lineage: dict[str, Any] | None = None,
) -> ExportResult:
    """Export, check parity against PyTorch, compute reference statistics, bundle and sign.

    With `config.data` the val split (else test) gives the parity images, the operating metrics
    at the bundle threshold and the drift reference; without it parity runs on noise images.
    """
    from visionline.anomaly import check_anomaly_parity, export_anomaly_onnx, load_anomaly_model
    from visionline.export import _data
    from visionline.export._bundle import (
        EDGE_RUNTIME,
        archive_bundle,
        bundle_lineage,
        finalize_bundle,
        staged_directory,
    )
    from visionline.export._gate import operating_metrics
    from visionline.export._pipeline import ExportResult, _class_labels
    from visionline.export._stats import reference_statistics
    from visionline.train._model import read_torch_file
    from visionline_edge import image_quality
    from visionline_edge._anomaly import (
        ANOMALY_CLASS,
        ANOMALY_KIND,
        EMBEDDING_GRID,
        anomaly_outputs,
    )

    if signing_key is not None and not signing_key.is_file():
        raise ConfigError(
            f"No signing key at {signing_key}; create one with 'visionline keys generate --out DIR'."
        )
    if config.data and project is None:
        raise ConfigError(
            "--data needs a project; run inside a visionline project or pass --project."
        )
    if config.int8 or config.prune or config.fp16:
        raise ConfigError(
            "An anomaly bundle is exported in FP32 only; drop --int8, --fp16 and --prune."
        )
    detector, spec = load_anomaly_model(model_path)
    extras = {
        k: v
        for k, v in read_torch_file(model_path, "refit it.").items()
        if k in ("dataset_version", "run_id")
    }
    threshold = _threshold(spec, model_path)
    prep = spec.preprocessing
    name = config.name or (project.config.name if project else model_path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(
            f"Bundle name {name!r} must be letters, digits, '.', '_' or '-'; pass --name."
        )
    target_frr = project.config.goals.operating_false_reject_rate if project else 0.02
    notes: list[str] = []
    out_dir = Path(out_dir).resolve()
    with staged_directory(out_dir) as stage:
        version = val = None
        if config.data:
            from visionline.data import DatasetRepo

            repo = DatasetRepo(project)
            version = repo.get(config.data)
            split = "val" if version.split_records("val") else "test"
            val = _data.load_split(version, repo.blobs, split, prep)
            parity_batch = prep.normalize(val.pixels[:PARITY_IMAGES])
        else:
            rng = np.random.default_rng(config.seed)
            pixels = rng.integers(0, 256, (4, prep.size, prep.size, 3), dtype=np.uint8)
            parity_batch = prep.normalize(pixels)
            notes.append(
                "No --data: parity ran on noise images, no metrics or reference statistics were computed."
            )
        model_file = export_anomaly_onnx(detector, spec, stage / "model.onnx")
        parity = check_anomaly_parity(detector, spec, model_file, parity_batch)
        gates: dict[str, Any] = {
            "parity_fp32": {
                **parity,
                "images": len(parity_batch),
                "source": "validation" if val is not None else "noise",
            }
        }
        metrics: dict[str, Any] = {}
        reference = None
        if val is not None:
            from visionline.export._onnx import onnx_session
            from visionline_edge._anomaly import SCORE_OUTPUTS

            session = onnx_session(model_file)
            batch = prep.normalize(val.pixels)
            parts = [
                dict(
                    zip(
                        SCORE_OUTPUTS,
                        session.run(list(SCORE_OUTPUTS), {"image": batch[i : i + 16]}),
                    )
                )
                for i in range(0, len(batch), 16)
            ]
            raw = {key: np.concatenate([p[key] for p in parts]) for key in SCORE_OUTPUTS}
            derived = anomaly_outputs(raw, threshold)
            if val.is_defect.all():
                raise DataError(
                    f"The {val.split} split of {version.short_id} holds no good images; the drift "
                    "reference needs them, so pass a version whose val split has good images."
                )
            metrics["fp32"] = {
                **operating_metrics(raw["score"], val.is_defect, threshold),
                "threshold": 0.5,
                "anomaly_threshold": threshold,
            }
            reference = reference_statistics(
                stage / "reference",
                derived["probabilities"][:, 1],
                derived["probabilities"],
                derived["embedding"],
                image_quality(val.pixels, prep.channel_order),
                config.seed,
            )
        size = prep.size
        classes = ["good", ANOMALY_CLASS]
        manifest = {
            "name": name,
            "version": config.version or datetime.now(UTC).strftime("%Y%m%d.%H%M%S"),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kind": ANOMALY_KIND,
            "classes": classes,
            "class_labels": _class_labels(classes, project),
            "threshold": 0.5,
            "threshold_source": (
                "anomaly threshold (val good images at the false-reject budget, set by the fit) "
                "mapped to 0.5 of the normalised anomaly score"
            ),
            "target_false_reject_rate": target_frr,
            "anomaly": {
                "threshold": threshold,
                "defect_score": "score / (score + threshold): monotone, 0.5 at the threshold, not calibrated",
                "embedding": f"anomaly map / threshold averaged on a {EMBEDDING_GRID}x{EMBEDDING_GRID} grid",
                "map_size": [size, size],
                "backbone": spec.backbone,
                "bank_size": detector.bank_size,
            },
            "preprocessing": prep.to_dict(),
            "signature": {
                "inputs": [{"name": "image", "dtype": "float32", "shape": [-1, 3, size, size]}],
                "outputs": [
                    {"name": "score", "dtype": "float32", "shape": [-1]},
                    {"name": "decision", "dtype": "bool", "shape": [-1]},
                    {"name": "anomaly_map", "dtype": "float32", "shape": [-1, 1, size, size]},
                ],
                "derived_outputs": [
                    {"name": "probabilities", "dtype": "float32", "shape": [-1, 2]},
                    {"name": "embedding", "dtype": "float32", "shape": [-1, EMBEDDING_GRID**2]},
                ],
            },
            "deployed": "fp32",
            "models": {
                "fp32": {
                    "file": "model.onnx",
                    "precision": "fp32",
                    "bytes": model_file.stat().st_size,
                }
            },
            "metrics": metrics,
            "gates": gates,
            "pruning": None,
            "reference": reference,
            "lineage": bundle_lineage(version, extras, lineage),
            "model_spec": spec.to_dict(),
            "export_config": config.model_dump(mode="json"),
            "edge_runtime": EDGE_RUNTIME,
        }
        finalize_bundle(stage, manifest, signing_key)
    archive = archive_bundle(out_dir, out_dir.with_name(out_dir.name + ".tar.gz"))
    final = json.loads((out_dir / "bundle.json").read_text())
    return ExportResult(out_dir, archive, final, None, notes)
