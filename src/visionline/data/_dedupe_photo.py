"""Photometric check of a keypoint fit: do the two pictures agree once one is warped onto the other?

A low-texture copy that is cropped and sheared keeps few keypoints that match its source, so its
fit covers as few inlier cells as the chance fits of a look-alike. The pictures still tell them
apart: warped by the fitted affine transform, a copy's fine detail lines up with its source's
(relighting and JPEG change little after a high-pass and a normalised correlation), while a
look-alike only shares its coarse layout. On the development set of
benchmarks/near_duplicates.py the high-pass correlation of true pairs that the keypoints found
weakly was 0.33-0.86 and of the best look-alike candidates of lone images at most 0.29.
"""

from __future__ import annotations

import numpy as np

from visionline.data._dedupe_features import SIDE, THUMB, FeatureTable

__all__ = ["agreement"]

_SCALE = SIDE // THUMB
_BLUR_SIGMA = 2.0
_EDGE_PX = 5
_MIN_PIXELS = 256


def agreement(table: FeatureTable, i: int, side: int, j: int, matrix: np.ndarray) -> float:
    """Normalised correlation of the high-passed thumbnails of image i (its mirror when `side`
    is 1) warped by `matrix` (2 x 3, keypoint coordinates of i onto j's) and of image j, over
    the pixels both show; -1 when they share fewer than `_MIN_PIXELS`."""
    import cv2

    source = np.asarray(table.thumb[i])
    if side:
        source = source[:, ::-1]
    source = np.ascontiguousarray(source, dtype=np.float32)
    target = np.asarray(table.thumb[j], dtype=np.float32)
    # keypoint pixel x maps to thumbnail pixel (x - offset) / scale (area averaging)
    offset = (_SCALE - 1) / 2
    linear = matrix[:, :2].astype(np.float64)
    shift = (linear @ np.array([offset, offset]) + matrix[:, 2] - offset) / _SCALE
    small = np.hstack([linear, shift[:, None]]).astype(np.float32)
    warped = cv2.warpAffine(source, small, (THUMB, THUMB), flags=cv2.INTER_LINEAR)
    shown = cv2.warpAffine(
        (source > 0).astype(np.float32), small, (THUMB, THUMB), flags=cv2.INTER_LINEAR
    )
    both = ((shown > 0.999) & (target > 0)).astype(np.uint8)
    # the high-pass of pixels near the edge of the shared area sees the blank outside
    both = cv2.erode(both, np.ones((_EDGE_PX, _EDGE_PX), np.uint8)) > 0
    if both.sum() < _MIN_PIXELS:
        return -1.0
    x = (warped - cv2.GaussianBlur(warped, (0, 0), _BLUR_SIGMA))[both]
    y = (target - cv2.GaussianBlur(target, (0, 0), _BLUR_SIGMA))[both]
    x -= x.mean()
    y -= y.mean()
    return float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-6))
