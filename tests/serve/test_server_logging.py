"""While serving, log lines are formatted and written by a background thread, not the event loop;
gRPC calls get the same access lines as REST requests."""

from __future__ import annotations

import logging
import threading

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from serve_support import image_bytes, serving
from tritonclient.utils import InferenceServerException


class _Recorder(logging.Handler):
    """Notes which thread wrote each record and the request id it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None]] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((threading.current_thread().name, getattr(record, "request_id", None)))
        self.records.append(record)


@pytest.fixture
def recorder():
    logger = logging.getLogger("visionline")
    saved = logger.handlers[:], logger.level
    recorder = _Recorder()
    logger.handlers[:] = [recorder]
    logger.setLevel(logging.INFO)
    yield recorder
    logger.handlers[:], level = saved
    logger.setLevel(level)


def test_access_log_is_written_off_the_event_loop_and_handlers_come_back(repo, recorder):
    logger = logging.getLogger("visionline")
    with serving(repo) as server:
        response = httpx.get(f"http://127.0.0.1:{server.http_port}/v2/health/live", headers={"x-request-id": "r-1"})
        assert logger.handlers != [recorder]
    assert logger.handlers == [recorder]
    assert response.status_code == 200
    writers = {thread for thread, request_id in recorder.seen if request_id == "r-1"}
    assert writers and "visionline-server" not in writers


def test_grpc_calls_are_logged_with_status_and_request_id(repo, recorder):
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image_bytes(2)], dtype=object))
    with serving(repo) as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        client.infer("apples", [tensor], request_id="g-7")
        unnamed = client.infer("apples", [tensor]).get_response().id
        with pytest.raises(InferenceServerException):
            client.infer("pears", [tensor], request_id="g-8")
    lines = {r.request_id: r for r in recorder.records if getattr(r, "method", None) == "grpc"}
    assert lines["g-7"].status == "OK" and lines["g-7"].path.endswith("/ModelInfer")
    assert lines["g-8"].status == "NOT_FOUND"
    assert unnamed and lines[unnamed].status == "OK"  # an id was given, echoed and logged
    assert lines["g-7"].duration_ms > 0
