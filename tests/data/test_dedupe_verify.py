"""Pair verification: the screen decides only whether to go on, never the score."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

from visionline.data._dedupe import DedupeConfig
from visionline.data._dedupe_features import FEATURES, PATCH, concat, image_features
from visionline.data._dedupe_retrieval import retrieve
from visionline.data._dedupe_verify import PairMatcher


def _photo(box: tuple[int, int, int, int], name: str = "china.jpg") -> Image.Image:
    return Image.fromarray(load_sample_image(name)).crop(box).resize((192, 192))


def test_a_screened_pair_scores_what_the_full_match_scores() -> None:
    source = _photo((40, 40, 300, 300))
    copy = source.rotate(35, Image.Resampling.BILINEAR).crop((20, 20, 180, 180)).resize((192, 192))
    images = [source, copy, _photo((330, 150, 590, 410)), _photo((20, 20, 220, 220), "flower.jpg")]
    table = concat([image_features(im) for im in images])
    found = retrieve(table, 65536, 3, 0.0, seed=0)
    screened = PairMatcher(table, found, DedupeConfig(screen_keypoints=100))
    unscreened = PairMatcher(table, found, replace(DedupeConfig(), screen_keypoints=FEATURES))
    assert screened.score(0, 1) == unscreened.score(0, 1) >= 20  # the copy: screen passes
    assert screened.score(0, 3) == 0  # a flower: nothing fits the screen


def test_keypoints_reach_into_the_border_a_whole_patch_wide() -> None:
    features = image_features(_photo((40, 40, 300, 300)).resize((256, 256)))
    xy = features.xy[0, 0, : features.count[0, 0], :2].astype(np.float32)
    near_border = (xy.min(1) < PATCH) | (xy.max(1) > 255 - PATCH)
    assert near_border.mean() > 0.05  # none with ORB's default border of a whole patch
