import numpy as np
import pytest

from visionline.anomaly import aupro, pixel_auroc


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
