"""Classical vision features: colour (HSV histograms), texture (LBP, GLCM, Gabor), shape (HOG)
and local-contrast statistics, from scikit-image. No learning, so they are the baseline that any
deep model has to beat before the customer pays for it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

FEATURE_SIZE = 128
"""Images are resized (stretched) to this square before texture features are measured."""
HOG_SIZE = 64
HSV_BINS = 16
LBP_SETTINGS = ((8, 1), (8, 3))
GLCM_LEVELS = 32
GLCM_DISTANCES = (1, 3)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
GABOR_FREQUENCIES = (0.1, 0.25, 0.4)
GABOR_THETAS = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
PERCENTILES = (1, 5, 50, 95, 99)


def _hsv_histograms(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(rgb)
    return np.concatenate(
        [
            np.histogram(hsv[..., c], bins=HSV_BINS, range=(0.0, 1.0))[0] / hsv[..., c].size
            for c in range(3)
        ]
    )


def _lbp(gray_u8: np.ndarray) -> np.ndarray:
    from skimage.feature import local_binary_pattern

    parts = []
    for points, radius in LBP_SETTINGS:
        codes = local_binary_pattern(gray_u8, points, radius, method="uniform")
        parts.append(np.histogram(codes, bins=points + 2, range=(0, points + 2))[0] / codes.size)
    return np.concatenate(parts)


def _glcm(gray_u8: np.ndarray) -> np.ndarray:
    from skimage.feature import graycomatrix, graycoprops

    quantised = (gray_u8.astype(np.uint16) * GLCM_LEVELS // 256).astype(np.uint8)
    matrix = graycomatrix(
        quantised, GLCM_DISTANCES, GLCM_ANGLES, levels=GLCM_LEVELS, symmetric=True, normed=True
    )
    parts = []
    for prop in GLCM_PROPS:
        values = np.nan_to_num(graycoprops(matrix, prop))  # (distances, angles)
        parts.extend([values.mean(axis=1), np.ptp(values, axis=1)])
    return np.concatenate(parts)


@functools.cache
def _gabor_kernels() -> tuple[np.ndarray, ...]:
    from skimage.filters import gabor_kernel

    return tuple(
        gabor_kernel(frequency, theta=theta)
        for frequency in GABOR_FREQUENCIES
        for theta in GABOR_THETAS
    )


def _gabor(gray: np.ndarray) -> np.ndarray:
    """Mean, spread and peak of each Gabor filter's response magnitude (FFT convolution: the
    low-frequency kernels are large)."""
    from scipy.signal import fftconvolve

    centred = gray - gray.mean()
    parts = []
    for kernel in _gabor_kernels():
        magnitude = np.abs(fftconvolve(centred, kernel, mode="same"))
        parts.extend([magnitude.mean(), magnitude.std(), magnitude.max()])
    return np.asarray(parts)


def _local_contrast(gray: np.ndarray) -> np.ndarray:
    """Intensity percentiles and the statistics of the residual against a blurred copy: a crack,
    hole or fray is a small region that differs from its surroundings."""
    from skimage.filters import gaussian

    residual = np.abs(gray - gaussian(gray, sigma=4))
    spread = residual.std() + 1e-6
    return np.concatenate(
        [
            np.percentile(gray, PERCENTILES),
            [gray.mean(), gray.std()],
            np.percentile(residual, (50, 95, 99)),
            [
                residual.max(),
                residual.mean(),
                float(np.mean(residual > residual.mean() + 3 * spread)),
            ],
        ]
    )


def _hog(gray: np.ndarray) -> np.ndarray:
    from skimage.feature import hog
    from skimage.transform import resize

    small = resize(gray, (HOG_SIZE, HOG_SIZE), anti_aliasing=True)
    return hog(small, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2))


def image_features(image: Image.Image) -> np.ndarray:
    """One image → a fixed-length float vector (same length for any input size)."""
    from skimage.transform import resize

    rgb = np.asarray(image.convert("RGB").resize((FEATURE_SIZE, FEATURE_SIZE)), dtype=np.float64)
    rgb /= 255.0
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    gray_u8 = np.clip(gray * 255.0, 0, 255).astype(np.uint8)
    half = resize(gray, (FEATURE_SIZE // 2, FEATURE_SIZE // 2), anti_aliasing=True)
    return np.concatenate(
        [
            _hsv_histograms(rgb),
            _lbp(gray_u8),
            _glcm(gray_u8),
            _gabor(half),
            _local_contrast(gray),
            _hog(gray),
        ]
    ).astype(np.float32)


def classical_features(
    images: Sequence[Image.Image], check: Callable[[], None] | None = None
) -> np.ndarray:
    """Features of every image, (N, D); `check` runs between images (a budget can stop it)."""
    rows = []
    for image in images:
        if check is not None:
            check()
        rows.append(image_features(image))
    if not rows:
        return np.zeros((0, feature_dim()), np.float32)
    return np.stack(rows)


def feature_dim() -> int:
    """Length of `image_features`' vector."""
    from PIL import Image as PILImage

    return int(image_features(PILImage.new("RGB", (FEATURE_SIZE, FEATURE_SIZE))).shape[0])
