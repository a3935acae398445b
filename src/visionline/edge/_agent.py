"""The line agent's loop: frame → verdict → outbox → reject signal, one item at a time."""

from __future__ import annotations

import base64
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionline.edge._decide import Decider, Decision
from visionline.edge._fleet import Rollout
from visionline.edge._frames import Frame, FrameSource, group_views
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
    items: int = 0
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
        keep_margin: float = 0.0,
        upload_images: bool = False,
        views: int = 1,
        view_separator: str = "_",
    ) -> None:
        self.source, self.decider, self.outbox, self.sink = source, decider, outbox, sink
        self.images, self.sample_every = images, sample_every
        self.keep_margin, self.upload_images = keep_margin, upload_images
        self.views, self.view_separator = views, view_separator
        self.metrics = metrics or AgentMetrics()
        self.rollout = rollout
        self._events_seen = 0
        self.stats = AgentStats()
        self._stop = threading.Event()
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
        keep = self._keeps(decision)
        record = decision.record
        if keep and self.upload_images:  # the central log keeps it for labelling
            record = {**record, "image": base64.b64encode(decision.image).decode()}
        self.outbox.add(record, counters)
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
        if keep and self.images is not None:
            suffix = ".png" if decision.image[:4] == b"\x89PNG" else ".jpg"
            self.images.save(f"{decision.record['id']}{suffix}", decision.image)
            self.metrics.images_disabled.set(1.0 if self.images.disabled else 0.0)

    def _keeps(self, decision: Decision) -> bool:
        """Whether the item's image is kept: flagged, within `keep_margin` of the threshold (the
        items labels teach most), or every `sample_every`th; frames without bytes are not."""
        if decision.image is None:
            return False
        verdict = decision.verdict
        near = (not verdict.fail_safe and self.keep_margin > 0
                and abs(verdict.score - decision.record["threshold"]) < self.keep_margin)
        sampled = self.sample_every > 0 and self.stats.items % self.sample_every == 0
        return verdict.reject or near or sampled

    def run(self, max_items: int | None = None) -> AgentStats:
        """Process frames until the source ends, `stop` is called or `max_items` were decided."""
        self.decider.warm_up()
        connect = getattr(self.sink, "connect", None)
        if connect is not None:  # the PLC session is set up before the first item, not on it
            try:
                connect()
            except (VisionlineError, OSError) as exc:
                log.error("the PLC does not answer at start (%s)", exc)
        self.outbox.checkpoint_in_background()
        _settle_garbage_collector()
        self._last_frame = time.monotonic()
        if self.camera_timeout_s:
            threading.Thread(target=self._watch_camera, name="camera-watch", daemon=True).start()
        gauges = threading.Thread(target=self._watch_gauges, name="gauges", daemon=True)
        gauges.start()
        try:
            self._loop(max_items)
        finally:
            self._stop.set()
            if self.rollout is not None:
                self.rollout.finish()
        gauges.join(timeout=5)
        self.update_gauges()
        return self.stats

    def _watch_gauges(self, interval_s: float = 1.0) -> None:
        """Refresh the backlog gauges every `interval_s` on a connection of their own: counting
        the outbox scans it (ms, up to ~100 ms on a busy disk), which the line must not wait for
        (a WAL reader never blocks the line's commits)."""
        reader = Outbox(self.outbox.path)
        try:
            while not self._stop.wait(interval_s):
                self.update_gauges(reader)
        finally:
            reader.close()

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
        for frames in group_views(self.source, self.views, self.view_separator):
            self._last_frame = time.monotonic()
            if self.camera_alarm:
                self.camera_alarm = False
                self.metrics.camera_alarm.set(0.0)
                log.warning("frames arrive again")
            self.stats.frames += len(frames)
            self.stats.items += 1
            self.metrics.frames.inc(len(frames))
            decision, frame = self.decider.decide_item(frames)
            self.handle(decision)
            if self.rollout is not None:
                self._roll(frame, decision)
            if self._stop.is_set() or (max_items is not None and self.stats.items >= max_items):
                break

    def update_gauges(self, outbox: Outbox | None = None) -> None:
        """Outbox backlog and sync lag (the age of the oldest unacknowledged verdict)."""
        backlog, oldest = (outbox or self.outbox).backlog()
        self.metrics.backlog.set(backlog)
        self.metrics.sync_lag.set(time.time() - oldest if oldest else 0.0)
        if hasattr(self.source, "errors"):  # a TaggedSource: trigger tags that could not be read
            self.metrics.item_tag_errors.set(self.source.errors)
        if hasattr(self.sink, "backlog"):  # a BufferedSink: signals waiting for the PLC
            self.metrics.plc_backlog.set(self.sink.backlog)
            self.metrics.plc_alarm.set(1.0 if self.sink.alarm else 0.0)

    def _roll(self, frame: Frame, decision: Decision) -> None:
        self.rollout.after_item(frame, decision)
        new = self.rollout.events[self._events_seen:]  # also those of a background check
        self._events_seen += len(new)
        for event in new:
            self.metrics.rollout_events.labels(event.kind).inc()
        if new:
            self.outbox.set_meta("version", self.decider.version)
            self.outbox.set_meta("rollout", self.rollout.summary())
            if self.rollout.active_path:  # where a restarted agent picks up the running bundle
                self.outbox.set_meta("active_bundle", self.rollout.active_path)

    def stop(self) -> None:
        self._stop.set()
        self.source.close()


def _settle_garbage_collector() -> None:
    """Move everything alive before the first item (imported libraries, the model) out of the
    collector's reach: a full collection over them takes tens of milliseconds on a line computer
    (~70 ms for the agent's 50k objects, ~600 ms with torch imported, on 2 busy cores), which
    a verdict due in 50 ms cannot absorb. Only what the loop allocates is scanned from then on."""
    gc.collect()
    gc.freeze()


def image_folder(outbox: Path) -> Path:
    """Where the agent keeps images next to its outbox."""
    return outbox.with_name(outbox.stem + "-images")


def describe(stats: AgentStats) -> dict[str, Any]:
    return {
        "frames": stats.frames,
        "items": stats.items,
        "rejected": stats.rejected,
        "passed": stats.passed,
        "fail_safe": dict(stats.fail_safe),
        "sink_errors": stats.sink_errors,
    }
