"""The model runner: image bytes in, the same batch with or without the prediction log's statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serve_support import image_bytes

from visionline.errors import DataError
from visionline.serve._runner import load_runner


@pytest.fixture
def runner(repo: Path):
    return load_runner(repo / "apples" / "1")


def test_quality_statistics_do_not_change_the_model_batch(runner) -> None:
    images = [image_bytes(1), image_bytes(2, fmt="JPEG")]
    batch, quality = runner.decode_with_quality(images)
    np.testing.assert_array_equal(runner.decode(images), batch)
    assert batch.shape == (2, *runner.input_shape)
    assert quality.shape[0] == 2 and np.all(np.isfinite(quality))
    assert not np.array_equal(quality[0], quality[1])


def test_an_empty_request_is_refused_with_a_fix(runner) -> None:
    with pytest.raises(DataError, match="at least one"):
        runner.decode([])
