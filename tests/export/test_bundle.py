"""Bundle output folders: only an earlier bundle or an empty folder is ever replaced."""

from __future__ import annotations

import pytest

from visionline.errors import ConfigError
from visionline.export._bundle import staged_directory
from visionline_edge import MANIFEST


def test_staging_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    target = tmp_path / "reports"
    target.mkdir()
    (target / "thesis.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not an edge bundle"), staged_directory(target):
        pass
    assert (target / "thesis.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_staging_refuses_a_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(ConfigError, match="is not an edge bundle"), staged_directory(target):
        pass
    assert target.read_text() == "keep me"


def test_staging_replaces_an_earlier_bundle(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / MANIFEST).write_text("{}")
    with staged_directory(target) as stage:
        (stage / "model.onnx").write_bytes(b"new")
    assert [p.name for p in target.iterdir()] == ["model.onnx"]
