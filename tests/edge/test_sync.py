"""Offline-first: verdicts reach a real central log (`visionline monitor serve` on 127.0.0.1)
exactly once although the central side is stopped and restarted mid-run, an acknowledgement is
lost, and the agent itself is killed with SIGKILL mid-sync. Downtimes are seconds here, not the
issue's two minutes: what is tested is the order of events, not their length."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from edge_agent_support import VISIONLINE, CentralLog, signed_bundle

from visionline.edge import Outbox, SyncWorker


def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _record(i: int) -> dict:
    return {
        "id": f"{i:032x}", "ts": 1000.0 + i, "model": "apples", "version": "1",
        "route": "edge", "request_id": f"item-{i:04d}", "probabilities": {"good": 1.0},
        "predicted_class": "good", "defect_score": 0.0, "flagged": False, "decision": "good",
        "threshold": 0.5,
    }


@pytest.mark.slow
def test_sync_survives_a_central_restart_and_a_lost_ack(tmp_path: Path) -> None:
    central = CentralLog(tmp_path / "central.db")
    central.start()
    outbox = Outbox(tmp_path / "outbox.db")
    for i in range(30):
        outbox.add(_record(i))
    # a batch that reached the central log whose acknowledgement never came back
    httpx.post(central.url + "/api/ingest", json={"records": outbox.pending(10)}).raise_for_status()
    worker = SyncWorker(tmp_path / "outbox.db", central.url, batch=7, interval_s=0.02,
                        max_backoff_s=0.5).start()
    try:
        _wait(lambda: outbox.backlog()[0] == 0)
        central.stop()
        for i in range(30, 60):
            outbox.add(_record(i))
        time.sleep(1.0)
        assert outbox.backlog()[0] == 30 and worker.failures > 0  # offline: kept, retrying
        central.start()
        _wait(lambda: outbox.backlog()[0] == 0)
    finally:
        worker.stop()
        central.stop()
    ids = central.item_ids()
    assert sorted(ids) == [f"item-{i:04d}" for i in range(60)]  # none lost, none twice
    assert outbox.status()["counts"]["synced"] >= 60


@pytest.mark.slow
def test_agent_killed_mid_sync_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    bundle, store = signed_bundle(tmp_path)
    central = CentralLog(tmp_path / "central.db")
    central.start()
    outbox = tmp_path / "edge" / "outbox.db"
    log = tmp_path / "agent.log"

    def agent(source: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(VISIONLINE), "edge", "run", "--bundle", str(bundle), "--trust-store", str(store),
             "--source", source, "--outbox", str(outbox), "--central", central.url,
             "--sync-batch", "5", "--sync-interval", "0.02", "--max-backoff", "1",
             "--drain", "60", "--deadline-ms", "2000"],
            stdout=subprocess.DEVNULL, stderr=log.open("ab"),
        )

    first = agent("synth://?rate=40&size=64")
    try:
        _wait(lambda: len(central.item_ids()) >= 10, timeout=60)
        central.stop()  # the network goes away mid-run ...
        time.sleep(1.5)
        central.start()  # ... and comes back
        _wait(lambda: len(central.item_ids()) >= 40, timeout=60)
        first.send_signal(signal.SIGKILL)  # mid-run and mid-sync: batches of 5 every 20 ms
        first.wait(timeout=10)
        decided = Outbox(outbox).status()["counts"]["verdicts"]
        assert decided >= 40
        second = agent("synth://?rate=200&count=20&start=1000&size=64")
        assert second.wait(timeout=120) == 0, log.read_text()
    finally:
        for process in (first,):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
        central.stop()
    ids = central.item_ids()
    duplicates = [k for k, n in collections.Counter(ids).items() if n > 1]
    assert duplicates == []
    expected = [f"synth-{i:06d}" for i in range(decided)] + [
        f"synth-{i:06d}" for i in range(1000, 1020)
    ]
    assert sorted(ids) == expected  # every verdict the first run committed, then the second's
    status = Outbox(outbox).status()
    assert status["backlog"] == 0 and status["counts"]["verdicts"] == decided + 20
