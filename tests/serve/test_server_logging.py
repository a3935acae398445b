"""While serving, log lines are formatted and written by a background thread, not the event loop."""

from __future__ import annotations

import logging
import threading

import httpx
from serve_support import serving


class _Recorder(logging.Handler):
    """Notes which thread wrote each record and the request id it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((threading.current_thread().name, getattr(record, "request_id", None)))


def test_access_log_is_written_off_the_event_loop_and_handlers_come_back(repo):
    logger = logging.getLogger("visionline")
    saved = logger.handlers[:], logger.level
    recorder = _Recorder()
    logger.handlers[:] = [recorder]
    logger.setLevel(logging.INFO)
    try:
        with serving(repo) as server:
            response = httpx.get(f"http://127.0.0.1:{server.http_port}/v2/health/live", headers={"x-request-id": "r-1"})
            assert logger.handlers != [recorder]
        assert logger.handlers == [recorder]
    finally:
        logger.handlers[:], level = saved
        logger.setLevel(level)
    assert response.status_code == 200
    writers = {thread for thread, request_id in recorder.seen if request_id == "r-1"}
    assert writers and "visionline-server" not in writers
