"""Pure ASGI middleware: request ids, a body-size limit (413) and one JSON log line per request."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from visionline.errors import VisionlineError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("visionline.serve.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields merged in."""

    _SKIP: ClassVar[set[str]] = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in self._SKIP and k != "message"})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(JsonFormatter):
    """Human-readable lines: time, level, message, then the `extra=` fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in self._SKIP and k != "message")
        line = f"{self.formatTime(record)} {record.levelname} {record.getMessage()} {extras}".rstrip()
        return line + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


class BodyTooLargeError(VisionlineError):
    """The request body passed the server's limit (HTTP 413)."""


async def _send_json(send: Send, status: int, payload: dict, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Gives every request an id (kept from `x-request-id` if sent), limits its body, logs it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        started = time.perf_counter()
        status = {"code": 500, "started": False}
        limit = self.max_body_bytes

        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            await _send_json(send, 413, {"error": self._too_large()}, [id_header])
            log_request(request_id, scope.get("method"), scope.get("path"), 413, started)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(self._too_large())
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), id_header]}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLargeError:
            if not status["started"]:
                await _send_json(send, 413, {"error": self._too_large()}, [id_header])
            status["code"] = 413
        finally:
            log_request(request_id, scope.get("method"), scope.get("path"), status["code"], started)

    def _too_large(self) -> str:
        return f"Request body is larger than {self.max_body_bytes:,} bytes; send smaller images or batches."


def log_request(request_id: str | None, method: str | None, path: str | None, status: int | str, started: float) -> None:
    """The one access-log line per REST request or gRPC call (written off the loop while serving)."""
    log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )
