"""Images for export: calibration, parity, gates and reference statistics from a dataset version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from visionline.config import GOOD_CLASS
from visionline.errors import DataError, ImageError
from visionline.preprocessing import Preprocessing, decode_image


@dataclass(frozen=True)
class SplitPixels:
    """Resized uint8 pixels of one split with their labels."""

    split: str
    pixels: np.ndarray  # (N, H, W, 3) uint8 in the preprocessing's channel order
    classes: list[str]  # model class per image (subtype, else label)

    @property
    def is_defect(self) -> np.ndarray:
        return np.array([c != GOOD_CLASS for c in self.classes], dtype=bool)

    def __len__(self) -> int:
        return len(self.classes)


def load_split(
    version: Any,
    blobs: Any,
    split: str,
    preprocessing: Preprocessing,
    limit: int | None = None,
    seed: int = 0,
    progress: Any = None,
) -> SplitPixels:
    """Decode one split of a `DatasetVersion` (a seeded random subset when `limit` is given)."""
    records = version.split_records(split)
    if not records:
        raise DataError(
            f"Dataset version {version.short_id} has no '{split}' images; split it first "
            "('visionline data split') or pass another --data version."
        )
    if limit is not None and len(records) > limit:
        chosen = np.random.default_rng(seed).choice(len(records), size=limit, replace=False)
        records = [records[i] for i in sorted(chosen)]
    task = progress.add_task(f"decode {split}", total=len(records)) if progress else None
    pixels = []
    for record in records:
        try:
            pixels.append(preprocessing.to_uint8(decode_image(blobs.get(record.sha256))))
        except ImageError as exc:
            raise ImageError(f"{record.path}: {exc}") from exc
        if progress:
            progress.advance(task)
    return SplitPixels(split, np.stack(pixels), [r.subtype or r.label for r in records])


def synthetic_pixels(size: int, count: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth random colour images for parity checks when no dataset is given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        base = rng.uniform(0, 255, size=3)
        slope = rng.uniform(-120, 120, size=(2, 3))
        image = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
        image += rng.normal(0, 12, size=image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)
