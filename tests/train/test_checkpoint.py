"""Run directories: bad --out paths are refused before any work starts."""

from __future__ import annotations

import pytest

from visionline.errors import ConfigError
from visionline.train._checkpoint import prepare_out_dir


def test_out_dir_that_is_a_file_is_refused_and_kept(tmp_path):
    target = tmp_path / "model.txt"
    target.write_text("keep me")
    with pytest.raises(ConfigError, match="is a file; pass a folder path as --out"):
        prepare_out_dir(None, target, False, None, None)
    assert target.read_text() == "keep me"
