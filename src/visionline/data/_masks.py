"""Defect masks as the models see them: binarised, and resized like their images.

Masks are binarised at half intensity (annotators' masks often have grey, anti-aliased edges)
and resized (or letterboxed) exactly like their images, so a map cell or pixel and a mask pixel
describe the same spot. The anomaly route scores maps against them; a patch head learns from
them (`TrainConfig.mask_weight`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from visionline.errors import DataError
from visionline.preprocessing import Preprocessing, decode_image

if TYPE_CHECKING:
    from visionline.data._manifest import ImageRecord
    from visionline.data._store import BlobStore

MASK_LEVEL = 128


def binary_mask(mask: Image.Image, image_size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A decoded mask as bool pixels (grey edges thresholded at half intensity)."""
    if mask.size != image_size:
        raise DataError(
            f"{name} is {mask.size[0]}x{mask.size[1]} pixels but its image is "
            f"{image_size[0]}x{image_size[1]}; supply a mask of the image's size."
        )
    return np.asarray(mask.convert("L"), dtype=np.uint8) >= MASK_LEVEL


def mask_in_model_frame(mask: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """A full-size bool mask resized (and letterboxed) the way its image is: (S, S) bool."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    plain = Preprocessing(size=preprocessing.size, resize_mode=preprocessing.resize_mode)
    return np.asarray(plain.resize(image))[..., 0] >= MASK_LEVEL


def record_mask(blobs: BlobStore, record: ImageRecord) -> np.ndarray | None:
    """The record's stored mask as full-size bool pixels, or None when it has none."""
    if record.mask_sha256 is None:
        return None
    return binary_mask(
        decode_image(blobs.get(record.mask_sha256)),
        (record.width, record.height),
        f"The mask of {record.path}",
    )
