"""The sync worker: uploads the outbox in batches to the central prediction log.

The central side (`POST /api/ingest` of `visionline monitor serve`) inserts by record id and
skips ids it already holds, so a batch whose acknowledgement was lost (the agent killed, the
network cut) is simply sent again. Failures back off exponentially up to `max_backoff_s`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from visionline.edge._outbox import Outbox

__all__ = ["SyncWorker"]

log = logging.getLogger("visionline.edge")


class SyncWorker:
    """A thread that drains an outbox into `central` (the monitor's base URL)."""

    def __init__(
        self,
        outbox_path: str | Path,
        central: str,
        batch: int = 200,
        interval_s: float = 0.5,
        timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
        on_sync: Callable[[int, float | None], None] | None = None,
        heartbeat_s: float = 10.0,
    ) -> None:
        self.outbox = Outbox(outbox_path)
        self.url = central.rstrip("/") + "/api/ingest"
        self.batch, self.interval_s, self.timeout_s = batch, interval_s, timeout_s
        self.max_backoff_s = max_backoff_s
        self.on_sync = on_sync
        self.heartbeat_s = heartbeat_s
        self._next_heartbeat = 0.0
        self.failures = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-sync", daemon=True)

    def start(self) -> SyncWorker:
        self._thread.start()
        return self

    def sync_once(self, client: object) -> int:
        """Send one batch (or, when idle, a heartbeat every `heartbeat_s`) with the agent's own
        report for the fleet view; returns how many records were acknowledged (raises on
        failure)."""
        records = self.outbox.pending(self.batch)
        now = time.monotonic()
        if not records and now < self._next_heartbeat:
            return 0
        status = self.outbox.status()
        body: dict[str, object] = {"records": records}
        if status["line"]:
            body["agent"] = {
                "line": status["line"], "version": status["version"],
                "backlog": max(0, status["backlog"] - len(records)), "rollout": status["rollout"],
            }
        elif not records:
            return 0
        response = client.post(self.url, json=body)  # type: ignore[attr-defined]
        response.raise_for_status()
        self._next_heartbeat = now + self.heartbeat_s
        acked = [str(i) for i in response.json()["acknowledged"]]
        sent = {r["id"] for r in records}
        self.outbox.ack([i for i in acked if i in sent])
        return len(acked)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                try:
                    n = self.sync_once(client)
                    self.failures = 0
                except Exception as exc:  # noqa: BLE001 - network or central side: back off, retry
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    delay = min(self.max_backoff_s, self.interval_s * 2 ** min(self.failures, 10))
                    log.info("sync to %s failed (%s); retry in %.1f s", self.url, exc, delay)
                    self._stop.wait(delay * (0.5 + random.random() / 2))
                    continue
                if self.on_sync is not None:
                    self.on_sync(*self.outbox.backlog())
                if n < self.batch:
                    self._stop.wait(self.interval_s)

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop, after trying to drain the backlog for up to `drain_s` seconds."""
        end = time.monotonic() + drain_s
        while time.monotonic() < end and self.outbox.backlog()[0]:
            time.sleep(0.05)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout_s + 1)
        self.outbox.close()
