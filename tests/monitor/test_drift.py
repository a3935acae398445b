import numpy as np
import pytest

from tests.monitor.conftest import CLASSES, toy_reference
from visionline.errors import ConfigError, DataError
from visionline.monitor import (
    Detector,
    DriftConfig,
    DriftMonitor,
    MonitorDB,
    diagnose_quality,
    holm,
    ks_scores,
    mmd_permutation,
    quality_tests,
)


def _stream(n, seed, *, score_shift=0.0, emb_shift=0.0, quality_scale=(1.0, 1.0, 1.0, 1.0)):
    rng = np.random.default_rng(seed)
    p_good = np.clip(rng.beta(8, 2, n) - score_shift, 0.001, 0.999)
    rest = (1 - p_good)[:, None] * rng.dirichlet([1, 1], n)
    probs = np.column_stack([p_good, rest])
    quality = np.column_stack(
        [
            120 + rng.normal(0, 5, n),
            40 + rng.normal(0, 3, n),
            300 + rng.normal(0, 20, n),
            np.full(n, 60.0),
        ]
    ) * np.array(quality_scale)
    return probs, rng.normal(size=(n, 8)) + emb_shift, quality


def test_no_alarm_on_the_same_distribution():
    monitor = DriftMonitor(toy_reference(), DriftConfig(size=100, seed=3))
    windows = monitor.update(*_stream(2000, seed=5))
    assert len(windows) == 20
    assert not any(w.alarm for w in windows)
    assert sum(bool(w.drifted) for w in windows) <= 1


def test_alarm_on_a_shift_needs_persistence_and_fires_once():
    reference = toy_reference()
    calls = []
    monitor = DriftMonitor(reference, DriftConfig(size=100, persistence=2), on_alarm=[calls.append])
    monitor.update(*_stream(300, seed=6))
    windows = monitor.update(*_stream(500, seed=7, score_shift=0.3, emb_shift=1.0))
    assert windows[0].drifted and windows[0].alarm is None
    assert windows[1].alarm is not None
    assert sum(w.alarm is not None for w in windows) == 1 and len(calls) == 1
    alarm = calls[0]
    assert Detector.SCORE.value in alarm.detectors and alarm.p_values[Detector.SCORE.value] < 1e-3
    assert alarm.details["images"] == [400, 500]


def test_each_detector_separates_shift_from_no_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(size=100)
    assert ks_scores(a, b).p_value > 0.01 and ks_scores(a, b + 1).p_value < 1e-6
    x = rng.normal(size=(200, 8))
    assert mmd_permutation(x, rng.normal(size=(100, 8)), seed=1).p_value > 0.01
    assert mmd_permutation(x, rng.normal(size=(100, 8)) + 0.8, seed=1).p_value < 0.01


def test_quality_causes_are_explained():
    ref = _stream(400, 1)[2]
    dirty = quality_tests(ref, _stream(100, 2, quality_scale=(1.05, 0.6, 0.2, 1.0))[2])
    assert dirty.details["cause"].startswith("dirty lens")
    dark = quality_tests(ref, _stream(100, 3, quality_scale=(0.6, 0.6, 0.36, 1.0))[2])
    assert dark.details["cause"].startswith("lighting or product change: images darker")
    assert (dirty.details["cause_kind"], dark.details["cause_kind"]) == ("optics", "lighting")
    same = quality_tests(ref, _stream(100, 4)[2])
    assert same.details["cause"] is None and same.p_value > 0.01
    assert diagnose_quality({}, set()) is None


def test_a_new_cause_during_an_episode_raises_its_own_alarm():
    monitor = DriftMonitor(toy_reference(), DriftConfig(size=100, persistence=2, seed=1))
    mix = monitor.update(*_stream(300, seed=11, emb_shift=1.0))
    dirty_quality = (1.05, 0.6, 0.2, 1.0)
    lens = monitor.update(*_stream(400, seed=12, emb_shift=1.0, quality_scale=dirty_quality))
    assert all(w.drifted for w in mix + lens)
    first = [w.alarm for w in mix if w.alarm]
    second = [w.alarm for w in lens if w.alarm]
    assert len(first) == 1 and "quality_ks" not in first[0].detectors
    assert len(second) == 1 and second[0].cause.startswith("dirty lens")
    assert second[0].window == lens[1].window and second[0].details["cause_kind"] == "optics"
    dark_quality = (0.6, 0.6, 0.36, 1.0)
    dark = monitor.update(*_stream(300, seed=15, emb_shift=1.0, quality_scale=dark_quality))
    again = monitor.update(*_stream(300, seed=16, emb_shift=1.0, quality_scale=dirty_quality))
    assert [w.alarm.details["cause_kind"] for w in dark if w.alarm] == ["lighting"]
    assert all(w.drifted for w in again) and not any(w.alarm for w in again)


def test_resumed_episode_keeps_its_cause_kind(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    dirty_quality = (1.05, 0.6, 0.2, 1.0)
    first = DriftMonitor(toy_reference(), DriftConfig(size=100), db=db)
    assert sum(w.alarm is not None for w in first.update(*_stream(300, 13, quality_scale=dirty_quality))) == 1
    resumed = DriftMonitor(toy_reference(), DriftConfig(size=100), db=db)
    resumed.resume(3, 3, db.alarms_frame()["details"].iloc[-1]["cause_kind"])
    assert not any(w.alarm for w in resumed.update(*_stream(300, 14, quality_scale=dirty_quality)))


def test_holm_adjustment():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])


def test_time_windows_and_db_records(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    monitor = DriftMonitor(toy_reference(), DriftConfig(size=1000, seconds=60), db=db)
    probs, emb, quality = _stream(250, 8)
    windows = monitor.update(probs, emb, quality, ts=np.arange(250) * 1.0)
    assert [w.end_index - w.start_index for w in windows] == [60, 60, 60, 60]
    frame = db.windows_frame()
    assert len(frame) == 4 * len(Detector) and set(frame["detector"]) == {d.value for d in Detector}


def test_alarm_is_recorded(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    monitor = DriftMonitor(toy_reference(), DriftConfig(size=100, persistence=1), db=db)
    monitor.update(*_stream(100, 9, quality_scale=(0.6, 0.6, 0.36, 1.0)))
    alarms = db.alarms_frame()
    assert len(alarms) == 1 and "lighting" in alarms["cause"][0]
    assert "quality_ks" in alarms["detectors"][0] and alarms["p_values"][0]["quality_ks"] < 0.01


def test_bad_inputs():
    with pytest.raises(ConfigError, match="size"):
        DriftConfig.build(size=1)
    monitor = DriftMonitor(toy_reference())
    with pytest.raises(DataError, match=f"{len(CLASSES)} classes"):
        monitor.test(np.ones((10, 5)) / 5, None, None)
