"""Tiny synthetic 'tiles': a striped surface, and the same with a dark square drawn on it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 96, 72


def tile(seed: int, defect: bool = False) -> tuple[Image.Image, Image.Image]:
    """An image and its mask (white where the square is)."""
    rng = np.random.default_rng(seed)
    x = np.arange(WIDTH)[None, :]
    y = np.arange(HEIGHT)[:, None]
    stripes = 128 + 40 * np.sin(2 * np.pi * (x + y * 0.2 + rng.uniform(0, 8)) / 8.0)
    pixels = stripes + rng.normal(0, 3, (HEIGHT, WIDTH))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    if defect:
        left, top = int(rng.integers(10, WIDTH - 30)), int(rng.integers(10, HEIGHT - 30))
        box = (left, top, left + 16, top + 16)
        ImageDraw.Draw(image).rectangle(box, fill=(20, 20, 20))
        ImageDraw.Draw(mask).rectangle(box, fill=255)
    return image, mask


def global_change(seed: int) -> Image.Image:
    """The whole surface differs (stripes of another period), no local defect: an 'uneven' tile."""
    rng = np.random.default_rng(seed)
    x = np.arange(WIDTH)[None, :]
    y = np.arange(HEIGHT)[:, None]
    stripes = 128 + 40 * np.sin(2 * np.pi * (x + y * 0.2 + rng.uniform(0, 8)) / 13.0)
    pixels = stripes + rng.normal(0, 3, (HEIGHT, WIDTH))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")


@pytest.fixture(scope="session")
def fused():
    """A detector with the image-level kNN fused into its score (10 good images, 64 px)."""
    from visionline.anomaly import AnomalyConfig, fit_detector

    goods = [tile(seed)[0] for seed in range(10)]
    return fit_detector(goods, len(goods), AnomalyConfig(image_size=64, batch_size=16))
