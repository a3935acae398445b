"""The pixel-level metrics, pixel AUROC and AUPRO, against masks in the model's frame
(`visionline.data._masks`: binarised and letterboxed exactly like their images).

AUPRO (Bergmann et al., MVTec AD) averages the overlap per connected defect region, so one
large defect cannot hide many missed small ones; it is integrated up to a 30% pixel
false-positive rate and normalised to [0, 1].
"""

from __future__ import annotations

import numpy as np

from visionline.preprocessing import Preprocessing, ResizeMode

__all__ = ["AUPRO_FPR_LIMIT", "aupro", "content_region", "pixel_auroc"]

AUPRO_FPR_LIMIT = 0.3


def content_region(width: int, height: int, preprocessing: Preprocessing) -> np.ndarray:
    """(S, S) bool: which model-input pixels show the image (not letterbox padding)."""
    size = preprocessing.size
    region = np.ones((size, size), dtype=bool)
    if preprocessing.resize_mode is not ResizeMode.LETTERBOX:
        return region
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    region[:] = False
    region[top : top + new_h, left : left + new_w] = True
    return region


def pixel_auroc(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """ROC AUC over all given pixels (each map/mask a flat array of the pixels that count)."""
    from sklearn.metrics import roc_auc_score

    truth = np.concatenate(masks) if masks else np.zeros(0, bool)
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.concatenate(maps)))


def aupro(
    maps: list[np.ndarray],
    masks: list[np.ndarray],
    fpr_limit: float = AUPRO_FPR_LIMIT,
    steps: int = 1000,
) -> float:
    """Normalised area under the per-region-overlap curve up to `fpr_limit` (2-D maps/masks)."""
    from scipy import ndimage

    normal = np.sort(np.concatenate([m[~k] for m, k in zip(maps, masks)]))
    regions: list[np.ndarray] = []
    for amap, mask in zip(maps, masks):
        labelled, count = ndimage.label(mask)
        regions.extend(np.sort(amap[labelled == index]) for index in range(1, count + 1))
    if not regions or normal.size == 0:
        return float("nan")
    # thresholds from the normal scores' upper tail: FPR goes from 0 to fpr_limit
    quantiles = np.linspace(1.0, 1.0 - fpr_limit, steps)
    thresholds = np.quantile(normal, quantiles)
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="right") / normal.size
    overlap = np.mean(
        [1.0 - np.searchsorted(r, thresholds, side="right") / r.size for r in regions], axis=0
    )
    fpr = np.concatenate([[0.0], fpr])
    overlap = np.concatenate([[overlap[0]], overlap])
    keep = fpr <= fpr_limit
    fpr, overlap = fpr[keep], overlap[keep]
    if fpr[-1] < fpr_limit:  # close the curve exactly at the limit
        fpr, overlap = np.append(fpr, fpr_limit), np.append(overlap, overlap[-1])
    return float(np.trapezoid(overlap, fpr) / fpr_limit)
