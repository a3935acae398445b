"""The prediction-log hook: asynchronous, bounded, and unable to fail or slow a response."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from visionline.serve._metrics import ServerMetrics

log = logging.getLogger("visionline.serve")


@dataclass
class PredictionRecord:
    """One model's answer to one request row; shadow answers carry route='shadow'."""

    request_id: str
    model: str
    version: str
    route: str
    label: str
    probabilities: dict[str, float]
    defect_score: float
    is_defect: bool
    threshold: float
    timestamp: float
    extra: dict[str, Any] = field(default_factory=dict)


PredictionHook = Callable[[list[PredictionRecord]], None]


class HookDispatcher:
    """Runs a hook in its own thread from a bounded queue; full queue → drop and count."""

    def __init__(self, hook: PredictionHook | None, metrics: ServerMetrics, maxsize: int = 10_000):
        self.hook = hook
        self.metrics = metrics
        self._queue: queue.Queue[list[PredictionRecord] | None] = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.hook is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-hook", daemon=True)
            self._thread.start()

    def submit(self, records: list[PredictionRecord]) -> None:
        """Never blocks: a full queue drops the records and counts them."""
        if self.hook is None or not records:
            return
        try:
            self._queue.put_nowait(records)
        except queue.Full:
            self.metrics.hook_dropped.inc(len(records))

    def _run(self) -> None:
        while True:
            records = self._queue.get()
            if records is None:
                return
            try:
                self.hook(records)  # type: ignore[misc]
            except Exception:
                self.metrics.hook_failures.inc()
                log.exception("prediction hook failed; the response was not affected")

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
