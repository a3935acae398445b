"""Heatmap regions for Label Studio: connected components above the threshold, as rectangles in
percent of the original image through each resize mode."""

from __future__ import annotations

import numpy as np
import pytest

from visionline.data._labelstudio_regions import heatmap_regions
from visionline.preprocessing import Preprocessing, ResizeMode


def _map(size: int = 32) -> np.ndarray:
    amap = np.zeros((size, size), dtype=np.float32)
    amap[4:8, 8:16] = 5.0  # rows 4-7, columns 8-15
    amap[20:24, 20:22] = 9.0
    return amap


def test_components_become_rectangles_strongest_first():
    regions = heatmap_regions(_map(), 1.0, Preprocessing(size=32), 64, 32)
    assert [r.peak for r in regions] == [9.0, 5.0]
    second = regions[1]  # stretch: x and y scale on their own
    assert (second.x, second.y, second.width, second.height) == (25.0, 12.5, 25.0, 12.5)


def test_nothing_above_the_threshold_gives_no_region():
    assert heatmap_regions(_map(), 9.0, Preprocessing(size=32), 32, 32) == []


def test_letterbox_padding_maps_back_to_the_image():
    # a 64x32 image letterboxed into 32x32: scale 0.5, 8 rows of padding above and below
    prep = Preprocessing(size=32, resize_mode=ResizeMode.LETTERBOX)
    amap = np.zeros((32, 32), np.float32)
    amap[8:16, 0:16] = 2.0  # the top-left quarter of the image area
    amap[0:4, 20:24] = 3.0  # on the padding only
    (region,) = heatmap_regions(amap, 1.0, prep, 64, 32)
    assert (region.x, region.y, region.width, region.height) == (0.0, 0.0, 50.0, 50.0)


@pytest.mark.parametrize("mode", [ResizeMode.STRETCH, ResizeMode.LETTERBOX])
def test_a_full_map_covers_the_whole_image(mode):
    amap = np.ones((32, 32), np.float32)
    (region,) = heatmap_regions(amap, 0.5, Preprocessing(size=32, resize_mode=mode), 48, 40)
    assert region.x == 0 and region.y == 0
    assert region.width == pytest.approx(100.0) and region.height == pytest.approx(100.0)


def test_a_full_map_covers_only_the_centre_crop():
    # 48x40 → scale 0.8 → 38x32, 3 columns cut on the left: the crop spans x 3.75-43.75 px
    amap = np.ones((32, 32), np.float32)
    prep = Preprocessing(size=32, resize_mode=ResizeMode.CENTER_CROP)
    (region,) = heatmap_regions(amap, 0.5, prep, 48, 40)
    assert region.x == pytest.approx(7.812, abs=1e-3) and region.y == 0
    assert region.width == pytest.approx(83.333, abs=1e-3) and region.height == 100.0
