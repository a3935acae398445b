import time

import numpy as np

from tests.monitor.conftest import make_predictions
from visionline.data import BlobStore
from visionline.monitor import MonitorDB, PredictionLogger
from visionline.serve import PredictionRecord


def test_logger_commits_batches_and_samples_images(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    store = BlobStore(tmp_path / "store")
    items = make_predictions(300, image=True)
    with PredictionLogger(
        db, store, sample_rate=0.0, keep_margin=0.05, batch_size=64, seed=0
    ) as logger:
        logger.log(items)
        assert logger.flush(20)
        assert logger.stats.committed == 300 and logger.stats.dropped == 0
    frame = db.frame()
    assert len(frame) == 300
    kept = frame[frame["image_sha256"].notna()]
    expected = {p.id for p in items if p.flagged or abs(p.defect_score - p.threshold) < 0.05}
    assert set(kept["id"]) == expected and expected
    row = kept.iloc[0]
    original = next(p for p in items if p.id == row["id"])
    assert store.get(row["image_sha256"]) == original.image


def test_hook_accepts_server_records_with_request_parameters(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    record = PredictionRecord(
        request_id="r1",
        model="apples",
        version="3",
        route="canary",
        label="bruise",
        probabilities={"good": 0.2, "bruise": 0.7, "rot": 0.1},
        defect_score=0.8,
        is_defect=True,
        threshold=0.4,
        timestamp=1_790_000_000.0,
        extra={
            "embedding": [0.5, -1.0],
            "parameters": {"delivery_id": "D7", "supplier_id": "S2"},
            "quality": [100.0, 30.0, 200.0, 40.0],
            "latency_ms": 4.5,
        },
    )
    logger = PredictionLogger(db)
    logger([record])
    assert logger.flush(10)
    logger.close()
    row = db.frame().iloc[0]
    assert (row["model"], row["version"], row["route"]) == ("apples", "3", "canary")
    assert (row["delivery_id"], row["supplier_id"]) == ("D7", "S2")
    assert row["decision"] == "bruise" and bool(row["flagged"]) and row["latency_ms"] == 4.5
    assert np.frombuffer(row["embedding"], np.float16).tolist() == [0.5, -1.0]


class FailingDB:
    """A database that is down: every insert raises after a delay."""

    def __init__(self):
        self.calls = 0

    def insert_predictions(self, rows, skip_existing=False):
        self.calls += 1
        time.sleep(0.05)
        raise ConnectionError("database is down")


def test_hook_never_raises_nor_blocks_when_the_database_fails(tmp_path):
    db = FailingDB()
    logger = PredictionLogger(db, queue_size=50, retries=1, backoff=0.01, batch_size=10)  # type: ignore[arg-type]
    started = time.perf_counter()
    for _ in range(20):
        logger(make_predictions(10))  # 200 records into a queue of 50
    logger(["not a record"])  # garbage from a caller is counted, not raised
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, "the hook must not wait for the database"
    assert logger.stats.submitted + logger.stats.dropped == 201 and logger.stats.dropped >= 100
    assert logger.flush(10)
    logger.close()
    assert logger.stats.failed > 0 and logger.stats.committed == 0 and db.calls >= 2


def test_logger_recovers_when_the_database_comes_back(tmp_path):
    real = MonitorDB(f"sqlite:///{tmp_path}/log.db")

    class Flaky:
        failures = 2

        def insert_predictions(self, rows, skip_existing=False):
            if self.failures:
                self.failures -= 1
                raise ConnectionError("down")
            return real.insert_predictions(rows, skip_existing)

    logger = PredictionLogger(Flaky(), retries=3, backoff=0.01)  # type: ignore[arg-type]
    logger.log(make_predictions(25))
    assert logger.flush(10)
    logger.close()
    assert logger.stats.committed == 25 and real.count_predictions() == 25
