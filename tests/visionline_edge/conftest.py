"""Fixtures for the edge runtime tests: signing keys and a tiny signed bundle (see edge_support)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from edge_support import make_bundle


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The plant's signing key pair (private, public)."""
    from visionline.export import generate_keys

    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def signed_bundle(tmp_path_factory: pytest.TempPathFactory, keys) -> Path:
    return make_bundle(tmp_path_factory.mktemp("signed") / "bundle", keys[0])


@pytest.fixture
def bundle(signed_bundle: Path, tmp_path: Path) -> Path:
    """A fresh copy of the signed bundle that a test may tamper with."""
    return Path(shutil.copytree(signed_bundle, tmp_path / "bundle"))


@pytest.fixture
def trust_store(tmp_path: Path, keys) -> Path:
    """A device's trust store: a folder holding the plant's public key."""
    store = tmp_path / "trusted-keys"
    store.mkdir()
    shutil.copyfile(keys[1], store / "plant.pub")
    return store
