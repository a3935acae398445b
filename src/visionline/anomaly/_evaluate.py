"""`evaluate_anomaly`: threshold on the val split's good images, image metrics with intervals on
the test split, pixel AUROC and AUPRO where masks exist, gates, a heatmap report, MLflow."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.anomaly._fit import score_images
from visionline.anomaly._metrics import anomaly_metrics
from visionline.anomaly._model import load_anomaly_model
from visionline.anomaly._pixel import aupro, content_region, pixel_auroc
from visionline.anomaly._records import images, mask_of
from visionline.anomaly._run import class_indices
from visionline.data import mask_in_model_frame
from visionline.errors import DataError
from visionline.evaluate import split_records

if TYPE_CHECKING:
    from visionline.config import Project
    from visionline.data import BlobStore, ImageRecord
    from visionline.evaluate import GateReport, OperatingPoint
    from visionline.preprocessing import Preprocessing

LOGGED = ("roc_auc", "defect_recall", "false_reject_rate", "pixel_auroc", "aupro")


@dataclass
class AnomalyEvalResult:
    """One evaluation: metrics (= metrics.json), threshold, gates and where files went."""

    metrics: dict[str, Any]
    operating_point: OperatingPoint
    gates: GateReport
    scores: np.ndarray
    labels: np.ndarray
    records: list[ImageRecord]
    report_path: Path | None = None
    metrics_path: Path | None = None
    warnings: list[str] = field(default_factory=list)


def pixel_metrics(
    records: list[ImageRecord], maps: np.ndarray, blobs: BlobStore, preprocessing: Preprocessing
) -> dict[str, Any]:
    """Pixel AUROC and AUPRO of the test images' maps against their stored masks."""
    masks = [mask_of(blobs, record) for record in records]
    sizes = [(record.width, record.height) for record in records]
    defect = [record.label != "good" for record in records]
    return pixel_metrics_from_masks(maps, masks, sizes, defect, preprocessing)


def pixel_metrics_from_masks(
    maps: np.ndarray,
    masks: list[np.ndarray | None],
    sizes: list[tuple[int, int]],
    defect: list[bool],
    preprocessing: Preprocessing,
) -> dict[str, Any]:
    """Pixel AUROC and AUPRO over the images whose masks are known (full-size bool masks),
    inside the image content (letterbox padding is neither defect nor good). Defect images
    with an empty or missing mask are left out: their defect cannot be located."""
    kept_maps, kept_masks, skipped = [], [], 0
    for amap, mask, (width, height), is_defect in zip(maps, masks, sizes, defect):
        if mask is None or (is_defect and not mask.any()):
            skipped += 1
            continue
        region = content_region(width, height, preprocessing)
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        kept_maps.append(amap[box])
        kept_masks.append(mask_in_model_frame(mask, preprocessing)[box])
    flat_maps = [m.ravel() for m in kept_maps]
    flat_masks = [m.ravel() for m in kept_masks]
    return {
        "pixel_auroc": pixel_auroc(flat_maps, flat_masks),
        "aupro": aupro(kept_maps, kept_masks) if kept_maps else float("nan"),
        "pixel_images": len(kept_maps),
        "pixel_images_without_mask": skipped,
    }


def evaluate_scores(
    model: Any,
    preprocessing: Preprocessing,
    project: Project,
    val: list[ImageRecord],
    test: list[ImageRecord],
    blobs: BlobStore,
    bootstrap: int = 1000,
    batch_size: int = 16,
) -> tuple[dict[str, Any], OperatingPoint, np.ndarray, np.ndarray]:
    """Threshold from val good scores, image and pixel metrics on `test`: (metrics, point, scores, maps)."""
    from visionline.evaluate import choose_operating_point

    class_names = project.config.model_classes()
    val_labels = class_indices(val, class_names)
    labels = class_indices(test, class_names)
    if not np.any(val_labels == 0):
        raise DataError(
            "The val split has no good images; add good images to it to set a threshold."
        )
    val_scores, _ = score_images(
        model,
        preprocessing,
        images(blobs, [r for r, y in zip(val, val_labels) if y == 0]),
        batch_size,
    )
    operating = choose_operating_point(val_scores, project.config.goals.operating_false_reject_rate)
    scores, maps = score_images(model, preprocessing, images(blobs, test), batch_size)
    metrics = anomaly_metrics(scores, labels, class_names, operating.threshold, bootstrap)
    metrics.update(pixel_metrics(test, maps, blobs, preprocessing))
    return metrics, operating, scores, maps


def evaluate_anomaly(
    project: Project,
    model_uri: str,
    dataset: str,
    split: str = "test",
    output_dir: Path | None = None,
    bootstrap: int = 1000,
    batch_size: int = 16,
    log: bool = True,
) -> AnomalyEvalResult:
    """Evaluate an anomaly model (path, runs:/ or models:/) on `dataset`'s `split`."""
    from visionline.anomaly._report import write_heatmap_report
    from visionline.data import DatasetRepo
    from visionline.evaluate import check_gates, jsonable
    from visionline.registry import resolve_model

    ref = resolve_model(model_uri, project.tracking_uri)
    model, spec = load_anomaly_model(ref.path)
    repo = DatasetRepo(project)
    version = repo.get(dataset)
    test = split_records(version, split)
    val = split_records(version, "val")
    metrics, operating, scores, maps = evaluate_scores(
        model, spec.preprocessing, project, val, test, repo.blobs, bootstrap, batch_size
    )
    gates = check_gates(metrics, project.config.goals)
    warnings = [operating.warning] if operating.warning else []
    if split == "val":
        warnings.append("The threshold was set on the split it is measured on; evaluate on 'test'.")
    metrics.update(
        operating_point=operating.to_dict(),
        gates=gates.to_dict(),
        model_uri=model_uri,
        run_id=ref.run_id,
        registered_model=ref.name,
        model_version=ref.version,
        dataset_version=version.id,
        split=split,
        kind="anomaly",
        preprocessing=spec.preprocessing.to_dict(),
        warnings=warnings,
    )
    labels = class_indices(test, project.config.model_classes())
    result = AnomalyEvalResult(metrics, operating, gates, scores, labels, test, warnings=warnings)
    tag = (f"{ref.name}-v{ref.version}" if ref.name else ref.run_id) or ref.path.stem
    out = output_dir or project.reports_dir / f"anomaly-eval-{tag}-{version.short_id}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    result.metrics_path = out / "metrics.json"
    result.metrics_path.write_text(json.dumps(jsonable(metrics), indent=2))
    result.report_path = write_heatmap_report(
        out / "report.html",
        result,
        maps,
        repo.blobs,
        spec.preprocessing,
        f"Anomaly evaluation of {model_uri}",
    )
    if log and ref.run_id:
        _log_to_mlflow(result, ref, project.tracking_uri, split)
    return result


def _log_to_mlflow(result: AnomalyEvalResult, ref: Any, tracking_uri: str, split: str) -> None:
    from visionline.evaluate import log_evaluation

    logged = {
        f"{split}_{key}": float(result.metrics[key])
        for key in LOGGED
        if result.metrics[key] is not None and math.isfinite(result.metrics[key])
    }
    log_evaluation(
        ref,
        tracking_uri,
        logged,
        result.operating_point.threshold,
        result.gates,
        (result.report_path, result.metrics_path),
    )
