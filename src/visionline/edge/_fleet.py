"""Fleet roll-out through a channel: verify, shadow, switch atomically, roll back.

The central side drops a bundle (a folder, or a .tar.gz renamed into place) into the channel
(a folder, an object-store prefix, or the central server's HTTP endpoint; see `_channel`),
under a sub-folder named for the line when there is one. The agent verifies it with its pinned
keys (a tampered or unsigned bundle is refused and the line keeps its model), runs it in shadow
on the next `shadow_items` live frames, and switches between two items when its verdicts agree
with the running model and its latency holds. With `background=True` (the CLI) fetching,
verifying and loading a candidate happen on a thread of their own, so a roll-out never holds up
an item; shadow runs come after each item's signal. For `shadow_items` more items the old model then
runs in shadow: a disagreement spike, a latency breach or a crash of the new model switches back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionline.edge._channel import open_channel
from visionline.edge._decide import Decider, Decision, infer
from visionline.edge._frames import Frame
from visionline.errors import VisionlineError

__all__ = ["Rollout", "RolloutEvent"]

log = logging.getLogger("visionline.edge")


@dataclass(frozen=True)
class RolloutEvent:
    """What happened to a candidate: refused, shadowing, switched, kept, rejected, rolled_back."""

    kind: str
    version: str
    detail: str = ""
    ts: float = field(default_factory=time.time)


class Rollout:
    """Watches `channel` for new bundles and rolls them out on the line of `decider`."""

    def __init__(
        self,
        decider: Decider,
        channel: str | Path | Any,
        *,
        pubkey: str | Path | None = None,
        trust_store: str | Path | None = None,
        shadow_items: int = 50,
        min_agreement: float = 0.95,
        max_latency_ms: float | None = None,
        poll_s: float = 1.0,
        threads: int | None = None,
        active_path: str | Path | None = None,
        cache: Path | None = None,
        on_load: Callable[[str, Any], None] | None = None,
        background: bool = False,
    ) -> None:
        self.decider = decider
        self.on_load = on_load  # e.g. name a candidate by its registry version before it runs
        self.channel = (channel if hasattr(channel, "candidates")
                        else open_channel(channel, decider.line, cache))
        self.pubkey, self.trust_store, self.threads = pubkey, trust_store, threads
        self.shadow_items, self.min_agreement = shadow_items, min_agreement
        self.max_latency_s = (max_latency_ms or decider.deadline_s * 1000 / 2) / 1000
        self.poll_s = poll_s
        self.state = "idle"
        self.active_path = str(active_path) if active_path else None
        self._other_path: str | None = None
        self.events: list[RolloutEvent] = []
        self._seen: set[tuple[Any, ...]] = set()
        self._other: Any = None  # the candidate (shadow) or the previous model (probation)
        self._agree: list[bool] = []
        self._latency: list[float] = []
        self._next_poll = 0.0
        self.background = background  # fetch, verify and load off the line's thread
        self._loading: threading.Thread | None = None
        self._loaded: tuple[Any, str] | None = None

    def _event(self, kind: str, version: str, detail: str = "") -> None:
        event = RolloutEvent(kind, version, detail)
        self.events.append(event)
        log.warning("roll-out: %s %s %s", kind, version, detail)

    def poll(self) -> None:
        """Verify the newest unseen bundle of the channel and start shadowing it."""
        found = self._find()
        if found is not None:
            self._shadow(*found)

    def _find(self) -> tuple[Any, str] | None:
        """The newest unseen bundle of the channel, fetched, verified and loaded (or None)."""
        from visionline_edge import load_bundle

        for candidate in reversed(self.channel.candidates()):
            if candidate.key in self._seen:
                return None
            self._seen.add(candidate.key)
            try:
                path = candidate.fetch()
                model = load_bundle(path, self.pubkey, threads=self.threads,
                                    trust_store=self.trust_store, require_signature=True)
            except (VisionlineError, OSError) as exc:
                self._event("refused", candidate.name, str(exc))
                return None
            if self.on_load is not None:
                self.on_load(candidate.name, model)
            if f"{model.name}:{model.version}" == self.decider.version:
                return None
            return model, str(path)
        return None

    def _shadow(self, model: Any, path: str) -> None:
        self._start("shadow", model)
        self._other_path = path
        self._event("shadowing", _version(model))

    def _load_in_background(self) -> None:
        try:
            self._loaded = self._find()
        except Exception as exc:  # noqa: BLE001 - a broken channel must not touch the line
            log.error("roll-out: checking the channel failed (%s)", exc)

    def finish(self, timeout_s: float = 30.0) -> None:
        """Wait for a channel check still loading a bundle: a process that exits while a
        background thread builds an ONNX Runtime session aborts ("terminate called without an
        active exception") instead of exiting cleanly."""
        if self._loading is not None:
            self._loading.join(timeout_s)

    def poll_soon(self) -> None:
        """Check the channel after the next item instead of waiting out `poll_s` (the central
        side calls this right after it published a bundle for this line)."""
        self._next_poll = 0.0

    def _start(self, state: str, other: Any) -> None:
        self.state, self._other = state, other
        self._agree, self._latency = [], []

    def after_item(self, frame: Frame, decision: Decision) -> None:
        """Called by the agent after an item was signalled (so the line never waits for this)."""
        if self.state == "idle":
            if self._loaded is not None:  # loaded off the line's thread: shadow from now on
                loaded, self._loaded = self._loaded, None
                self._shadow(*loaded)
                return
            now = time.monotonic()
            busy = self._loading is not None and self._loading.is_alive()
            if now >= self._next_poll and not busy:
                self._next_poll = now + self.poll_s
                if not self.background:
                    self.poll()
                    return
                self._loading = threading.Thread(target=self._load_in_background,
                                                 name="rollout-load", daemon=True)
                self._loading.start()
            return
        verdict = decision.verdict
        if self.state == "probation" and verdict.fail_safe and verdict.reason == "error":
            self._roll_back("the new model failed on an item")
            return
        if verdict.fail_safe:
            return
        start = time.perf_counter()
        try:
            prediction, _ = infer(self._other, frame)
        except Exception as exc:  # noqa: BLE001 - a failing shadow must not touch the line
            if self.state == "shadow":
                self._event("rejected", _version(self._other), f"it failed in shadow ({exc})")
                self._start("idle", None)
            return
        other_latency = time.perf_counter() - start
        other_reject = prediction.defect_score > self._other.threshold
        self._agree.append(other_reject == verdict.reject)
        self._latency.append(
            other_latency if self.state == "shadow" else verdict.decided_at - verdict.captured_at
        )
        if len(self._agree) >= self.shadow_items:
            self._judge()

    def _judge(self) -> None:
        agreement = float(np.mean(self._agree))
        p95 = float(np.percentile(self._latency, 95))
        ok = agreement >= self.min_agreement and p95 <= self.max_latency_s
        detail = f"agreement {agreement:.1%}, p95 latency {p95 * 1000:.1f} ms"
        if self.state == "shadow":
            candidate = self._other
            if not ok:
                self._event("rejected", _version(candidate), detail)
                self._start("idle", None)
                return
            previous = self.decider.swap(candidate)
            self.active_path, self._other_path = self._other_path, self.active_path
            self._event("switched", _version(candidate), detail)
            self._start("probation", previous)
        elif ok:
            self._event("kept", self.decider.version, detail)
            self._start("idle", None)
        else:
            self._roll_back(detail)

    def _roll_back(self, detail: str) -> None:
        failed = self.decider.swap(self._other)
        self.active_path, self._other_path = self._other_path, self.active_path
        self._event("rolled_back", _version(failed), f"back to {self.decider.version}: {detail}")
        self._start("idle", None)

    def summary(self) -> str:
        """The last event as JSON (kept in the outbox's meta for `visionline edge status`)."""
        last = self.events[-1]
        return json.dumps({"event": last.kind, "version": last.version, "detail": last.detail,
                           "ts": last.ts})


def _version(model: Any) -> str:
    return f"{model.name}:{model.version}"
