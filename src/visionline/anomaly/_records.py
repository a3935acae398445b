"""Dataset-version records for anomaly work: which images fit, which set the threshold, and their
pixels and masks, decoded one at a time so a large split never sits in memory at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from visionline.config import GOOD_CLASS
from visionline.errors import DataError
from visionline.preprocessing import decode_image

if TYPE_CHECKING:
    from PIL import Image

    from visionline.data import BlobStore, DatasetVersion, ImageRecord


def is_good(record: ImageRecord) -> bool:
    return record.label == GOOD_CLASS


def good_training_records(
    version: DatasetVersion, limit: int | None = None, seed: int = 0
) -> list[ImageRecord]:
    """The train split's good images (optionally a seeded sample of `limit`); defects are refused."""
    records = version.split_records("train")
    if not records:
        raise DataError(
            f"Dataset version {version.short_id} has no 'train' split; "
            f"run 'visionline data split {version.short_id}' first."
        )
    good = [r for r in records if is_good(r)]
    if not good:
        raise DataError(
            f"The train split of {version.short_id} holds only defect images ({len(records)}); "
            "an anomaly model learns from good images, so add good ones."
        )
    if limit is not None and limit < len(good):
        order = np.random.default_rng(seed).permutation(len(good))[:limit]
        good = [good[i] for i in sorted(order)]
    return good


def images(blobs: BlobStore, records: Sequence[ImageRecord]) -> Iterator[Image.Image]:
    """Decoded images in record order, one at a time."""
    for record in records:
        yield decode_image(blobs.get(record.sha256))


def mask_of(blobs: BlobStore, record: ImageRecord) -> np.ndarray | None:
    """The record's full-size bool mask: all False for a good image without one, None for a
    defect image without one (its pixels cannot be scored)."""
    from visionline.data import record_mask

    mask = record_mask(blobs, record)
    if mask is None and is_good(record):
        return np.zeros((record.height, record.width), bool)
    return mask
