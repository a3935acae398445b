"""Photometric agreement of a keypoint fit: a copy's warped picture agrees, a look-alike's not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from visionline.data._dedupe_features import concat, image_features
from visionline.data._dedupe_photo import agreement

TILES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "magnetic-tile-defect"


def _tile(name: str) -> Image.Image:
    return Image.open(TILES / "MT_Free" / "Imgs" / name).convert("RGB").resize((256, 256))


def test_a_turned_or_mirrored_copy_agrees_and_a_look_alike_does_not() -> None:
    source = _tile("exp1_num_29469.jpg")
    turned = ImageEnhance.Brightness(source.transpose(Image.Transpose.ROTATE_90)).enhance(1.2)
    mirrored = source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    table = concat(
        [image_features(im) for im in (source, turned, mirrored, _tile("exp1_num_3786.jpg"))]
    )
    quarter_turn = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 255.0]])  # (x, y) -> (y, 255 - x)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert agreement(table, 0, 0, 1, quarter_turn) > 0.8
    assert agreement(table, 0, 1, 2, identity) > 0.8  # the source's mirror onto the mirrored copy
    assert agreement(table, 0, 0, 2, identity) < 0.3  # the source itself does not fit there
    assert agreement(table, 0, 0, 3, identity) < 0.3  # another tile


def test_pictures_that_barely_overlap_do_not_agree() -> None:
    table = concat([image_features(_tile("exp1_num_29469.jpg"))] * 2)
    far = np.array([[1.0, 0.0, 250.0], [0.0, 1.0, 250.0]])
    assert agreement(table, 0, 0, 1, far) == -1.0
