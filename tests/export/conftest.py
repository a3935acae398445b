"""Fixtures for export tests: a project with an easy dataset and a small model trained on it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The builders live in export_support (pytest runs in importlib mode, so put this folder on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_support import CLASSES, SIZE, build_workspace, make_image_folder  # noqa: F401


@pytest.fixture(scope="session")
def export_workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Project + split dataset version + a mobilenetv3_small_100 trained briefly on it (shared)."""
    return build_workspace(tmp_path_factory)
