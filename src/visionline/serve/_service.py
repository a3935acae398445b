"""Protocol-neutral inference: routing (canary/shadow), preprocessing, batching, postprocessing.

REST calls `InferenceService.infer` on its event loop; gRPC calls `infer_blocking` from its
handler threads. Both share routing, validation, the batcher, metrics, timeouts and prediction
logging; they differ only in who decodes (the preprocess pool or the handler) and how they wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionline.errors import DataError, ServiceUnavailableError, VisionlineError
from visionline.serve._batcher import BatchResult, Done, RetiredError, to_future, to_loop
from visionline.serve._config import Route, ServerConfig
from visionline.serve._hooks import HookDispatcher, PredictionHook, PredictionRecord
from visionline.serve._metrics import ServerMetrics
from visionline.serve._protocol import Tensor
from visionline.serve._repository import ModelRepository, Served
from visionline.serve._runner import ANOMALY_MAP, ANOMALY_SCORE, EMBEDDING, PROBABILITIES

log = logging.getLogger("visionline.serve")

ROUTE_HEADER = "x-visionline-route"
"""`canary` or `primary` forces a route for one request, e.g. for a smoke test of the canary."""


class RequestTimeoutError(ServiceUnavailableError):
    """The request did not finish within the server's request timeout."""


@dataclass
class _Prepared:
    """One request on its way: the model batch, the batcher's result, and what the prediction
    log keeps per row of an image request."""

    batch: np.ndarray | None = None
    result: BatchResult | None = None
    per_row: dict[str, list[Any]] = field(default_factory=dict)
    preprocess_s: float = 0.0


@dataclass
class InferResult:
    """One request's outputs and the version that produced them."""

    model: str
    version: str
    route: str
    outputs: dict[str, np.ndarray]
    classes: list[str]
    class_labels: dict[str, str]
    threshold: float
    timings: dict[str, float]
    default_outputs: list[str] = field(default_factory=list)
    """What a request that names no outputs gets (an anomaly map only when asked for)."""


class InferenceService:
    """Owns the repository, the router state, the preprocess pool and the prediction hook."""

    def __init__(
        self,
        config: ServerConfig,
        repository: ModelRepository,
        metrics: ServerMetrics,
        hook: PredictionHook | None = None,
    ) -> None:
        self.config = config
        self.repository = repository
        self.metrics = metrics
        self.hooks = HookDispatcher(hook, metrics, config.prediction_log_queue)
        self.canary: dict[str, Route] = {r.model: r for r in config.canary}
        self.shadow: dict[str, Route] = {r.model: r for r in config.shadow}
        self._rng = random.Random(config.canary_seed)
        self._pool = ThreadPoolExecutor(config.preprocess_threads, thread_name_prefix="preprocess")
        self._decode_slots = threading.BoundedSemaphore(config.preprocess_threads)

    def start(self) -> None:
        self.hooks.start()

    # --- routing ------------------------------------------------------------------------------
    def route(self, model: str, version: str | None, forced: str | None) -> tuple[Served, str]:
        """Pick the version for a request: explicit version, forced route, or the canary draw."""
        if version:
            return self.repository.get(model, version), "explicit"
        challengers = [r.version for r in (self.canary.get(model), self.shadow.get(model)) if r]
        canary = self.canary.get(model)
        if canary is None:
            return self.repository.get(model, exclude=challengers), "primary"
        if forced not in (None, "", "canary", "primary"):
            raise DataError(f"Header {ROUTE_HEADER} must be 'canary' or 'primary', not {forced!r}.")
        use_canary = forced == "canary" or (
            forced != "primary" and self._rng.random() * 100.0 < canary.percent
        )
        if use_canary and self.repository.is_ready(model, canary.version):
            return self.repository.get(model, canary.version), "canary"
        return self.repository.get(model, exclude=challengers), "primary"

    # --- inference ----------------------------------------------------------------------------
    @staticmethod
    def _image_input(served: Served, tensors: list[Tensor]) -> Tensor:
        """The request's one input, checked before any thread is involved."""
        if len(tensors) != 1:
            raise DataError(f"Model {served.model} takes one input named 'image', got {len(tensors)}.")
        tensor = tensors[0]
        if tensor.name != "image":
            raise DataError(f"Model {served.model} has one input named 'image', not {tensor.name!r}.")
        if tensor.datatype == "BYTES":
            if tensor.array.ndim not in (1, 2) or (tensor.array.ndim == 2 and tensor.array.shape[1] != 1):
                raise DataError("BYTES input 'image' must have shape [N] or [N, 1] of encoded images.")
        elif tensor.datatype != "FP32":
            raise DataError(f"Input 'image' must be BYTES (encoded images) or FP32, not {tensor.datatype}.")
        return tensor

    def _start(self, served: Served, tensors: list[Tensor], done: Done, *, decode_here: bool) -> _Prepared:
        """Check one request, decode it (in the preprocess pool, or on this thread when the caller
        owns one) and hand the batch to the batcher; the model's answer goes to `done`."""
        tensor = self._image_input(served, tensors)
        prepared = _Prepared()
        if tensor.datatype != "BYTES":
            started = time.perf_counter()
            prepared.batch = served.runner.check_tensor(tensor.array)
            prepared.preprocess_s = time.perf_counter() - started
            self.metrics.step_latency.labels(served.model, served.version, "preprocess").observe(prepared.preprocess_s)
            served.batcher.dispatch(prepared.batch, done)
            return prepared
        images = list(tensor.array.reshape(-1))
        served.batcher.expect()
        if decode_here:
            self._decode_and_dispatch(served, images, prepared, done)
            return prepared
        try:
            self._pool.submit(self._decode_and_dispatch, served, images, prepared, done)
        except BaseException:
            served.batcher.unexpect()
            raise
        return prepared

    async def _run(self, served: Served, tensors: list[Tensor]) -> _Prepared:
        """One request for a caller on the event loop: the loop only routes bytes, the preprocess
        pool decodes."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        prepared = self._start(served, tensors, to_loop(loop, future), decode_here=False)
        prepared.result = await future
        return prepared

    def _run_blocking(self, served: Served, tensors: list[Tensor], deadline: float) -> _Prepared:
        """One request for a caller that owns a thread (a gRPC handler): it decodes itself and
        waits for the batcher, so a lone request never changes threads."""
        future: Future = Future()
        prepared = self._start(served, tensors, to_future(future), decode_here=True)
        try:
            prepared.result = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError as exc:
            raise self._timed_out() from exc
        return prepared

    def _decode_and_dispatch(self, served: Served, images: list[bytes], prepared: _Prepared, done: Done) -> None:
        """Decode (at most `preprocess_threads` requests at once, over REST and gRPC together),
        then hand the batch straight to the batcher, which runs it here if the model is idle."""
        started = time.perf_counter()
        try:
            with self._decode_slots:
                if self.hooks.hook is None:
                    batch = served.runner.decode(images)
                else:
                    batch, quality = served.runner.decode_with_quality(images)
                    prepared.per_row = {"image": [bytes(b) for b in images], "quality": quality.tolist()}
        except Exception as exc:  # noqa: BLE001 - bad images become the request's error
            served.batcher.unexpect()
            done(None, exc)
            return
        prepared.batch = batch
        prepared.preprocess_s = time.perf_counter() - started
        self.metrics.step_latency.labels(served.model, served.version, "preprocess").observe(prepared.preprocess_s)
        served.batcher.dispatch(batch, done, expected=True, inline=True)

    def _timed_out(self) -> RequestTimeoutError:
        self.metrics.rejected.labels("timeout").inc()
        return RequestTimeoutError(
            f"Inference took longer than {self.config.request_timeout_s:g} s; retry or send smaller batches."
        )

    async def infer(
        self,
        model: str,
        version: str | None,
        tensors: list[Tensor],
        *,
        request_id: str,
        forced_route: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> InferResult:
        """Route, preprocess, batch and postprocess one request within the request timeout, from
        the event loop. `parameters` (delivery, supplier, line, camera ids...) travel to the
        prediction log."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                served, route = self.route(model, version, forced_route)
                try:
                    prepared = await self._run(served, tensors)
                except RetiredError:
                    if version:
                        raise
                    served, route = self.route(model, None, forced_route)  # swapped out: use the new one
                    prepared = await self._run(served, tensors)
        except TimeoutError as exc:
            raise self._timed_out() from exc
        return self._finish(served, route, prepared, started, request_id, parameters or {})

    def infer_blocking(
        self,
        model: str,
        version: str | None,
        tensors: list[Tensor],
        *,
        request_id: str,
        forced_route: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> InferResult:
        """`infer` for a worker thread that may block (the gRPC handlers); never call it on the loop."""
        started = time.perf_counter()
        deadline = time.monotonic() + self.config.request_timeout_s
        served, route = self.route(model, version, forced_route)
        try:
            prepared = self._run_blocking(served, tensors, deadline)
        except RetiredError:
            if version:
                raise
            served, route = self.route(model, None, forced_route)
            prepared = self._run_blocking(served, tensors, deadline)
        return self._finish(served, route, prepared, started, request_id, parameters or {})

    def _finish(
        self,
        served: Served,
        route: str,
        prepared: _Prepared,
        started: float,
        request_id: str,
        parameters: dict[str, Any],
    ) -> InferResult:
        """Count, log and mirror a request whose model call is done; build its result."""
        result = prepared.result
        self.metrics.routed.labels(served.model, served.version, route).inc()
        post_started = time.perf_counter()
        runner = served.runner
        latency_ms = (post_started - started) * 1000.0
        per_row = {**prepared.per_row, "latency_ms": [latency_ms] * len(prepared.batch)}
        self.hooks.submit(self._records(served, route, request_id, result.outputs, parameters, per_row))
        shadow = self.shadow.get(served.model)
        if (
            shadow is not None
            and shadow.version != served.version
            and (shadow.percent >= 100.0 or self._rng.random() * 100.0 < shadow.percent)
        ):
            self._mirror(served.model, shadow.version, prepared.batch, request_id, parameters, per_row)
        postprocess_s = time.perf_counter() - post_started
        return InferResult(
            model=served.model,
            version=served.version,
            route=route,
            outputs=result.outputs,
            classes=runner.classes,
            class_labels=runner.class_labels,
            threshold=runner.threshold,
            default_outputs=[n for n in runner.default_outputs if n in result.outputs],
            timings={
                "preprocess": prepared.preprocess_s,
                "queue": result.queue_s,
                "inference": result.inference_s,
                "postprocess": postprocess_s,
            },
        )

    def _records(
        self,
        served: Served,
        route: str,
        request_id: str,
        outputs: dict[str, np.ndarray],
        parameters: dict[str, Any],
        per_row: dict[str, list[Any]] | None = None,
    ) -> list[PredictionRecord]:
        if self.hooks.hook is None:
            return []
        runner = served.runner
        probs = outputs[PROBABILITIES]
        now = time.time()
        records = []
        for i, row in enumerate(probs):
            score = float(1.0 - row[0])
            flagged = score > runner.threshold
            records.append(
                PredictionRecord(
                    request_id=request_id if len(probs) == 1 else f"{request_id}/{i}",
                    model=served.model,
                    version=served.version,
                    route=route,
                    label=runner.classes[int(np.argmax(row))],
                    probabilities={c: float(p) for c, p in zip(runner.classes, row)},
                    defect_score=score,
                    is_defect=flagged,
                    threshold=runner.threshold,
                    timestamp=now,
                    extra={
                        "parameters": parameters,
                        **{key: values[i] for key, values in (per_row or {}).items()},
                        **({"embedding": outputs[EMBEDDING][i].tolist()} if EMBEDDING in outputs else {}),
                    },
                )
            )
        return records

    def _mirror(
        self,
        model: str,
        version: str,
        batch: np.ndarray,
        request_id: str,
        parameters: dict[str, Any],
        per_row: dict[str, list[Any]],
    ) -> None:
        """Queue the same preprocessed batch for the shadow version; nobody waits for it, and its
        answer only goes to the hook."""
        try:
            served = self.repository.get(model, version)
        except VisionlineError as exc:
            log.warning("shadow request to %s v%s failed: %s", model, version, exc)
            return

        def done(result: BatchResult | None, error: BaseException | None) -> None:
            if error is not None or result is None:
                log.warning("shadow request to %s v%s failed: %s", model, version, error)
                return
            self.metrics.routed.labels(model, version, "shadow").inc()
            self.hooks.submit(self._records(served, "shadow", request_id, result.outputs, parameters, per_row))

        served.batcher.dispatch(batch, done)

    def classify(self, result: InferResult, anomaly_map: bool = False) -> list[dict]:
        """Per-image label (argmax), probabilities, and the decision at the bundle threshold.

        `decision` is `good` unless the defect score passes the threshold; then it is the label
        of the most likely defect class, as the edge runtime decides. An anomaly bundle's rows
        also carry the raw `anomaly_score`, and with `anomaly_map` the map (rows of floats in
        the model's square input frame).
        """
        rows = []
        raw_scores = result.outputs.get(ANOMALY_SCORE)
        maps = result.outputs.get(ANOMALY_MAP)
        if anomaly_map and maps is None:
            raise DataError(
                f"Model {result.model} is not an anomaly model and has no anomaly map; drop "
                "the anomaly_map parameter."
            )
        for i, row in enumerate(result.outputs[PROBABILITIES]):
            score = float(1.0 - row[0])
            worst_defect = result.classes[1 + int(np.argmax(row[1:]))] if len(row) > 1 else "good"
            rows.append(
                {
                    "label": result.classes[int(np.argmax(row))],
                    "decision": result.class_labels.get(worst_defect, worst_defect)
                    if score > result.threshold
                    else "good",
                    "probabilities": {c: round(float(p), 6) for c, p in zip(result.classes, row)},
                    "defect_score": round(score, 6),
                    "is_defect": score > result.threshold,
                    "threshold": result.threshold,
                }
            )
            if raw_scores is not None:
                rows[-1]["anomaly_score"] = round(float(raw_scores[i]), 6)
            if anomaly_map:
                rows[-1]["anomaly_map"] = np.round(maps[i, 0], 4).tolist()
        return rows

    def close(self) -> None:
        self.hooks.stop()
        self._pool.shutdown(wait=True)
