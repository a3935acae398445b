"""Dynamic batching: merging, whole request batches, the bounded queue, and the worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from visionline.serve import Batcher, OverloadedError
from visionline.serve._batcher import to_future, to_loop
from visionline.serve._metrics import ServerMetrics


class FakeRunner:
    """Records the batch sizes it sees and the thread it runs on."""

    name, version = "fake", "1"

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None):
        self.delay, self.gate = delay, gate
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.running = self.most_at_once = 0
        self.started = threading.Event()

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append(len(batch))
        self.threads.add(threading.current_thread().name)
        self.running -= 1
        return {"probabilities": batch[:, :1] * 2}


def _rows(n: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) + start).reshape(n, 1)


def _histogram_count(metrics: ServerMetrics) -> tuple[float, float]:
    samples = {s.name: s.value for m in metrics.registry.collect() if m.name == "visionline_batch_size" for s in m.samples}
    return samples["visionline_batch_size_count"], samples["visionline_batch_size_sum"]


def test_concurrent_requests_merge_and_results_go_back_to_their_callers():
    runner, metrics = FakeRunner(), ServerMetrics()
    batcher = Batcher(runner, metrics, max_batch_size=8, max_queue_delay_us=1_000_000)

    async def main():
        for _ in range(7):
            batcher.expect()  # seven more requests are being decoded: worth waiting for
        return await asyncio.gather(*(batcher.submit(_rows(1, start=i)) for i in range(8)))

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    assert runner.batches == [8]
    assert [float(r.outputs["probabilities"][0, 0]) for r in results] == [2.0 * i for i in range(8)]
    assert all(r.batch_rows == 8 for r in results)
    assert _histogram_count(metrics) == (1.0, 8.0)
    assert runner.threads and not any("MainThread" in t for t in runner.threads)


def test_request_batches_stay_whole_and_lone_requests_do_not_wait():
    runner = FakeRunner()
    batcher = Batcher(runner, ServerMetrics(), max_batch_size=4, max_queue_delay_us=5_000_000)

    async def main():
        big = await batcher.submit(_rows(6))  # larger than max_batch_size: runs alone, unsplit
        started = time.perf_counter()
        await batcher.submit(_rows(1))  # nobody else is coming: no 5 s batching wait
        return big, time.perf_counter() - started

    try:
        big, waited = asyncio.run(main())
    finally:
        batcher.stop()
    assert runner.batches == [6, 1]
    assert big.outputs["probabilities"].shape == (6, 1)
    assert waited < 2.5


def test_two_batched_requests_that_do_not_fit_together_run_separately():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    batcher = Batcher(runner, ServerMetrics(), max_batch_size=4, max_queue_delay_us=0)

    async def main():
        first = asyncio.ensure_future(batcher.submit(_rows(1)))
        await asyncio.sleep(0.05)  # the worker holds the first, blocked on the gate
        rest = [asyncio.ensure_future(batcher.submit(_rows(3))) for _ in range(2)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    assert runner.batches == [1, 3, 3]


def test_full_queue_refuses_with_overloaded_error():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    metrics = ServerMetrics()
    batcher = Batcher(runner, metrics, max_batch_size=1, max_queue_delay_us=0, max_queue_size=2)

    async def main():
        running = asyncio.ensure_future(batcher.submit(_rows(1)))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit(_rows(1))) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError, match="queue for fake is full"):
            await batcher.submit(_rows(1))
        gate.set()
        return await asyncio.gather(running, *queued)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    assert len(results) == 3


def test_stop_drains_queued_jobs():
    runner = FakeRunner(delay=0.02)
    batcher = Batcher(runner, ServerMetrics(), max_batch_size=1, max_queue_delay_us=0)

    async def main():
        jobs = [asyncio.ensure_future(batcher.submit(_rows(1))) for _ in range(5)]
        await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, batcher.stop)
        return await asyncio.gather(*jobs)

    assert len(asyncio.run(main())) == 5
    assert sum(runner.batches) == 5


def _dispatch_from(name: str, batcher: Batcher, batch: np.ndarray, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    """What the preprocess pool does after decoding: hand the rows over from its own thread."""
    future = loop.create_future()
    thread = threading.Thread(
        target=batcher.dispatch, args=(batch, to_loop(loop, future)), kwargs={"expected": True, "inline": True}, name=name
    )
    thread.start()
    return future


def test_lone_request_runs_on_the_thread_that_decoded_it_without_queueing():
    runner = FakeRunner()
    batcher = Batcher(runner, ServerMetrics(), max_batch_size=8, max_queue_delay_us=5_000_000)

    async def main():
        batcher.expect()
        return await _dispatch_from("preprocess-test", batcher, _rows(1, start=3), asyncio.get_running_loop())

    try:
        result = asyncio.run(main())
    finally:
        batcher.stop()
    assert result.inline and result.batch_rows == 1
    assert float(result.outputs["probabilities"][0, 0]) == 6.0
    assert runner.threads == {"preprocess-test"}  # no hand-off to the batcher thread, no delay


def test_inline_caller_queues_when_another_request_is_on_its_way():
    runner = FakeRunner()
    batcher = Batcher(runner, ServerMetrics(), max_batch_size=8, max_queue_delay_us=5_000_000)

    async def main():
        loop = asyncio.get_running_loop()
        batcher.expect()
        batcher.expect()  # two requests are being decoded
        first = _dispatch_from("preprocess-a", batcher, _rows(1), loop)
        await asyncio.sleep(0.05)
        second = _dispatch_from("preprocess-b", batcher, _rows(1, start=1), loop)
        return await asyncio.gather(first, second)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    assert runner.batches == [2]  # the first waited for the second and they merged
    assert not any(r.inline for r in results)
    assert runner.threads == {"batcher-fake-1"}


def test_blocking_callers_merge_and_each_gets_its_own_rows():
    """The gRPC handlers' way: decode, dispatch from their own thread, block on a plain future."""
    runner = FakeRunner()
    batcher = Batcher(runner, ServerMetrics(), max_batch_size=8, max_queue_delay_us=5_000_000)
    results: dict[int, object] = {}

    def handler(start: int) -> None:
        future: Future = Future()
        batcher.dispatch(_rows(1, start=start), to_future(future), expected=True, inline=True)
        results[start] = future.result(timeout=10)

    batcher.expect()
    batcher.expect()
    threads = [threading.Thread(target=handler, args=(start,)) for start in (0, 5)]
    try:
        threads[0].start()
        time.sleep(0.05)
        threads[1].start()
        for thread in threads:
            thread.join(10)
    finally:
        batcher.stop()
    assert runner.batches == [2]
    assert [float(results[k].outputs["probabilities"][0, 0]) for k in (0, 5)] == [0.0, 10.0]


def test_inline_caller_never_runs_the_model_beside_a_running_batch():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    metrics = ServerMetrics()
    batcher = Batcher(runner, metrics, max_batch_size=8, max_queue_delay_us=0)

    def queued_rows() -> float:
        return metrics.registry.get_sample_value(
            "visionline_queue_rows", {"model": "fake", "version": "1"}
        ) or 0.0

    async def main():
        loop = asyncio.get_running_loop()
        running = asyncio.ensure_future(batcher.submit(_rows(1)))
        await loop.run_in_executor(None, runner.started.wait, 5)  # the worker is inside the model
        batcher.expect()
        waiting = _dispatch_from("preprocess-test", batcher, _rows(1), loop)
        async with asyncio.timeout(5):
            while queued_rows() < 1:  # the second request waits in the queue, not in a model call
                await asyncio.sleep(0.005)
        gate.set()
        return await asyncio.gather(running, waiting)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    assert runner.most_at_once == 1
    assert runner.batches == [1, 1] and not any(r.inline for r in results)
