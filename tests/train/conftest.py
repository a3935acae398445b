"""Fixtures for the train stage: a tiny split dataset and one MLflow database per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_builders import make_project


@pytest.fixture
def tiny_project(tmp_path: Path):
    """(project, version): 30 tiny images of good/scratch/dent, split into train and val."""
    return make_project(tmp_path / "proj")


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sqlite MLflow store shared by the session, so its schema is created only once."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
