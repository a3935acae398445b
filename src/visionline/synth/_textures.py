"""Precomputed noise fields: each image takes a random crop, so texture costs a slice, not a render.

The bank is built once per image size from a fixed seed, so it is identical in every process and
the per-image randomness (crop offset and orientation) comes from the image's own generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_BANK_SEED = 20261126


def _value_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random grid upsampled bicubically (feature size side/cells)."""
    grid = rng.random((cells + 3, cells + 3), dtype=np.float32)
    image = Image.fromarray(grid, mode="F").resize((side, side), Image.Resampling.BICUBIC)
    field = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(field, [1, 99])
    return np.clip((field - low) / (high - low), 0.0, 1.0)


def _dots(rng: np.random.Generator, side: int, per_128: float, radius_128: float) -> np.ndarray:
    """Sparse soft dots in [0, 1] (lenticels): `per_128` dots per 128×128 area."""
    scale = side / 128.0
    count = int(per_128 * (side / 128.0) ** 2 / 1.0)
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    xs = rng.random(count) * side
    ys = rng.random(count) * side
    radii = radius_128 * scale * rng.uniform(0.6, 1.5, count)
    for x, y, r in zip(xs, ys, radii, strict=True):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(150, 256)))
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(0.35, 0.5 * scale)))
    field = np.asarray(canvas, dtype=np.float32) / 255.0
    return np.clip(field * 1.6, 0.0, 1.0)


@dataclass(frozen=True)
class TextureCrop:
    """One image's view of the bank: smooth (low), blotchy (mid), grain (fine) and lenticel dots."""

    low: np.ndarray
    mid: np.ndarray
    fine: np.ndarray
    dots: np.ndarray


class TextureBank:
    """Noise fields three times the image side; crops with 8 orientations make each apple unique."""

    def __init__(self, size: int) -> None:
        rng = np.random.default_rng(_BANK_SEED + size)
        side = 3 * size
        self.size = size
        fields = {
            "low": _value_noise(rng, side, 9),
            "mid": _value_noise(rng, side, 36),
            "fine": _value_noise(rng, side, max(8, side // 2)),
            "dots": _dots(rng, side, per_128=55.0, radius_128=0.45),
        }
        self._fields = {k: (f, np.ascontiguousarray(f.T)) for k, f in fields.items()}

    def crop(self, rng: np.random.Generator) -> TextureCrop:
        """A random crop and orientation of every field: views, no copies (transposes come
        from the stored transposed fields, so rows stay contiguous and the math stays fast)."""
        size = self.size
        parts = {}
        for name, (field, transposed) in self._fields.items():
            oy, ox = rng.integers(0, 2 * size, 2)
            orientation = int(rng.integers(0, 8))
            source = transposed if orientation & 4 else field
            view = source[oy : oy + size, ox : ox + size]
            if orientation & 1:
                view = view[::-1]
            if orientation & 2:
                view = view[:, ::-1]
            parts[name] = view
        return TextureCrop(**parts)
