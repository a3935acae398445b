"""The step cache key sees every visionline file and the library versions, not just the step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from visionline.pipeline import STEPS, _code
from visionline.pipeline._graph import Artifact, cache_key

TRAIN = next(s for s in STEPS if s.name == "train")
INPUTS = {"split": {"dataset": Artifact("dataset", "a" * 64)}}


def _copy(tmp_path: Path, name: str, package: int = 0) -> Path:
    copy = tmp_path / name / _code.SOURCE_ROOTS[package].name
    shutil.copytree(_code.SOURCE_ROOTS[package], copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _key_with_root(monkeypatch: pytest.MonkeyPatch, root: Path, package: int = 0) -> str:
    roots = list(_code.SOURCE_ROOTS)
    roots[package] = root
    monkeypatch.setattr(_code, "SOURCE_ROOTS", tuple(roots))
    return cache_key(TRAIN, {"epochs": 1}, INPUTS)


def test_an_unchanged_copy_of_the_code_keeps_the_key(monkeypatch, tmp_path) -> None:
    original = cache_key(TRAIN, {"epochs": 1}, INPUTS)
    assert _key_with_root(monkeypatch, _copy(tmp_path, "same")) == original


def test_a_changed_helper_outside_the_step_changes_the_key(monkeypatch, tmp_path) -> None:
    original = cache_key(TRAIN, {"epochs": 1}, INPUTS)
    changed, template = _copy(tmp_path, "loop"), _copy(tmp_path, "data")
    loop = changed / "train" / "_loop.py"
    loop.write_text(loop.read_text() + "\nFIXED = True\n")
    (template / "templates" / "new.html.j2").write_text("<p>{{ x }}</p>")
    assert _key_with_root(monkeypatch, changed) != original
    assert _key_with_root(monkeypatch, template) != original


def test_the_edge_runtime_is_part_of_the_code(monkeypatch, tmp_path) -> None:
    original = cache_key(TRAIN, {"epochs": 1}, INPUTS)
    assert [root.name for root in _code.SOURCE_ROOTS] == ["visionline", "visionline_edge"]
    same, changed = _copy(tmp_path, "same", package=1), _copy(tmp_path, "changed", package=1)
    decoding = changed / "preprocessing.py"
    decoding.write_text(decoding.read_text() + "\n# a decoding fix\n")
    assert _key_with_root(monkeypatch, same, package=1) == original
    assert _key_with_root(monkeypatch, changed, package=1) != original


def test_a_new_library_version_changes_the_key(monkeypatch, tmp_path) -> None:
    root = _copy(tmp_path, "libs")
    before = _key_with_root(monkeypatch, root)
    newer = {**_code.library_versions(), "torch": "99.0"}
    monkeypatch.setattr(_code, "library_versions", lambda: newer)
    monkeypatch.setattr(_code, "_digest", _code._digest.__wrapped__)
    assert _key_with_root(monkeypatch, root) != before


def test_the_shaping_libraries_are_versioned() -> None:
    versions = _code.library_versions()
    assert {"torch", "torchvision", "timm", "onnx", "onnxruntime"} <= set(versions)
    assert versions["torch"].startswith("2.14.1")


def test_bytecode_is_not_part_of_the_code(tmp_path, monkeypatch) -> None:
    root = _copy(tmp_path, "pyc")
    before = _key_with_root(monkeypatch, _copy(tmp_path, "clean"))
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\x00")
    assert _key_with_root(monkeypatch, root) == before
