"""The outbox keeps every record until it is acknowledged and counts in the same transaction;
the image store stays within its quota, oldest first, and stops (not the line) on a full disk."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from visionline.edge import ImageStore, Outbox


def _record(i: int) -> dict:
    return {"id": f"{i:032x}", "request_id": f"item-{i}", "flagged": i % 2 == 0}


def test_records_stay_until_acknowledged_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    for i in range(5):
        box.add(_record(i), {"verdicts": 1})
    assert [r["request_id"] for r in box.pending(3)] == ["item-0", "item-1", "item-2"]
    box.ack([_record(0)["id"], _record(1)["id"]])
    box.close()
    again = Outbox(path)
    status = again.status()
    assert [r["request_id"] for r in again.pending(10)] == ["item-2", "item-3", "item-4"]
    assert status["backlog"] == 3 and status["last_sync"] is not None
    assert status["counts"] == {"verdicts": 5, "synced": 2}
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again.close()


def test_a_record_id_is_stored_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    box.add(_record(1), {"verdicts": 1})
    try:
        box.add(_record(1), {"verdicts": 1})
    except sqlite3.IntegrityError:
        pass
    assert box.backlog()[0] == 1 and box.status()["counts"] == {"verdicts": 1}


def test_image_store_keeps_the_newest_within_its_quota(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", quota_bytes=250)
    for i in range(5):
        store.save(f"{i}.jpg", bytes(100))
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["3.jpg", "4.jpg"]
    assert store.used == 200
    assert store.save("huge.jpg", bytes(1000)) is None
    reopened = ImageStore(tmp_path / "images", quota_bytes=250)
    assert reopened.used == 200


def test_image_store_stops_when_the_disk_refuses(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", quota_bytes=10_000)
    shutil.rmtree(tmp_path / "images")
    (tmp_path / "images").write_text("not a folder")  # every write now fails like a full disk
    assert store.save("a.jpg", b"x" * 10) is None
    assert store.disabled and store.save("b.jpg", b"y") is None


def test_checkpoints_run_on_their_own_thread_not_in_the_lines_commits(tmp_path: Path) -> None:
    import time

    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.checkpoint_in_background(interval_s=0.05)
    assert outbox._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(300):
        outbox.add({"id": f"r{i}", "blob": "x" * 4000})
    deadline = time.monotonic() + 10
    while path.stat().st_size < 300 * 4000 and time.monotonic() < deadline:
        time.sleep(0.05)  # the checkpoint thread copies the WAL into the database file
    assert path.stat().st_size >= 300 * 4000
    assert outbox.backlog()[0] == 300
    outbox.close()
    assert Outbox(path).backlog()[0] == 300
