import json

import numpy as np
import pytest

from tests.monitor.conftest import make_predictions, toy_reference
from visionline.config import Project, init_project
from visionline.errors import DataError, NotFoundError
from visionline.monitor import (
    DriftConfig,
    MonitorDB,
    check_drift,
    estimate_deliveries,
    estimate_performance,
    import_feedback,
    parse_verdict,
    realised_performance,
    record_feedback,
    validated_rates,
)


@pytest.fixture
def project(tmp_path):
    init_project(tmp_path / "proj")
    return Project.load(tmp_path / "proj")


@pytest.fixture
def db(tmp_path):
    log = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    log.insert_predictions([p.row(f"{i:064x}") for i, p in enumerate(make_predictions(200))])
    return log


def test_parse_verdict(project):
    cfg = project.config
    assert parse_verdict("good", cfg) == ("good", None)
    assert parse_verdict("defect", cfg) == ("defect", None)
    assert parse_verdict("defect/bruise", cfg) == ("defect", "bruise")
    assert parse_verdict("Rot", cfg) == ("defect", "rot")
    with pytest.raises(DataError, match="not one of"):
        parse_verdict("defect/banana", cfg)


def test_feedback_gives_realised_rates(db, project):
    frame = db.frame()
    flagged = frame[frame["flagged"]].head(10)
    passed = frame[~frame["flagged"]].head(30)
    # 4 of 10 flagged were good (false rejects), 6 were defects; 3 of 30 passed were defects (escapes)
    for i, pid in enumerate(flagged["id"]):
        record_feedback(db, pid[:12], "good" if i < 4 else "defect/bruise", project.config)
    for i, pid in enumerate(passed["id"]):
        record_feedback(db, pid, "rot" if i < 3 else "good", project.config)
    rows = realised_performance(db)
    assert len(rows) == 1
    row = rows[0]
    assert row["verdicts"] == 40
    assert (row["false_reject"]["k"], row["false_reject"]["n"]) == (4, 31)
    assert (row["escape"]["k"], row["escape"]["n"]) == (3, 9)
    assert row["false_reject"]["low"] < 4 / 31 < row["false_reject"]["high"]
    with pytest.raises(NotFoundError):
        record_feedback(db, "ffffffffffff", "good", project.config)


def test_cbpe_matches_truth_on_a_calibrated_toy():
    rng = np.random.default_rng(0)
    p_good = rng.beta(6, 1.5, 40_000)
    is_good = rng.random(40_000) < p_good  # labels drawn from the (calibrated) probabilities
    flagged = 1 - p_good > 0.4
    est = estimate_performance(p_good, flagged)
    assert est.expected_accuracy == pytest.approx(np.mean(flagged != is_good), abs=0.01)
    assert est.expected_false_reject_rate == pytest.approx(flagged[is_good].mean(), abs=0.005)
    assert est.expected_escape_rate == pytest.approx((~flagged[~is_good]).mean(), abs=0.02)
    assert "concept drift" in est.assumptions
    with pytest.raises(DataError):
        estimate_performance(np.array([]), np.array([], bool))


def test_deliveries_with_validated_rates(db):
    rates = validated_rates(toy_reference())
    rows = estimate_deliveries(db, "delivery_id", rates)
    frame = db.frame()
    assert [r["delivery_id"] for r in rows] == ["D0", "D1", "D2"]
    for r in rows:
        part = frame[frame["delivery_id"] == r["delivery_id"]]
        assert r["n"] == len(part) and r["flagged"] == int(part["flagged"].sum())
        assert 0 <= r["low"] <= r["estimate"] <= r["high"] <= 1
    by_supplier = estimate_deliveries(db, "supplier_id", None)
    assert {r["supplier_id"] for r in by_supplier} == {
        "S0",
        "S1",
    } and "estimate" not in by_supplier[0]


def test_import_label_studio_feedback(db, project, tmp_path):
    frame = db.frame()
    export = [
        {
            "id": 1,
            "data": {"image": "x.jpg", "sha256": frame["image_sha256"][0]},
            "annotations": [
                {
                    "result": [
                        {
                            "from_name": "choice",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": ["bruise"]},
                        }
                    ]
                }
            ],
        },
        {
            "id": 2,
            "data": {"image": "y.jpg", "sha256": "e" * 64},
            "annotations": [
                {
                    "result": [
                        {
                            "from_name": "choice",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": ["good"]},
                        }
                    ]
                }
            ],
        },
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    result = import_feedback(db, path, project.config)
    assert (result.decisions, result.matched, result.unmatched) == (2, 1, 1)
    fb = db.feedback_frame()
    assert list(fb["prediction_id"]) == [frame["id"][0]]
    assert (fb["label"][0], fb["subtype"][0], fb["source"][0]) == (
        "defect",
        "bruise",
        "labelstudio",
    )


def test_check_drift_resumes_after_the_last_window(db):
    reference = toy_reference()
    first = check_drift(db, reference, DriftConfig(size=50))
    assert len(first) == 4
    db.insert_predictions([p.row(None) for p in make_predictions(60, seed=9, t0=1_800_000_000.0)])
    second = check_drift(db, reference, DriftConfig(size=50))
    assert [w.window for w in second] == [4]
    assert len(db.windows_frame()) == 5 * 4


def test_check_drift_keeps_the_persistence_streak_across_runs(tmp_path):
    log = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    reference = toy_reference()
    for run, t0 in enumerate((1_790_000_000.0, 1_790_001_000.0)):
        items = make_predictions(100, seed=20 + run, t0=t0)
        for item in items:
            item.quality = [q * f for q, f in zip(item.quality, (0.6, 0.6, 0.36, 1.0))]
        log.insert_predictions([p.row(None) for p in items])
        windows = check_drift(log, reference, DriftConfig(size=100, persistence=2))
        assert len(windows) == 1 and windows[0].drifted
        assert (windows[0].alarm is not None) == (run == 1)
    assert len(log.alarms_frame()) == 1
