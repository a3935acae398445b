"""The server process: keep-alive connections outlive the clients' own idle timeouts."""

from __future__ import annotations

import socket
import time

import pytest
from serve_support import serving

from visionline.errors import ServiceUnavailableError
from visionline.serve import InferenceServer, ServerConfig


def test_an_idle_keep_alive_connection_stays_open_past_the_clients_timeout(repo):
    """httpx drops idle connections after 5 s; had the server closed them at the same moment,
    a request sent on one just then would fail with a bare connection error."""
    with serving(repo) as server, socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as conn:
        request = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n"
        conn.sendall(request)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(6)
        conn.setblocking(False)
        try:
            closed = conn.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            closed = False
        assert not closed
        conn.setblocking(True)
        conn.sendall(request)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_port_in_use_is_one_clear_error(repo):
    """uvicorn exits the process when it cannot bind, and grpc raises a bare RuntimeError;
    both had ended `visionline serve` with a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for ports, fix in (
            ({"http_port": port, "grpc_port": None}, "--http-port"),
            ({"http_port": 0, "grpc_port": port}, "--grpc-port"),
        ):
            server = InferenceServer(ServerConfig(repository=repo, **ports))
            with (
                pytest.raises(ServiceUnavailableError, match=f"pick a free {fix}"),
                server.running(),
            ):
                pass
