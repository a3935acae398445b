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


def test_a_tracking_server_behind_a_proxy_is_left_to_the_proxy(closed_port, monkeypatch):
    from visionline.registry._resolve import require_reachable

    uri = f"http://127.0.0.1:{closed_port}"
    for name in ("no_proxy", "NO_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    require_reachable(uri)  # a direct connection would be refused; the proxy may still reach it
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(ServiceUnavailableError, match="does not answer"):
        require_reachable(uri)
