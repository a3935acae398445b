"""Image-quality statistics: what the server logs per image and the bundle's drift reference holds."""

from __future__ import annotations

import numpy as np

QUALITY_STATS = ("brightness", "contrast", "sharpness", "colourfulness")


def image_quality(pixels: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """(N, 4) brightness, contrast, sharpness (Laplacian variance), colourfulness per image.

    Takes the resized NHWC uint8 model input (`Preprocessing.to_uint8`), so the numbers do not
    depend on camera resolution and the server computes exactly what the bundle's reference holds.
    """
    rgb = np.asarray(pixels, dtype=np.float32)
    if channel_order == "BGR":
        rgb = rgb[..., ::-1]
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = (
        gray[:, :-2, 1:-1]
        + gray[:, 2:, 1:-1]
        + gray[:, 1:-1, :-2]
        + gray[:, 1:-1, 2:]
        - 4 * gray[:, 1:-1, 1:-1]
    )
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    axes = (1, 2)
    colourfulness = np.hypot(rg.std(axis=axes), yb.std(axis=axes)) + 0.3 * np.hypot(
        rg.mean(axis=axes), yb.mean(axis=axes)
    )
    return np.stack(
        [gray.mean(axis=axes), gray.std(axis=axes), lap.var(axis=axes), colourfulness], axis=1
    ).astype(np.float32)
