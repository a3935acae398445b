"""Dynamic batching: concurrent requests for one model version merge into one ONNX Runtime call.

The model runs in a dedicated worker thread, never on the event loop. A request that already
carries a batch stays whole. The queue is bounded in rows, so overload becomes a 503 instead of
unbounded latency. The batcher waits up to `max_queue_delay_us` for more rows, but only while
another request is on its way (being decoded); when nobody can join it runs at once, so a lone
client pays no batching delay.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from visionline.errors import ServiceUnavailableError
from visionline.serve._metrics import ServerMetrics
from visionline.serve._runner import ModelRunner

log = logging.getLogger("visionline.serve")


class OverloadedError(ServiceUnavailableError):
    """The request queue is full; the client should retry after a short pause."""

    retry_after_s = 1


class RetiredError(ServiceUnavailableError):
    """The version was swapped out while the request waited; the caller retries on the new one."""


@dataclass
class _Job:
    batch: np.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchResult:
    """The rows of one request, cut back out of the merged batch, and where its time went."""

    outputs: dict[str, np.ndarray]
    queue_s: float
    inference_s: float
    batch_rows: int


def _resolve(future: asyncio.Future, value: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Batcher:
    """One worker thread per model version, fed from a bounded queue."""

    def __init__(
        self,
        runner: ModelRunner,
        metrics: ServerMetrics,
        *,
        max_batch_size: int = 8,
        max_queue_delay_us: int = 2000,
        max_queue_size: int = 256,
    ) -> None:
        self.runner = runner
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self._jobs: deque[_Job] = deque()
        self._rows = 0
        self._incoming = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._labels = {"model": runner.name, "version": runner.version}
        self._thread = threading.Thread(
            target=self._run, name=f"batcher-{runner.name}-{runner.version}", daemon=True
        )
        self._thread.start()

    def expect(self) -> None:
        """A request is being decoded and will submit soon: worth waiting for."""
        with self._cond:
            self._incoming += 1

    def unexpect(self) -> None:
        with self._cond:
            self._incoming = max(0, self._incoming - 1)
            self._cond.notify()

    async def submit(self, batch: np.ndarray) -> BatchResult:
        """Queue one request's rows and wait for its outputs."""
        loop = asyncio.get_running_loop()
        job = _Job(batch=batch, future=loop.create_future(), loop=loop)
        with self._cond:
            if self._stopping:
                raise RetiredError(
                    f"Model {self.runner.name} v{self.runner.version} is shutting down; retry."
                )
            if self._rows + len(batch) > self.max_queue_size and self._rows > 0:
                self.metrics.rejected.labels("queue_full").inc()
                raise OverloadedError(
                    f"The queue for {self.runner.name} is full ({self._rows} rows); "
                    "retry after a second or add replicas."
                )
            self._jobs.append(job)
            self._rows += len(batch)
            self.metrics.queue_rows.labels(**self._labels).set(self._rows)
            self._cond.notify()
        return await job.future

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = self._jobs[0].enqueued + self.max_queue_delay_s
            while self._rows < self.max_batch_size and not self._stopping:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._incoming == 0:
                    break
                self._cond.wait(remaining)
            jobs = [self._jobs.popleft()]
            rows = len(jobs[0].batch)
            while self._jobs and rows + len(self._jobs[0].batch) <= self.max_batch_size:
                job = self._jobs.popleft()
                jobs.append(job)
                rows += len(job.batch)
            self._rows -= rows
            self.metrics.queue_rows.labels(**self._labels).set(self._rows)
            return jobs

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            started = time.perf_counter()
            batch = jobs[0].batch if len(jobs) == 1 else np.concatenate([j.batch for j in jobs])
            try:
                outputs = self.runner.infer(batch)
                error: BaseException | None = None
            except Exception as exc:  # a failed run fails its requests, not the worker
                log.exception("inference failed for %s", self._labels)
                outputs, error = {}, exc
            inference_s = time.perf_counter() - started
            self.metrics.batch_size.labels(**self._labels).observe(len(batch))
            self.metrics.step_latency.labels(step="inference", **self._labels).observe(inference_s)
            offset = 0
            for job in jobs:
                n = len(job.batch)
                queue_s = started - job.enqueued
                self.metrics.step_latency.labels(step="queue", **self._labels).observe(queue_s)
                result = None
                if error is None:
                    result = BatchResult(
                        outputs={k: v[offset : offset + n] for k, v in outputs.items()},
                        queue_s=queue_s,
                        inference_s=inference_s,
                        batch_rows=len(batch),
                    )
                offset += n
                job.loop.call_soon_threadsafe(_resolve, job.future, result, error)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every queued job, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
