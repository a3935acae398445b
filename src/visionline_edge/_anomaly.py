"""What an anomaly bundle's graph outputs mean to the rest of the lifecycle.

An anomaly detector's graph gives a raw image score (a patch distance, higher = stranger), a
decision at the bundle's anomaly threshold and an anomaly map. The server, the prediction log,
drift detection and the dashboards all read a defect score in [0, 1] with class probabilities,
so an anomaly bundle adds two derived outputs, computed here and nowhere else:

- `probabilities` (N, 2) over (good, anomaly) with p(anomaly) = score / (score + threshold): the
  normalised anomaly score. It is monotone in the raw score and exactly 0.5 at the threshold, so
  it flags the same images; it is not a calibrated probability.
- `embedding` (N, GRID²): the anomaly map divided by the threshold, averaged over a GRID × GRID
  grid: where on the image the detector sees anomalies, which is what embedding drift watches.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ANOMALY_CLASS",
    "ANOMALY_KIND",
    "EMBEDDING_GRID",
    "SCORE_OUTPUTS",
    "anomaly_outputs",
    "map_embedding",
    "normalised_score",
]

ANOMALY_KIND = "anomaly"
ANOMALY_CLASS = "anomaly"
EMBEDDING_GRID = 8
SCORE_OUTPUTS = ("score", "decision", "anomaly_map")
"""The detector graph's outputs, in order (`visionline.anomaly` exports them under these names)."""


def normalised_score(scores: np.ndarray, threshold: float) -> np.ndarray:
    """score / (score + threshold), in [0, 1) for non-negative distances; 0.5 at the threshold."""
    scores = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
    return scores / (scores + float(threshold))


def map_embedding(maps: np.ndarray, threshold: float, grid: int = EMBEDDING_GRID) -> np.ndarray:
    """(N, S, S) or (N, 1, S, S) anomaly maps → (N, grid²) block means of map / threshold."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 4:
        maps = maps[:, 0]
    n, height, width = maps.shape
    rows = np.linspace(0, height, grid + 1).astype(int)[:-1]
    cols = np.linspace(0, width, grid + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(maps, rows, axis=1), cols, axis=2)
    counts = np.outer(np.diff(np.append(rows, height)), np.diff(np.append(cols, width)))
    return (sums / counts / float(threshold)).reshape(n, grid * grid).astype(np.float32)


def anomaly_outputs(outputs: dict[str, np.ndarray], threshold: float) -> dict[str, np.ndarray]:
    """The graph's outputs plus the derived `probabilities` and `embedding` (see the module)."""
    q = normalised_score(outputs["score"], threshold).astype(np.float32)
    # float32 rounds scores within an ulp of the threshold to exactly 0.5; keep q > 0.5 exactly
    # when the raw score is above the threshold, so the reported score and the decision agree.
    above = np.asarray(outputs["score"]) > threshold
    q = np.where(above & (q <= 0.5), np.nextafter(np.float32(0.5), np.float32(1)), q)
    q = np.where(~above & (q > 0.5), np.float32(0.5), q).astype(np.float32)
    probabilities = np.stack([1.0 - q, q], axis=1).astype(np.float32)
    embedding = map_embedding(outputs["anomaly_map"], threshold)
    return {**outputs, "probabilities": probabilities, "embedding": embedding}
