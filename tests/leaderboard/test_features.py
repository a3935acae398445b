"""Classical features: one fixed-length, finite vector per image, the same on every call."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from visionline.leaderboard import OutOfBudget, classical_features, image_features

from .conftest import tile


def test_features_have_one_length_for_any_image_size_and_are_finite():
    small = image_features(tile(1, None))
    wide = image_features(tile(2, "square").resize((90, 40)))
    grey = image_features(Image.new("L", (30, 70), 128))
    assert small.shape == wide.shape == grey.shape
    assert small.ndim == 1 and small.shape[0] > 400
    assert np.isfinite(np.stack([small, wide, grey])).all()


def test_features_are_deterministic_and_tell_defects_from_good():
    images = [tile(3, None), tile(3, "square"), tile(3, "scratch")]
    first = classical_features(images)
    again = classical_features(images)
    assert first.shape == (3, image_features(images[0]).shape[0])
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[0], first[1]) and not np.allclose(first[0], first[2])


def test_the_budget_check_runs_between_images_and_can_stop_them():
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OutOfBudget("the 1-minute budget ran out")

    with pytest.raises(OutOfBudget):
        classical_features([tile(4, None)] * 3, check)
    assert len(calls) == 2
