import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from visionline.data import BlobStore, ImageRecord, binary_mask, mask_in_model_frame, record_mask
from visionline.errors import DataError
from visionline.preprocessing import Preprocessing, ResizeMode


def test_grey_mask_edges_are_thresholded_at_half_intensity():
    pixels = np.array([[0, 60, 127, 128, 200, 255]], dtype=np.uint8)
    mask = binary_mask(Image.fromarray(pixels), (6, 1))
    assert mask.tolist() == [[False, False, False, True, True, True]]


def test_a_mask_of_another_size_than_its_image_is_refused():
    with pytest.raises(DataError, match="supply a mask of the image's size"):
        binary_mask(Image.new("L", (10, 10)), (12, 10), "The mask of a.jpg")


def test_masks_are_letterboxed_like_their_images():
    mask = np.zeros((50, 100), bool)
    mask[:, 50:] = True  # right half of a wide image
    framed = mask_in_model_frame(mask, Preprocessing(size=64, resize_mode=ResizeMode.LETTERBOX))
    assert framed.shape == (64, 64)
    assert not framed[:16].any() and not framed[48:].any()  # padding rows above and below
    assert framed[20:44, 34:].all() and not framed[20:44, :30].any()


def test_a_record_mask_is_read_from_the_store_and_absent_without_one(tmp_path):
    blobs = BlobStore(tmp_path)
    pixels = np.zeros((4, 6), np.uint8)
    pixels[1:3, 2:5] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    mask_sha = blobs.put(buffer.getvalue())
    record = ImageRecord(sha256="0" * 64, path="d/a.png", bytes=1, width=6, height=4, mode="RGB",
                         label="defect", subtype=None, source="test", split="train",
                         mask_sha256=mask_sha)
    assert record_mask(blobs, record).tolist() == (pixels > 0).tolist()
    assert record_mask(blobs, replace(record, mask_sha256=None)) is None
