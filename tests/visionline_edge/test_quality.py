"""Image-quality statistics measure what they name."""

from __future__ import annotations

import numpy as np
import pytest

from visionline_edge import image_quality


def test_image_quality_measures_what_it_names() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, size=(1, 32, 32, 3)).astype(np.uint8)
    flat_grey = np.full((1, 32, 32, 3), 200, dtype=np.uint8)
    dark_red = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    dark_red[..., 0] = 120
    q = image_quality(np.concatenate([sharp, flat_grey, dark_red]))
    assert q.shape == (3, 4)
    brightness, contrast, sharpness, colourfulness = q.T
    assert brightness[1] == pytest.approx(200, abs=0.5) and brightness[2] < brightness[1]
    assert contrast[1] == pytest.approx(0, abs=1e-3) and contrast[0] > 30
    assert sharpness[0] > 1000 and sharpness[1] == pytest.approx(0, abs=1e-3)
    assert colourfulness[1] == pytest.approx(0, abs=1e-3) and colourfulness[2] > 30
    bgr = image_quality(dark_red[..., ::-1], channel_order="BGR")
    assert np.allclose(bgr, q[2:3])
