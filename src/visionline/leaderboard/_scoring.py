"""Scoring entries the same way `visionline eval` does: the threshold at the false-reject budget
from the threshold split's good images (`choose_operating_point`), test metrics with intervals
(`compute_metrics` for class probabilities, `anomaly_metrics` for bare scores, both built on
`visionline.evaluate`), and the project's gates (`check_gates`). Plus the ranking and the
"no ML needed" verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from visionline.config import Goals
from visionline.leaderboard._data import LeaderboardData
from visionline.leaderboard._entry import Entry

CLASSICAL = "classical"


def score_entry(entry: Entry, data: LeaderboardData, goals: Goals, bootstrap: int) -> None:
    """Fill `entry`'s operating point, test metrics, gates and threshold-split recall/AUROC."""
    from visionline.anomaly import anomaly_metrics
    from visionline.evaluate import check_gates, choose_operating_point, compute_metrics, roc_auc

    outcome = entry.outcome
    calib_defect = data.calib.is_defect
    operating = choose_operating_point(
        outcome.calib_scores[~calib_defect], goals.operating_false_reject_rate
    )
    if outcome.test_probabilities is not None:
        metrics = compute_metrics(
            outcome.test_probabilities,
            data.test.labels,
            data.class_names,
            operating.threshold,
            bootstrap,
            seed=0,
        )
    else:
        metrics = anomaly_metrics(
            outcome.test_scores, data.test.labels, data.class_names, operating.threshold, bootstrap
        )
    entry.operating_point = operating
    entry.metrics = metrics
    entry.gates = check_gates(metrics, goals)
    entry.calib_recall = float(np.mean(outcome.calib_scores[calib_defect] > operating.threshold))
    entry.calib_auroc = roc_auc(calib_defect, outcome.calib_scores)


def _neg(value: float) -> float:
    return -value if math.isfinite(value) else math.inf


def rank_key(entry: Entry) -> tuple[float, float, float]:
    """Rank by recall at the false-reject budget on the threshold split, then its AUROC, then
    latency: the test split only measures, it never picks the winner."""
    latency = entry.outcome.latency_ms if entry.outcome else math.inf
    return (_neg(entry.calib_recall), _neg(entry.calib_auroc), latency)


def ranked(entries: Sequence[Entry]) -> list[Entry]:
    """Finished entries, best first."""
    return sorted((e for e in entries if e.finished), key=rank_key)


def recall_interval(entry: Entry) -> tuple[float, float]:
    """The exact (Clopper–Pearson) 95% interval of the entry's test defect recall."""
    low, high = entry.metrics["defect_recall_exact_ci"]
    return float(low), float(high)


def no_ml_needed(classical_recall: float, best_interval: tuple[float, float]) -> bool:
    """Whether the classical baseline's test recall lies inside (or above) the best entry's
    interval: the deep models then buy nothing the data can show."""
    return math.isfinite(classical_recall) and classical_recall >= best_interval[0]


def verdict(entries: Sequence[Entry]) -> tuple[bool | None, str]:
    """(no ML needed?, one plain sentence); None when no classical entry finished."""
    order = ranked(entries)
    if not order:
        return None, "No entry finished, so nothing can be compared."
    classical = [e for e in order if e.kind == CLASSICAL]
    if not classical:
        return None, (
            "No classical entry finished, so whether ML is needed is not known; raise the budget "
            "or include the classical family."
        )
    best, baseline = order[0], classical[0]
    low, high = recall_interval(best)
    recall = float(baseline.metrics["defect_recall"])
    if best is baseline:
        return True, (
            f"No ML needed: the classical baseline {baseline.name} is the best entry "
            f"({recall:.1%} test defect recall at the false-reject budget)."
        )
    if no_ml_needed(recall, (low, high)):
        return True, (
            f"No ML needed: the classical baseline {baseline.name} catches {recall:.1%} of test "
            f"defects, within the 95% interval [{low:.1%}, {high:.1%}] of the best entry {best.name}."
        )
    return False, (
        f"ML is needed: the classical baseline {baseline.name} catches {recall:.1%} of test defects, "
        f"below the 95% interval [{low:.1%}, {high:.1%}] of the best entry {best.name} "
        f"({best.metrics['defect_recall']:.1%})."
    )


def challenger(entries: Sequence[Entry]) -> Entry | None:
    """The best-ranked entry whose test metrics pass the project's gates."""
    return next((e for e in ranked(entries) if e.gates is not None and e.gates.passed), None)
