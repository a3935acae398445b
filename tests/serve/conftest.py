"""Fixtures for the server tests: a tiny real ONNX model in signed edge bundles, and a server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_support import CLASSES, SIZE, export_onnx_model, image_bytes, serving, write_bundle  # noqa: F401


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenetv3_small_100 at 64 px with a random head, exported once per session."""
    return export_onnx_model(tmp_path_factory)


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from visionline.export import generate_keys

    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def repo(tmp_path: Path, onnx_model: Path) -> Path:
    """REPO/apples/1/ with one bundle."""
    root = tmp_path / "repo"
    write_bundle(onnx_model, root / "apples" / "1", "1")
    return root


@pytest.fixture
def server(repo: Path):
    with serving(repo, max_queue_delay_us=0) as running:
        yield running
