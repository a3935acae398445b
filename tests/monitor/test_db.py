import threading
import time

import numpy as np
import pytest

from tests.monitor.conftest import make_predictions
from visionline.errors import AmbiguousIdError, NotFoundError
from visionline.monitor import MonitorDB
from visionline.monitor._adapter import decode_embeddings


def _round_trip(db: MonitorDB) -> None:
    items = make_predictions(20)
    assert db.insert_predictions([p.row(None) for p in items]) == 20
    frame = db.frame()
    assert len(frame) == 20
    first = frame.iloc[0]
    assert first["id"] == items[0].id
    assert first["probabilities"]["good"] == pytest.approx(items[0].probabilities["good"], abs=1e-6)
    assert bool(first["flagged"]) == items[0].flagged
    assert first["delivery_id"] == "D0" and first["supplier_id"] == "S0"
    emb = decode_embeddings(list(frame["embedding"]))
    np.testing.assert_allclose(emb[0], items[0].embedding, atol=1e-2)
    assert first["sharpness"] == pytest.approx(items[0].quality[2])
    assert db.resolve_prediction(items[3].id[:10]) == items[3].id
    db.add_feedback(items[3].id, "defect", "bruise", "test")
    fb = db.feedback_frame()
    assert list(fb["prediction_id"]) == [items[3].id] and fb["subtype"][0] == "bruise"


def test_sqlite_round_trip_and_wal(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    _round_trip(db)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.slow
def test_postgres_round_trip(postgres):
    db = MonitorDB(postgres.url)
    assert db.engine.dialect.name == "postgresql"
    _round_trip(db)
    db.close()


def test_missing_sqlite_log_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="No prediction log"):
        MonitorDB(f"sqlite:///{tmp_path}/absent.db", must_exist=True)
    assert not (tmp_path / "absent.db").exists()


def test_unknown_and_ambiguous_ids(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    items = make_predictions(3)
    for i, item in enumerate(items):
        item.id = f"ab{i:030x}"
    db.insert_predictions([p.row(None) for p in items])
    with pytest.raises(NotFoundError, match="No prediction"):
        db.resolve_prediction("zzzz")
    with pytest.raises(AmbiguousIdError, match="several"):
        db.resolve_prediction("AB")
    assert db.resolve_prediction(" ab" + "0" * 29 + "2") == items[2].id


def test_retry_after_lost_acknowledgement_is_idempotent(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    rows = [p.row(None) for p in make_predictions(5)]
    db.insert_predictions(rows[:3])
    assert db.insert_predictions(rows, skip_existing=True) == 2
    assert db.count_predictions() == 5


@pytest.mark.slow
def test_kill9_postgres_loses_no_acknowledged_record(postgres):
    """Write batches while the postmaster is SIGKILLed; every committed batch survives restart."""
    db = MonitorDB(postgres.url, connect_timeout=2)
    acknowledged = 0
    stop = threading.Event()
    errors = []

    def writer():
        nonlocal acknowledged
        seed = 0
        while not stop.is_set():
            rows = [p.row(None) for p in make_predictions(10, seed=seed)]
            seed += 1
            try:
                acknowledged += db.insert_predictions(rows)
            except Exception as exc:  # noqa: BLE001  (server down: batch not acknowledged)
                errors.append(type(exc).__name__)
                time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.time() + 30
    while acknowledged < 200 and time.time() < deadline:
        time.sleep(0.01)
    postgres.kill9()
    time.sleep(0.5)
    stop.set()
    thread.join(30)
    assert acknowledged >= 200 and errors, "the kill must hit a stream in progress"
    postgres.start()
    db.engine.dispose()
    assert db.count_predictions() >= acknowledged
    db.close()
