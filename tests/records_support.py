"""One stored test image as a dataset record: the builders of synthetic test datasets share it."""

from __future__ import annotations

import io

from PIL import Image

from visionline.data import DatasetRepo, ImageRecord


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def stored_record(
    repo: DatasetRepo,
    image: Image.Image,
    path: str,
    split: str,
    subtype: str | None,
    mask: Image.Image | None = None,
) -> ImageRecord:
    """`image` (and `mask`) as PNG blobs in `repo`'s store; labelled defect when it has a
    subtype, else good."""
    data = png(image)
    return ImageRecord(
        sha256=repo.blobs.put(data),
        path=path,
        bytes=len(data),
        width=image.width,
        height=image.height,
        mode="RGB",
        label="defect" if subtype else "good",
        subtype=subtype,
        source="test",
        split=split,
        mask_sha256=None if mask is None else repo.blobs.put(png(mask)),
    )
