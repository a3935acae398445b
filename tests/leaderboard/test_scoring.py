"""Ranking on the threshold split and the plain "no ML needed" verdict."""

from __future__ import annotations

import numpy as np

from visionline.leaderboard import Entry, Outcome, no_ml_needed, ranked, verdict
from visionline.leaderboard._entry import FINISHED, NOT_FINISHED


def _entry(name: str, kind: str, calib_recall: float, test_recall: float, ci=(0.0, 1.0)) -> Entry:
    outcome = Outcome(np.zeros(2), np.zeros(2), size_bytes=1, latency_ms=1.0)
    metrics = {"defect_recall": test_recall, "defect_recall_exact_ci": list(ci)}
    return Entry(
        name,
        kind,
        FINISHED,
        outcome=outcome,
        metrics=metrics,
        calib_recall=calib_recall,
        calib_auroc=0.9,
    )


def test_no_ml_needed_when_the_baseline_reaches_the_lower_bound_of_the_best_interval():
    assert no_ml_needed(0.90, (0.88, 0.99))
    assert no_ml_needed(0.88, (0.88, 0.99))
    assert not no_ml_needed(0.87, (0.88, 0.99))
    assert not no_ml_needed(float("nan"), (0.0, 1.0))


def test_entries_rank_by_threshold_split_recall_not_by_test_recall():
    a = _entry("probe/x", "probe", calib_recall=0.9, test_recall=0.5)
    b = _entry("classical/logreg", "classical", calib_recall=0.7, test_recall=0.99)
    late = Entry("finetune/x", "finetune", NOT_FINISHED, reason="not started: the budget was spent")
    assert [e.name for e in ranked([b, late, a])] == ["probe/x", "classical/logreg"]


def test_verdict_says_no_ml_needed_within_the_interval():
    best = _entry("probe/x", "probe", 0.95, 0.94, ci=(0.85, 0.98))
    baseline = _entry("classical/gboost", "classical", 0.90, 0.88)
    needed, sentence = verdict([baseline, best])
    assert needed is True
    assert sentence.startswith(
        "No ML needed: the classical baseline classical/gboost catches 88.0%"
    )
    assert "[85.0%, 98.0%] of the best entry probe/x" in sentence


def test_verdict_says_ml_is_needed_below_the_interval():
    best = _entry("finetune/x", "finetune", 0.97, 0.96, ci=(0.90, 0.99))
    baseline = _entry("classical/logreg", "classical", 0.60, 0.62)
    needed, sentence = verdict([best, baseline])
    assert needed is False
    assert sentence.startswith(
        "ML is needed: the classical baseline classical/logreg catches 62.0%"
    )


def test_verdict_without_a_classical_entry_says_it_cannot_tell():
    needed, sentence = verdict([_entry("probe/x", "probe", 0.9, 0.9)])
    assert needed is None
    assert "No classical entry finished" in sentence
