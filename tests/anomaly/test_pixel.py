import numpy as np
import pytest
from PIL import Image

from visionline.anomaly import aupro, binary_mask, mask_in_model_frame, pixel_auroc
from visionline.errors import DataError
from visionline.preprocessing import Preprocessing, ResizeMode


def _square(size: int = 20, box: tuple[int, int, int, int] = (5, 5, 10, 10)) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    return mask


def test_aupro_is_one_for_a_perfect_map_and_zero_for_an_inverted_one():
    masks = [_square(), _square(box=(12, 18, 2, 4))]
    perfect = [m.astype(float) + 0.01 * np.arange(m.size).reshape(m.shape) / m.size for m in masks]
    inverted = [1.0 - p for p in perfect]
    assert aupro(perfect, masks) == pytest.approx(1.0, abs=1e-3)
    assert aupro(inverted, masks) == pytest.approx(0.0, abs=1e-3)


def test_aupro_weights_regions_equally_unlike_pixel_auroc():
    big, small = _square(40, (0, 20, 0, 20)), _square(40, (30, 32, 30, 32))
    mask = big | small
    amap = np.zeros((40, 40))
    amap[big] = 1.0  # finds the big defect, misses the small one entirely
    amap += np.random.default_rng(0).uniform(0, 0.1, amap.shape)
    assert pixel_auroc([amap.ravel()], [mask.ravel()]) > 0.95
    assert aupro([amap], [mask]) == pytest.approx(0.5, abs=0.05)


def test_pixel_auroc_is_undefined_without_defect_pixels():
    assert np.isnan(pixel_auroc([np.ones(4)], [np.zeros(4, bool)]))


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
