"""`POST /api/ingest`: edge agents' outbox records land in the prediction log once, however often
a batch is resent; a malformed batch is refused whole with a 422 that says what to fix."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from visionline.monitor import MonitorDB
from visionline.monitor._dashboard import create_app


def _record(i: int, **extra: object) -> dict:
    return {
        "id": f"{i:032x}",
        "ts": 1000.0 + i,
        "model": "apples",
        "version": "1",
        "route": "edge",
        "request_id": f"item-{i}",
        "line": "L1",
        "probabilities": {"good": 0.9, "bruise": 0.1},
        "predicted_class": "good",
        "defect_score": 0.1,
        "flagged": False,
        "decision": "good",
        "threshold": 0.5,
        "latency_ms": 3.5,
        "quality": [100.0, 20.0, 5.0, 30.0],
        "embedding": base64.b64encode(np.arange(3, dtype=np.float16).tobytes()).decode(),
        **extra,
    }


@pytest.fixture
def client_db(tmp_path: Path):
    db = MonitorDB(f"sqlite:///{tmp_path / 'monitor.db'}")
    yield TestClient(create_app(db)), db
    db.close()


def test_a_resent_batch_is_stored_once(client_db) -> None:
    client, db = client_db
    batch = {"records": [_record(i) for i in range(3)]}
    first = client.post("/api/ingest", json=batch)
    again = client.post("/api/ingest", json={"records": [_record(i) for i in range(5)]})
    assert first.status_code == 200 and first.json()["inserted"] == 3
    assert again.json() == {"acknowledged": [f"{i:032x}" for i in range(5)], "inserted": 2}
    frame = db.frame()
    assert sorted(frame["request_id"]) == [f"item-{i}" for i in range(5)]
    row = frame.iloc[0]
    assert row["line"] == "L1" and row["brightness"] == 100.0 and row["latency_ms"] == 3.5
    assert np.frombuffer(row["embedding"], np.float16).tolist() == [0.0, 1.0, 2.0]


def test_fail_safe_records_keep_their_route(client_db) -> None:
    client, db = client_db
    record = _record(7, route="fail_safe", probabilities={}, defect_score=-1.0,
                     predicted_class="deadline", flagged=True, quality=None, embedding=None)
    response = client.post("/api/ingest", json={"records": [record]})
    assert response.status_code == 200
    row = db.frame().iloc[0]
    assert row["route"] == "fail_safe" and bool(row["flagged"]) and row["brightness"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rows": []}, "records"),
        ({"records": [{"id": "x"}]}, "lacks ts"),
        ({"records": [_record(1, id="y" * 40)]}, "1-32 character"),
        ({"records": [_record(1, embedding="%%%")]}, "malformed"),
        ({"records": [_record(1), _record(1)]}, "repeats a record id"),
    ],
)
def test_malformed_batches_are_refused_whole(client_db, body: dict, message: str) -> None:
    client, db = client_db
    response = client.post("/api/ingest", json=body)
    assert response.status_code == 422 and message in response.json()["detail"]
    assert db.count_predictions() == 0


def test_fleet_view_shows_each_lines_version(client_db) -> None:
    client, _ = client_db
    records = [_record(0), _record(1, version="2"), _record(2, line="L2"),
               _record(3, line="L2", route="fail_safe", probabilities={}, defect_score=-1.0),
               _record(4, line=None)]
    client.post("/api/ingest", json={"records": records}).raise_for_status()
    unreported = {"running": None, "backlog": None, "rollout": None, "last_sync": None}
    assert client.get("/api/fleet").json() == [
        {"line": "L1", "model": "apples", "version": "2", "verdicts": 2, "fail_safe": 0,
         "last_verdict_ts": 1001.0, **unreported},
        {"line": "L2", "model": "apples", "version": "1", "verdicts": 2, "fail_safe": 1,
         "last_verdict_ts": 1003.0, **unreported},
    ]


def test_agents_report_version_backlog_and_roll_out_for_the_fleet_view(client_db) -> None:
    client, _ = client_db
    rollout = {"event": "switched", "version": "apples:2", "detail": "agreement 100%", "ts": 5.0}
    client.post("/api/ingest", json={
        "records": [_record(0)],
        "agent": {"line": "L1", "version": "apples:2", "backlog": 17, "rollout": rollout},
    }).raise_for_status()
    heartbeat = {"records": [], "agent": {"line": "L9", "version": "apples:1", "backlog": 0}}
    assert client.post("/api/ingest", json=heartbeat).json() == {"acknowledged": [], "inserted": 0}
    fleet = {f["line"]: f for f in client.get("/api/fleet").json()}
    assert fleet["L1"]["running"] == "apples:2" and fleet["L1"]["backlog"] == 17
    assert fleet["L1"]["rollout"] == rollout and fleet["L1"]["last_sync"] > 0
    assert fleet["L9"]["verdicts"] == 0 and fleet["L9"]["running"] == "apples:1"
    page = client.get("/").text
    assert "<tr data-line='L1'><td>L1</td><td>apples:2</td><td class='n'>17</td>" in page
    assert "switched apples:2" in page and "data-line='L9'" in page


def test_fail_safe_verdicts_do_not_count_as_model_answers(client_db) -> None:
    client, _ = client_db
    answered = _record(0, probabilities={"good": 0.8, "bruise": 0.2})
    client.post("/api/ingest", json={"records": [answered]}).raise_for_status()
    alone = client.get("/api/summary").json()["versions"][0]["expected_accuracy"]
    failed = _record(1, route="fail_safe", probabilities={}, defect_score=-1.0, flagged=True)
    client.post("/api/ingest", json={"records": [failed]}).raise_for_status()
    summary = client.get("/api/summary").json()
    assert summary["predictions"] == 2
    assert summary["versions"][0]["expected_accuracy"] == pytest.approx(alone)


def test_uploaded_images_land_in_the_blob_store(tmp_path: Path) -> None:
    import hashlib

    from visionline.data import BlobStore

    db = MonitorDB(f"sqlite:///{tmp_path / 'monitor.db'}")
    blobs = BlobStore(tmp_path / "store")
    client = TestClient(create_app(db, blobs))
    image = b"\x89PNG fake image bytes"
    body = {"records": [_record(1, image=base64.b64encode(image).decode()), _record(2)]}
    assert client.post("/api/ingest", json=body).status_code == 200
    frame = db.frame().set_index("request_id")
    sha = hashlib.sha256(image).hexdigest()
    assert frame.at["item-1", "image_sha256"] == sha and not isinstance(
        frame.at["item-2", "image_sha256"], str
    )
    assert client.get(f"/images/{sha}").content == image
    bad = client.post("/api/ingest", json={"records": [_record(3, image="not base64!")]})
    assert bad.status_code == 422 and "image is not base64" in bad.json()["detail"]
    db.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ts": 1e300}, "not a Unix time"),
        ({"ts": -5.0}, "not a Unix time"),
        ({"threshold": "inf"}, "threshold"),
        ({"probabilities": {"good": "NaN"}}, "finite numbers"),
        ({"probabilities": {"good": True}}, "finite numbers"),
    ],
)
def test_records_that_would_break_the_log_readers_are_refused(client_db, extra, message) -> None:
    """A ts of 1e300 had been stored: the dashboard answered 500 and `monitor recent` crashed
    (OverflowError) on every later read."""
    client, db = client_db
    response = client.post("/api/ingest", json={"records": [_record(1, **extra)]})
    assert response.status_code == 422 and message in response.json()["detail"]
    assert db.count_predictions() == 0
    assert client.get("/").status_code == 200
