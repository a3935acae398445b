"""The line agent's loop: frame → verdict → outbox → reject signal, one item at a time."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionline.edge._decide import Decider, Decision
from visionline.edge._fleet import Rollout
from visionline.edge._frames import Frame, FrameSource
from visionline.edge._metrics import AgentMetrics
from visionline.edge._outbox import ImageStore, Outbox
from visionline.edge._types import SignalSink
from visionline.errors import VisionlineError

__all__ = ["AgentStats", "LineAgent"]

log = logging.getLogger("visionline.edge")


@dataclass
class AgentStats:
    """What one run did (also in the outbox's counters and the Prometheus metrics)."""

    frames: int = 0
    rejected: int = 0
    passed: int = 0
    fail_safe: dict[str, int] = field(default_factory=dict)
    sink_errors: int = 0


class LineAgent:
    """Runs a source through a decider; every verdict is committed to the outbox, then signalled.

    The outbox comes first so that a verdict the PLC acted on is never missing from the log; a
    sink that fails is counted and logged, and the line keeps deciding.
    """

    def __init__(
        self,
        source: FrameSource,
        decider: Decider,
        outbox: Outbox,
        sink: SignalSink | None = None,
        images: ImageStore | None = None,
        sample_every: int = 0,
        metrics: AgentMetrics | None = None,
        rollout: Rollout | None = None,
        camera_timeout_s: float | None = None,
    ) -> None:
        self.source, self.decider, self.outbox, self.sink = source, decider, outbox, sink
        self.images, self.sample_every = images, sample_every
        self.metrics = metrics or AgentMetrics()
        self.rollout = rollout
        self.stats = AgentStats()
        self._stop = threading.Event()
        self._next_gauge = 0.0
        self.camera_timeout_s = camera_timeout_s
        self.camera_alarm = False
        self._last_frame = time.monotonic()
        outbox.set_meta("version", decider.version)
        if decider.line:
            outbox.set_meta("line", decider.line)

    def handle(self, decision: Decision) -> None:
        """Store, count and signal one decision."""
        verdict, m = decision.verdict, self.metrics
        counters = {"verdicts": 1, "rejected" if verdict.reject else "passed": 1}
        if verdict.fail_safe:
            counters[f"fail_safe_{verdict.reason}"] = 1
        self.outbox.add(decision.record, counters)
        m.decision_latency.observe(max(0.0, verdict.decided_at - verdict.captured_at))
        m.verdicts.labels("reject" if verdict.reject else "pass").inc()
        if verdict.fail_safe:
            m.fail_safe.labels(verdict.reason).inc()
            self.stats.fail_safe[verdict.reason] = self.stats.fail_safe.get(verdict.reason, 0) + 1
            if verdict.reason == "deadline":
                m.deadline_misses.inc()
        if verdict.reject:
            self.stats.rejected += 1
        else:
            self.stats.passed += 1
        if self.sink is not None:
            start = time.perf_counter()
            try:
                self.sink.send(verdict)
            except (VisionlineError, OSError) as exc:
                self.stats.sink_errors += 1
                m.sink_errors.inc()
                log.error("item %s: reject signal not delivered (%s)", verdict.item_id, exc)
            m.sink_latency.observe(time.perf_counter() - start)
        m.signal_latency.observe(max(0.0, time.time() - verdict.captured_at))
        self._keep_image(decision)

    def _keep_image(self, decision: Decision) -> None:
        if self.images is None or decision.image is None:
            return
        sampled = self.sample_every > 0 and self.stats.frames % self.sample_every == 0
        if decision.verdict.reject or sampled:
            suffix = ".png" if decision.image[:4] == b"\x89PNG" else ".jpg"
            self.images.save(f"{decision.record['id']}{suffix}", decision.image)
            self.metrics.images_disabled.set(1.0 if self.images.disabled else 0.0)

    def run(self, max_items: int | None = None) -> AgentStats:
        """Process frames until the source ends, `stop` is called or `max_items` were decided."""
        self._last_frame = time.monotonic()
        if self.camera_timeout_s:
            threading.Thread(target=self._watch_camera, name="camera-watch", daemon=True).start()
        try:
            self._loop(max_items)
        finally:
            self._stop.set()
        self.update_gauges()
        return self.stats

    def _watch_camera(self) -> None:
        """Raise the camera alarm when no frame came for `camera_timeout_s` (cleared by the next)."""
        timeout = float(self.camera_timeout_s or 0)
        while not self._stop.wait(min(1.0, timeout / 4)):
            silent = time.monotonic() - self._last_frame
            if silent > timeout and not self.camera_alarm:
                self.camera_alarm = True
                self.metrics.camera_alarm.set(1.0)
                log.error("no frame from the camera for %.0f s; check the camera and its link",
                          silent)

    def _loop(self, max_items: int | None) -> None:
        for frame in self.source:
            self._last_frame = time.monotonic()
            if self.camera_alarm:
                self.camera_alarm = False
                self.metrics.camera_alarm.set(0.0)
                log.warning("frames arrive again")
            self.stats.frames += 1
            self.metrics.frames.inc()
            decision = self.decider.decide(frame)
            self.handle(decision)
            if self.rollout is not None:
                self._roll(frame, decision)
            if time.monotonic() >= self._next_gauge:
                self.update_gauges()
            if self._stop.is_set() or (max_items is not None and self.stats.frames >= max_items):
                break

    def update_gauges(self) -> None:
        """Outbox backlog and sync lag (the age of the oldest unacknowledged verdict)."""
        backlog, oldest = self.outbox.backlog()
        self.metrics.backlog.set(backlog)
        self.metrics.sync_lag.set(time.time() - oldest if oldest else 0.0)
        self._next_gauge = time.monotonic() + 1.0
        if hasattr(self.sink, "backlog"):  # a BufferedSink: signals waiting for the PLC
            self.metrics.plc_backlog.set(self.sink.backlog)
            self.metrics.plc_alarm.set(1.0 if self.sink.alarm else 0.0)

    def _roll(self, frame: Frame, decision: Decision) -> None:
        before = len(self.rollout.events)
        self.rollout.after_item(frame, decision)
        if len(self.rollout.events) > before:
            self.outbox.set_meta("version", self.decider.version)
            self.outbox.set_meta("rollout", self.rollout.summary())
            if self.rollout.active_path:  # where a restarted agent picks up the running bundle
                self.outbox.set_meta("active_bundle", self.rollout.active_path)

    def stop(self) -> None:
        self._stop.set()
        self.source.close()


def image_folder(outbox: Path) -> Path:
    """Where the agent keeps images next to its outbox."""
    return outbox.with_name(outbox.stem + "-images")


def describe(stats: AgentStats) -> dict[str, Any]:
    return {
        "frames": stats.frames,
        "rejected": stats.rejected,
        "passed": stats.passed,
        "fail_safe": dict(stats.fail_safe),
        "sink_errors": stats.sink_errors,
    }
