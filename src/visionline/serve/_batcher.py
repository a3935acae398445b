"""Dynamic batching: concurrent requests for one model version merge into one ONNX Runtime call.

The model never runs on the event loop. A request that already carries a batch stays whole. The
queue is bounded in rows, so overload becomes a 503 instead of unbounded latency. The batcher
waits up to `max_queue_delay_us` for more rows, but only while another request is on its way
(being decoded); when nobody can join it runs at once, so a lone client pays no batching delay.
A lone request that finds the model idle does not even change threads: the thread that decoded
it runs the model itself (`dispatch(..., inline=True)`), which saves two thread wake-ups. Either
way only one model call per version runs at a time. Results go to a `Done` callback, so callers
on an event loop (REST), blocking threads (gRPC) and fire-and-forget shadows share one queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
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
class BatchResult:
    """The rows of one request, cut back out of the merged batch, and where its time went."""

    outputs: dict[str, np.ndarray]
    queue_s: float
    inference_s: float
    batch_rows: int
    inline: bool = False


Done = Callable[[BatchResult | None, BaseException | None], None]
"""Called once per job, from whichever thread ran the model: the result, or the error."""


@dataclass
class _Job:
    batch: np.ndarray
    done: Done
    enqueued: float = field(default_factory=time.perf_counter)


def _resolve(future: asyncio.Future | Future, value: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def to_loop(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> Done:
    """A `Done` that resolves an asyncio future on its loop; a closed loop has nobody to tell."""

    def done(value: BatchResult | None, error: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(_resolve, future, value, error)
        except RuntimeError:
            log.debug("event loop closed before a result could be delivered")

    return done


def to_future(future: Future) -> Done:
    """A `Done` that resolves a `concurrent.futures.Future` for a thread blocked on it."""
    return lambda value, error: _resolve(future, value, error)


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
        self._busy = False
        self._cond = threading.Condition()
        self._stopping = False
        self._labels = {"model": runner.name, "version": runner.version}
        self._queue_gauge = metrics.queue_rows.labels(**self._labels)
        self._batch_hist = metrics.batch_size.labels(**self._labels)
        self._inference_hist = metrics.step_latency.labels(step="inference", **self._labels)
        self._queue_hist = metrics.step_latency.labels(step="queue", **self._labels)
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
            self._cond.notify_all()

    async def submit(self, batch: np.ndarray) -> BatchResult:
        """Queue one request's rows and wait for its outputs (from the event loop)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.dispatch(batch, to_loop(loop, future))
        return await future

    def dispatch(self, batch: np.ndarray, done: Done, *, expected: bool = False, inline: bool = False) -> None:
        """Queue `batch` from any thread; its result or refusal goes to `done`, never raises.

        `expected` closes an earlier `expect()`. With `inline`, a caller thread that finds the
        model idle, the queue empty and nobody else on the way runs the model itself instead of
        waking the worker: nothing could have joined the batch anyway.
        """
        job = _Job(batch=batch, done=done)
        with self._cond:
            if expected:
                self._incoming = max(0, self._incoming - 1)
            error = self._refusal(len(batch))
            run_here = (
                error is None and inline and not self._busy and not self._jobs and self._incoming == 0
            )
            if run_here:
                self._busy = True
            elif error is None:
                self._jobs.append(job)
                self._rows += len(batch)
                self._queue_gauge.set(self._rows)
            self._cond.notify_all()
        if error is not None:
            done(None, error)
        elif run_here:
            try:
                self._execute([job], inline=True)
            finally:
                self._release()

    def _refusal(self, rows: int) -> ServiceUnavailableError | None:
        if self._stopping:
            return RetiredError(f"Model {self.runner.name} v{self.runner.version} is shutting down; retry.")
        if self._rows + rows > self.max_queue_size and self._rows > 0:
            self.metrics.rejected.labels("queue_full").inc()
            return OverloadedError(
                f"The queue for {self.runner.name} is full ({self._rows} rows); "
                "retry after a second or add replicas."
            )
        return None

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs or self._busy:
                if self._stopping and not self._jobs:
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
            self._busy = True
            self._queue_gauge.set(self._rows)
            return jobs

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            try:
                self._execute(jobs)
            finally:
                self._release()

    def _execute(self, jobs: list[_Job], inline: bool = False) -> None:
        """One model call for `jobs`; each gets its own rows back, or the call's error."""
        started = time.perf_counter()
        batch = jobs[0].batch if len(jobs) == 1 else np.concatenate([j.batch for j in jobs])
        try:
            outputs = self.runner.infer(batch)
            error: BaseException | None = None
        except Exception as exc:  # a failed run fails its requests, not the worker
            log.exception("inference failed for %s", self._labels)
            outputs, error = {}, exc
        inference_s = time.perf_counter() - started
        offset = 0
        for job in jobs:
            n = len(job.batch)
            queue_s = started - job.enqueued
            result = None
            if error is None:
                result = BatchResult(
                    outputs={k: v[offset : offset + n] for k, v in outputs.items()},
                    queue_s=queue_s,
                    inference_s=inference_s,
                    batch_rows=len(batch),
                    inline=inline,
                )
            offset += n
            job.done(result, error)
        self._batch_hist.observe(len(batch))
        self._inference_hist.observe(inference_s)
        for job in jobs:
            self._queue_hist.observe(started - job.enqueued)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every queued job and any model call in progress, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            self._cond.wait_for(lambda: not self._busy, timeout)

