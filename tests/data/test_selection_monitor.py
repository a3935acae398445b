"""Active learning from a real (SQLite) prediction log: kept, unlabelled images only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visionline.data._selection import Strategy
from visionline.data._selection_monitor import select_from_monitor
from visionline.errors import ConfigError, DataError
from visionline.monitor import MonitorDB


def _row(i: int, score: float, ts: float, kept: bool = True) -> dict:
    embedding = np.array([i % 3, i // 3], np.float16).tobytes()
    return {
        "id": f"p{i}",
        "ts": ts,
        "model": "apples",
        "version": "1",
        "route": "primary",
        "probabilities": {"good": 1 - score, "rot": score},
        "predicted_class": "rot" if score >= 0.5 else "good",
        "defect_score": score,
        "flagged": score >= 0.5,
        "decision": "reject" if score >= 0.5 else "accept",
        "threshold": 0.5,
        "embedding": embedding,
        "image_sha256": f"{i:064x}" if kept else None,
    }


@pytest.fixture
def db(tmp_path: Path) -> MonitorDB:
    db = MonitorDB(f"sqlite:///{tmp_path / 'monitor.db'}")
    scores = [0.05, 0.48, 0.9, 0.55, 0.3, 0.51, 0.99]
    db.insert_predictions([_row(i, s, 100.0 + i) for i, s in enumerate(scores)])
    db.insert_predictions([_row(50, 0.5, 90.0, kept=False)])  # no image kept: not selectable
    db.add_feedback("p5", "defect", "rot", "operator")  # already labelled
    return db


def test_uncertainty_picks_kept_unlabelled_images_nearest_their_threshold(db: MonitorDB) -> None:
    picks, pool = select_from_monitor(db, "apples", Strategy.UNCERTAINTY, 2)
    assert pool == 6
    assert [p.prediction_id for p in picks] == ["p1", "p3"]
    assert picks[0].reason == "score 0.480, 0.020 from the threshold 0.500"
    assert (picks[0].predicted_class, picks[0].score) == ("good", pytest.approx(0.52))
    since, _ = select_from_monitor(db, "apples", Strategy.UNCERTAINTY, 5, since=103.0)
    assert [p.prediction_id for p in since] == ["p3", "p4", "p6"]


def test_drift_takes_images_of_drifted_windows(db: MonitorDB) -> None:
    with pytest.raises(DataError, match="monitor drift"):
        select_from_monitor(db, "apples", Strategy.DRIFT, 2)
    window = {
        "ts": 200.0,
        "model": "apples",
        "version": "1",
        "n": 3,
        "detector": "ks",
        "statistic": 0.9,
        "p_value": 0.001,
        "adjusted_p": 0.002,
    }
    db.add_windows(
        [
            {**window, "window": 0, "start_ts": 100.0, "end_ts": 102.0, "drifted": False},
            {**window, "window": 1, "start_ts": 103.0, "end_ts": 106.0, "drifted": True},
        ]
    )
    picks, _ = select_from_monitor(db, "apples", Strategy.DRIFT, 2)
    assert [p.prediction_id for p in picks] == ["p3", "p4"]
    assert picks[0].reason.startswith("drifted window; score 0.550")


def test_diversity_uses_logged_embeddings(db: MonitorDB) -> None:
    picks, _ = select_from_monitor(db, "apples", Strategy.DIVERSITY, 3)
    assert len({p.prediction_id for p in picks}) == 3 and "p5" not in {
        p.prediction_id for p in picks
    }


def test_bad_requests_name_the_fix(db: MonitorDB, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--scores"):
        select_from_monitor(db, "apples", Strategy.DISAGREEMENT, 2)
    empty = MonitorDB(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(DataError, match="image sampling on"):
        select_from_monitor(empty, "apples", Strategy.UNCERTAINTY, 2)


def test_fail_safe_verdicts_without_embeddings_leave_the_diversity_pool(
    db: MonitorDB, tmp_path: Path
) -> None:
    db.insert_predictions([{**_row(60, 1.0, 120.0), "embedding": None}])  # a missed deadline
    for strategy in (Strategy.DIVERSITY, Strategy.MIXED):
        picks, pool = select_from_monitor(db, "apples", strategy, 6)
        assert pool == 6 and "p60" not in {p.prediction_id for p in picks}
    picks, pool = select_from_monitor(db, "apples", Strategy.UNCERTAINTY, 7)
    assert pool == 7 and "p60" in {p.prediction_id for p in picks}
    blind = MonitorDB(f"sqlite:///{tmp_path / 'blind.db'}")
    blind.insert_predictions([{**_row(1, 0.4, 1.0), "embedding": None}])
    with pytest.raises(DataError, match="without embeddings"):
        select_from_monitor(blind, "apples", Strategy.DIVERSITY, 1)
