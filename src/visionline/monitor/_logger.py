"""`PredictionLogger`: the server's hook. Batched inserts from a background thread.

A bounded queue decouples serving from the database: `__call__` never blocks and never raises
(a full queue drops and counts), and a database outage is retried with backoff in the background.
Images are sampled into the blob store at `sample_rate`; flagged and low-confidence images are
always kept, because those are the ones people want to look at and relabel.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from visionline.monitor._adapter import LoggedPrediction, from_serve_records
from visionline.monitor._db import MonitorDB

log = logging.getLogger("visionline.monitor")


@dataclass
class LoggerStats:
    """Counters: committed (acknowledged), dropped (queue full), failed (gave up after retries)."""

    submitted: int = 0
    committed: int = 0
    dropped: int = 0
    failed: int = 0
    images_kept: int = 0


class PredictionLogger:
    """Log predictions asynchronously; usable as `InferenceServer(config, hook=logger)`."""

    def __init__(
        self,
        db: MonitorDB | str,
        blobs: Any | None = None,
        *,
        sample_rate: float = 0.01,
        keep_margin: float = 0.1,
        queue_size: int = 10_000,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        retries: int = 5,
        backoff: float = 0.2,
        seed: int | None = None,
    ) -> None:
        self.db = MonitorDB(db) if isinstance(db, str) else db
        self.blobs = blobs
        self.sample_rate = sample_rate
        self.keep_margin = keep_margin
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retries = retries
        self.backoff = backoff
        self.stats = LoggerStats()
        self._rng = random.Random(seed)
        self._queue: queue.Queue[LoggedPrediction | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="prediction-logger", daemon=True)
        self._thread.start()

    # --- the hook -----------------------------------------------------------------------------
    def __call__(self, records: Sequence[Any]) -> None:
        """Queue records from the server (or `LoggedPrediction`s); never blocks, never raises."""
        try:
            self.log(from_serve_records(records))
        except Exception:
            log.exception("could not queue %d prediction records", len(records))
            with self._lock:
                self.stats.dropped += len(records)

    def log(self, items: Sequence[LoggedPrediction]) -> None:
        """Queue predictions; a full queue drops (and counts) instead of waiting."""
        for item in items:
            try:
                self._idle.clear()
                self._queue.put_nowait(item)
                with self._lock:
                    self.stats.submitted += 1
            except queue.Full:
                with self._lock:
                    self.stats.dropped += 1

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far was committed or given up; True if it finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.wait(0.05) and self._queue.empty():
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 30.0) -> None:
        """Flush, stop the thread and release the database."""
        self.flush(timeout)
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def __enter__(self) -> PredictionLogger:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.flush_interval
            stop = False
            while len(batch) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not self._queue.qsize():
                    break
                try:
                    item = self._queue.get(timeout=max(remaining, 0.0) or 0.001)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if self._queue.empty():
                self._idle.set()
            if stop:
                return

    def _keep_image(self, item: LoggedPrediction) -> bool:
        if item.image is None or self.blobs is None:
            return False
        if item.flagged or abs(item.defect_score - item.threshold) < self.keep_margin:
            return True
        return self._rng.random() < self.sample_rate

    def _write(self, batch: list[LoggedPrediction]) -> None:
        rows = []
        for item in batch:
            sha = None
            try:
                if self._keep_image(item):
                    sha = self.blobs.put(item.image)
                    with self._lock:
                        self.stats.images_kept += 1
                rows.append(item.row(sha))
            except Exception:
                log.exception("could not prepare prediction %s; it is not logged", item.id)
                with self._lock:
                    self.stats.failed += 1
        for attempt in range(self.retries + 1):
            try:
                committed = self.db.insert_predictions(rows, skip_existing=attempt > 0)
                with self._lock:
                    self.stats.committed += committed
                return
            except Exception as exc:  # noqa: BLE001  (any driver error: retry, then count)
                if attempt == self.retries:
                    log.error(
                        "dropping %d predictions after %d tries: %s", len(rows), attempt + 1, exc
                    )
                    with self._lock:
                        self.stats.failed += len(rows)
                    return
                time.sleep(self.backoff * 2**attempt)
