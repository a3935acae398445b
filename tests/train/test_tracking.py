"""MLflow tracking: a tracking server that does not answer fails in seconds, before training."""

from __future__ import annotations

import socket

import pytest

from visionline.errors import ServiceUnavailableError
from visionline.registry._resolve import client
from visionline.train._tracking import Tracker


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_http_tracking_fails_at_once(closed_port):
    uri = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(ServiceUnavailableError, match="does not answer.*fix the tracking URI"):
        Tracker(uri, "apples")
    with pytest.raises(ServiceUnavailableError, match="does not answer"):
        client(uri)


def test_disabled_tracker_does_not_probe(closed_port):
    assert not Tracker(f"http://127.0.0.1:{closed_port}", "apples", enabled=False).enabled
