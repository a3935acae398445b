"""Pre-annotated defect regions for Label Studio from an anomaly model's heatmap.

The anomaly map (model-input frame, S × S) is thresholded at the model's anomaly threshold; each
connected component becomes one rectangle, mapped back through the preprocessing's resize
(stretch, letterbox or centre crop) to percent of the original image, as Label Studio stores
rectangles. The annotator then only corrects boxes instead of drawing them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.config import GOOD_CLASS
from visionline.errors import ConfigError
from visionline.preprocessing import Preprocessing, ResizeMode, decode_image

if TYPE_CHECKING:
    from PIL import Image

    from visionline.config import ProjectConfig
    from visionline.data import DatasetRepo

__all__ = ["AnomalyMaps", "Region", "add_anomaly_regions", "heatmap_regions", "open_anomaly_model"]

BATCH = 16


@dataclass(frozen=True)
class Region:
    """A rectangle in percent of the original image, with the map's peak inside it."""

    x: float
    y: float
    width: float
    height: float
    peak: float


def _frame(
    preprocessing: Preprocessing, width: int, height: int
) -> tuple[float, float, float, float]:
    """(scale_x, scale_y, left, top): original pixel (x, y) ↦ (x·sx + left, y·sy + top) in the
    model frame, for the preprocessing's resize mode."""
    size = preprocessing.size
    if preprocessing.resize_mode is ResizeMode.STRETCH:
        return size / width, size / height, 0.0, 0.0
    if preprocessing.resize_mode is ResizeMode.CENTER_CROP:
        scale = size / min(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        return scale, scale, -float((new_w - size) // 2), -float((new_h - size) // 2)
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return scale, scale, float((size - new_w) // 2), float((size - new_h) // 2)


def heatmap_regions(
    anomaly_map: np.ndarray,
    threshold: float,
    preprocessing: Preprocessing,
    width: int,
    height: int,
) -> list[Region]:
    """One rectangle per connected component of `anomaly_map > threshold` (8-connected)."""
    from scipy import ndimage

    above = np.asarray(anomaly_map) > threshold
    labels, count = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
    if not count:
        return []
    scale_x, scale_y, left, top = _frame(preprocessing, width, height)
    peaks = ndimage.maximum(anomaly_map, labels, index=np.arange(1, count + 1))
    regions = []
    for (rows, cols), peak in zip(ndimage.find_objects(labels), peaks):
        x0 = np.clip((cols.start - left) / scale_x, 0, width)
        x1 = np.clip((cols.stop - left) / scale_x, 0, width)
        y0 = np.clip((rows.start - top) / scale_y, 0, height)
        y1 = np.clip((rows.stop - top) / scale_y, 0, height)
        if x1 <= x0 or y1 <= y0:  # a component on the letterbox padding only
            continue
        regions.append(
            Region(
                round(100 * x0 / width, 3),
                round(100 * y0 / height, 3),
                round(100 * (x1 - x0) / width, 3),
                round(100 * (y1 - y0) / height, 3),
                float(peak),
            )
        )
    return sorted(regions, key=lambda r: -r.peak)


@dataclass(frozen=True)
class AnomalyMaps:
    """An anomaly model ready to map images: an edge bundle or a fitted detector file."""

    name: str
    threshold: float
    preprocessing: Preprocessing
    _run: Any

    def __call__(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores (N,) and maps (N, S, S) for decoded images."""
        return self._run(images)


def open_anomaly_model(model: str, tracking_uri: str) -> AnomalyMaps:
    """An anomaly bundle (directory or .tar.gz, run by the edge runtime) or an anomaly model
    (model.pt, runs:/ or models:/ URI, run by PyTorch)."""
    path = Path(model)
    if (path / "bundle.json").is_file() or path.name.endswith((".tar.gz", ".tgz")):
        from visionline_edge import load_bundle

        edge = load_bundle(path)
        if edge.anomaly_threshold is None:
            raise ConfigError(
                f"{model} is a classifier bundle; pass an anomaly bundle or model for regions."
            )

        def run_bundle(images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
            found = edge.predict(list(images))
            return found.anomaly_scores, found.anomaly_maps

        return AnomalyMaps(edge.name, edge.anomaly_threshold, edge.preprocessing, run_bundle)
    from visionline.anomaly import is_anomaly_checkpoint, load_anomaly_model, score_images
    from visionline.registry import resolve_model

    ref = resolve_model(model, tracking_uri)
    if not is_anomaly_checkpoint(ref.path):
        raise ConfigError(
            f"{model} is not an anomaly model; pass one written by 'visionline anomaly fit' "
            "or its bundle."
        )
    detector, spec = load_anomaly_model(ref.path)

    def run_detector(images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        return score_images(detector, spec.preprocessing, images, BATCH)

    return AnomalyMaps(Path(ref.path).stem, spec.threshold, spec.preprocessing, run_detector)


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


def _region_result(region: Region, label: str, width: int, height: int, n: int) -> dict[str, Any]:
    from visionline.data._labelstudio import REGION_NAME, TO_NAME

    return {
        "id": f"anomaly-{n}",
        "from_name": REGION_NAME,
        "to_name": TO_NAME,
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": region.x,
            "y": region.y,
            "width": region.width,
            "height": region.height,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def add_anomaly_regions(
    tasks: list[dict[str, Any]],
    repo: DatasetRepo,
    config: ProjectConfig,
    model: AnomalyMaps,
    model_version: str,
) -> int:
    """Add heatmap rectangles to the tasks' pre-annotations (beside the class choice of an
    existing prediction, or as a prediction of their own scored by the normalised anomaly
    score); returns how many tasks got regions. A region is labelled with the predicted defect
    class when the task has one, else with the project's first defect class."""
    defects = [name for name in config.model_classes() if name != GOOD_CLASS]
    if not defects:
        raise ConfigError("The project has no defect class to label regions with; add one.")
    with_regions = 0
    for chunk in _chunks(tasks, BATCH):
        images = [decode_image(repo.blobs.get(t["data"]["sha256"])) for t in chunk]
        scores, maps = model(images)
        for task, image, score, amap in zip(chunk, images, scores, maps):
            width, height = image.size
            regions = heatmap_regions(amap, model.threshold, model.preprocessing, width, height)
            if not regions:
                continue
            predictions = task.setdefault("predictions", [])
            choice = next(
                (
                    c
                    for p in predictions
                    for r in p.get("result", [])
                    for c in r.get("value", {}).get("choices", [])
                    if c in defects
                ),
                defects[0],
            )
            results = [
                _region_result(region, choice, width, height, i) for i, region in enumerate(regions)
            ]
            if predictions:
                predictions[0]["result"].extend(results)
            else:
                normalised = float(score) / (float(score) + model.threshold)
                predictions.append(
                    {
                        "model_version": model_version,
                        "score": round(normalised, 6),
                        "result": results,
                    }
                )
            task["data"]["anomaly_score"] = round(float(score), 6)
            with_regions += 1
    return with_regions
