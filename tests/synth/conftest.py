"""Shared fixtures for the synth tests: one small renderer per test session."""

from __future__ import annotations

import pytest

from visionline.synth import AppleRenderer


@pytest.fixture(scope="session")
def renderer() -> AppleRenderer:
    return AppleRenderer(96)
