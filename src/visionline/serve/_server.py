"""The server process: REST (uvicorn) on an event loop, gRPC on its own handler threads, models
loaded in the background.

Liveness is true as soon as the sockets listen; readiness only once models are warm. Shutdown
stops accepting, lets in-flight requests finish (`shutdown_grace_s`), then drains the batchers.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import queue
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from visionline.errors import ServiceUnavailableError
from visionline.serve._config import ServerConfig
from visionline.serve._hooks import PredictionHook
from visionline.serve._metrics import ServerMetrics
from visionline.serve._repository import ModelRepository
from visionline.serve._service import InferenceService

log = logging.getLogger("visionline.serve")

KEEP_ALIVE_S = 75
"""Idle keep-alive connections are closed after this long: longer than the idle timeouts of
clients and load balancers (httpx 5 s, AWS ALB 60 s), so the client always gives up first. With
uvicorn's default of 5 s, equal to httpx's, a client could send a request on a connection the
server was closing at that very moment and get a bare connection error (2 of 7 runs of the
20,000-request load test; 2 in 90 reuses at 4.97-5.03 s idle in a probe, none at 75 s)."""


TLS_GOODBYE_S = 1.0
"""How long a stopping server waits for TLS clients to acknowledge the close of a connection
that has nothing left to send."""


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (`uvicorn[standard]`): cheaper wake-ups from the preprocess and
    batcher threads and faster sockets; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _BackgroundLogHandler(logging.handlers.QueueHandler):
    """Hands records, unformatted, to the writer thread; a stalled log sink drops lines rather
    than stalling requests."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            pass


@contextmanager
def _log_writes_off_the_loop(max_records: int = 10_000) -> Iterator[None]:
    """While serving, the `visionline` logger's handlers format and write in a background thread,
    so one access-log line per request costs the event loop no write to a slow or full stderr."""
    logger = logging.getLogger("visionline")
    handlers = list(logger.handlers)
    if not handlers or any(isinstance(h, _BackgroundLogHandler) for h in handlers):
        yield  # nothing to move, or a server in this process already moved it
        return
    records: queue.Queue[logging.LogRecord] = queue.Queue(max_records)
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    ours = _BackgroundLogHandler(records)
    logger.handlers[:] = [ours]
    listener.start()
    try:
        yield
    finally:
        if logger.handlers == [ours]:
            logger.handlers[:] = handlers
        listener.stop()


def _quiet_server_class() -> type:
    import uvicorn

    class QuietSignalsServer(uvicorn.Server):
        """Leaves signals to `InferenceServer`, which drains gRPC and the batchers before exiting."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def shutdown(self, sockets: Any = None) -> None:
            closer = asyncio.ensure_future(self._end_tls_goodbyes()) if self.config.is_ssl else None
            try:
                await super().shutdown(sockets)
            finally:
                if closer is not None:
                    closer.cancel()

        async def _end_tls_goodbyes(self) -> None:
            """A closed TLS connection waits for the client's close_notify, which an idle
            keep-alive client never sends: without this, every stop with such a client would
            last the whole grace period. Once every response is written (all transports
            closing), clients get TLS_GOODBYE_S to answer, then their connections are cut."""
            connections = self.server_state.connections
            while connections and not all(c.transport.is_closing() for c in list(connections)):
                await asyncio.sleep(0.05)
            await asyncio.sleep(TLS_GOODBYE_S)
            for connection in list(connections):
                connection.transport.abort()

    return QuietSignalsServer


class InferenceServer:
    """REST + gRPC server over a model repository; `run()` blocks, `running()` runs in a thread."""

    def __init__(self, config: ServerConfig, hook: PredictionHook | None = None) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        pinned = [(r.model, r.version) for r in (*config.canary, *config.shadow)]
        self.repository = ModelRepository(config, self.metrics, pinned=pinned)
        self.service = InferenceService(config, self.repository, self.metrics, hook)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._uvicorn: Any = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self) -> None:
        """Run until told to stop (SIGINT/SIGTERM in the main thread, or `stop()`)."""
        with _log_writes_off_the_loop():
            await self._serve()

    async def _serve(self) -> None:
        from visionline.serve._grpc import create_grpc_server
        from visionline.serve._rest import create_app

        self._loop = asyncio.get_running_loop()
        self.service.start()
        app = create_app(self.service)
        grpc_server = None
        if self.config.grpc_port is not None:
            address = f"{self.config.host}:{self.config.grpc_port}"
            try:
                grpc_server, self.grpc_port = create_grpc_server(self.service, address)
            except RuntimeError as exc:  # grpc's only word for a port it cannot bind
                raise ServiceUnavailableError(
                    f"Could not listen for gRPC on {address} (in use or not allowed); pick a "
                    "free --grpc-port or pass --no-grpc."
                ) from exc
            grpc_server.start()
        import uvicorn

        uv_config = uvicorn.Config(
            app,
            host=self.config.host,
            port=self.config.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=self.config.shutdown_grace_s,
            timeout_keep_alive=KEEP_ALIVE_S,
            limit_concurrency=None,
            backlog=2048,
            ssl_certfile=self.config.tls_cert,
            ssl_keyfile=self.config.tls_key,
        )
        self._uvicorn = _quiet_server_class()(uv_config)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self.stop)
        loader = None
        if self.config.load_on_start:
            loader = self._loop.run_in_executor(None, self._load_and_poll)
        else:
            self.repository.initial_load_done = True
            self._start_polling()
        serve_task = asyncio.ensure_future(self._serve_http())
        while not self._uvicorn.started and not serve_task.done():
            await asyncio.sleep(0.01)
        if serve_task.done():
            if grpc_server is not None:
                grpc_server.stop(None)
            await serve_task
            raise ServiceUnavailableError(
                f"Could not listen on {self.config.host}:{self.config.http_port}; pick a free --http-port."
            )
        self.http_port = self._uvicorn.servers[0].sockets[0].getsockname()[1]
        log.info("listening", extra={"http_port": self.http_port, "grpc_port": self.grpc_port})
        self._started.set()
        try:
            await serve_task
        finally:
            if grpc_server is not None:
                drained = grpc_server.stop(self.config.shutdown_grace_s)
                await self._loop.run_in_executor(None, drained.wait)
            if loader is not None:
                await loader
            self.service.close()
            self.repository.close()

    async def _serve_http(self) -> None:
        """uvicorn exits the process (SystemExit, which asyncio re-raises past every handler)
        when it cannot bind its port; that becomes the one-line error above."""
        try:
            await self._uvicorn.serve()
        except SystemExit:
            return

    def _start_polling(self) -> None:
        if self.config.poll_s:
            self.repository.start_polling(self.config.poll_s)

    def _load_and_poll(self) -> None:
        self.repository.load_all()
        self._start_polling()

    def run(self) -> None:
        with asyncio.Runner(loop_factory=_new_event_loop) as runner:
            runner.run(self.serve())

    def stop(self) -> None:
        """Ask the server to shut down gracefully (thread-safe)."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    @contextmanager
    def running(self, timeout: float = 60.0) -> Iterator[InferenceServer]:
        """Run in a background thread (tests, benchmarks); waits for the sockets, not for models."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below
                errors.append(exc)
                self._started.set()

        thread = threading.Thread(target=target, name="visionline-server", daemon=True)
        thread.start()
        if not self._started.wait(timeout) or errors:
            self.stop()
            raise errors[0] if errors else ServiceUnavailableError("The server did not start in time.")
        try:
            yield self
        finally:
            self.stop()
            thread.join(timeout)

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until the first repository load finished; True if the server is ready."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.repository.initial_load_done:
                return self.repository.server_ready()
            time.sleep(0.02)
        return False
