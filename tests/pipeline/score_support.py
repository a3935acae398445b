"""Helpers for the batch-scoring tests: a tiny signed-format bundle and folders of test images.

The ONNX model and the bundle writer come from the server tests' fixtures, the apple images from
the export tests' fixtures, so all three stages score the same kind of artifact.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

TESTS = Path(__file__).resolve().parents[1]
MAX_PIXELS = 300_000
RATES = {"defect_recall": 0.8, "false_reject_rate": 0.05, "n_defect": 50, "n_good": 100}


def _conftest(folder: str) -> ModuleType:
    path = TESTS / folder / "conftest.py"
    spec = importlib.util.spec_from_file_location(f"visionline_{folder}_fixtures_for_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_serve = _conftest("serve")
_export = _conftest("export")
onnx_model = _serve.onnx_model
make_image_folder = _export.make_image_folder
CLASSES = _serve.CLASSES


def write_score_bundle(onnx: Path, target: Path, version: str = "1", rates: bool = True) -> Path:
    """A bundle in the export format with validated rates and a small pixel limit."""
    from visionline.export._bundle import finalize_bundle

    _serve.write_bundle(onnx, target, version)
    manifest = json.loads((target / "bundle.json").read_text())
    for key in ("format", "files"):
        manifest.pop(key)
    manifest["max_pixels"] = MAX_PIXELS
    if rates:
        manifest["metrics"] = {"fp32": {"threshold": manifest["threshold"], **RATES}}
    finalize_bundle(target, manifest)
    return target


def write_images(root: Path) -> Path:
    """Apples in class subfolders plus a JPEG, a corrupt file, a too-large image and a text file."""
    make_image_folder(root, {"line": {"good": 5, "bruise": 3, "rot": 3}})
    Image.open(root / "line" / "good" / "good_0.png").save(root / "line" / "extra.jpg", quality=90)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    side = int(MAX_PIXELS**0.5) + 50
    Image.fromarray(np.zeros((side, side, 3), dtype=np.uint8)).save(root / "huge.png")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def score_bundle(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_score_bundle(onnx_model, tmp_path_factory.mktemp("score-bundle") / "apples" / "1")


@pytest.fixture(scope="session")
def score_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("score-images"))
