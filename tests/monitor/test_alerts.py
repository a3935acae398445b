import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from visionline.monitor import (
    Alarm,
    on_alarm,
    post_webhook,
    remove_alarm_callback,
    webhook_callback,
)
from visionline.monitor._alerts import fire


def _alarm() -> Alarm:
    return Alarm(
        "apples",
        "1",
        3,
        1.0,
        ["quality_ks"],
        {"quality_ks": 0.5},
        {"quality_ks": 1e-6},
        "dirty lens: ...",
        {},
    )


class Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list] = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Recorder.fail_first:
            Recorder.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        Recorder.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    Recorder.received = []
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_webhook_retries_a_5xx_then_delivers(http_server):
    Recorder.fail_first = 2
    result = post_webhook(http_server, {"alarm": _alarm().to_dict()}, retries=3, backoff=0.01)
    assert result.delivered and result.attempts == 3 and result.status == 200
    assert Recorder.received[0]["alarm"]["cause"] == "dirty lens: ..."


def test_webhook_to_a_closed_port_gives_up_without_raising():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = post_webhook(f"http://127.0.0.1:{port}/", {"x": 1}, retries=2, backoff=0.01, timeout=1)
    assert not result.delivered and result.attempts == 3 and result.error


def test_alarm_callbacks_isolate_failures(http_server):
    seen = []

    def broken(alarm):
        raise RuntimeError("boom")

    on_alarm(broken)
    on_alarm(seen.append)
    try:
        assert fire(_alarm(), [webhook_callback(http_server, backoff=0.01)]) == 2
    finally:
        remove_alarm_callback(broken)
        remove_alarm_callback(seen.append)
    assert len(seen) == 1 and seen[0].window == 3
    assert Recorder.received[0]["type"] == "visionline.drift_alarm"
