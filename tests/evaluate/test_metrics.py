"""Metrics against values computed by hand (or by scipy for the exact intervals)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from visionline.evaluate import (
    bootstrap_ci,
    clopper_pearson,
    clopper_pearson_upper,
    compute_metrics,
    confusion,
    defect_decision,
    escape_rate,
    false_reject_rate,
    mcnemar,
    min_good_to_certify,
    operating_rates,
    per_class_report,
    pr_auc,
    reliability,
    roc_auc,
    subtype_recall,
)

NAMES = ["good", "bruise", "rot"]
# 4 good, 3 bruise, 3 rot; columns p(good), p(bruise), p(rot)
PROBS = np.array(
    [
        [0.9, 0.05, 0.05],  # good, score 0.1
        [0.8, 0.1, 0.1],  # good, score 0.2
        [0.7, 0.2, 0.1],  # good, score 0.3
        [0.3, 0.6, 0.1],  # good, score 0.7 -> false reject (bruise)
        [0.2, 0.7, 0.1],  # bruise, flagged bruise
        [0.1, 0.3, 0.6],  # bruise, flagged but called rot
        [0.6, 0.3, 0.1],  # bruise, score 0.4 -> escape
        [0.1, 0.1, 0.8],  # rot
        [0.2, 0.2, 0.6],  # rot
        [0.05, 0.15, 0.8],  # rot
    ]
)
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
THRESHOLD = 0.5


def test_defect_decision_uses_threshold_then_top_defect_class():
    predicted = defect_decision(PROBS, THRESHOLD)
    assert predicted.tolist() == [0, 0, 0, 1, 1, 2, 0, 2, 2, 2]


def test_confusion_and_per_class_report_by_hand():
    matrix = confusion(LABELS, defect_decision(PROBS, THRESHOLD), 3)
    assert matrix.tolist() == [[3, 1, 0], [1, 1, 1], [0, 0, 3]]
    report = per_class_report(matrix, NAMES)
    assert report["good"]["precision"] == pytest.approx(3 / 4)
    assert report["good"]["recall"] == pytest.approx(3 / 4)
    assert report["bruise"]["precision"] == pytest.approx(1 / 2)
    assert report["bruise"]["recall"] == pytest.approx(1 / 3)
    assert report["bruise"]["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert report["rot"]["precision"] == pytest.approx(3 / 4)
    assert report["rot"]["recall"] == 1.0
    assert report["rot"]["support"] == 3


def test_undefined_precision_is_nan_not_zero():
    report = per_class_report(np.array([[2, 0], [1, 0]]), ["good", "rot"])
    assert math.isnan(report["rot"]["precision"])
    assert report["rot"]["recall"] == 0.0


def test_false_reject_escape_and_subtype_recall():
    is_defect = LABELS != 0
    flagged = (1 - PROBS[:, 0]) > THRESHOLD
    assert false_reject_rate(is_defect, flagged) == pytest.approx(1 / 4)
    assert escape_rate(is_defect, flagged) == pytest.approx(1 / 6)
    recalls = subtype_recall(LABELS, flagged, NAMES)
    assert recalls == {"bruise": pytest.approx(2 / 3), "rot": 1.0}


def test_roc_and_pr_auc_by_hand():
    is_defect = np.array([0, 0, 1, 1], dtype=bool)
    scores = np.array([0.1, 0.6, 0.4, 0.9])
    # pairs (defect > good): (0.4>0.1), (0.9>0.1), (0.9>0.6) = 3 of 4
    assert roc_auc(is_defect, scores) == pytest.approx(0.75)
    # ranked: 0.9 (d) P=1 R=.5; 0.6 (g); 0.4 (d) P=2/3 R=1 -> AP = .5*1 + .5*2/3
    assert pr_auc(is_defect, scores) == pytest.approx(0.5 + 1 / 3)
    assert math.isnan(roc_auc(np.ones(3, dtype=bool), np.array([0.1, 0.2, 0.3])))


@pytest.mark.parametrize("seed", range(5))
def test_roc_and_pr_auc_equal_scikit_learn_with_ties(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    is_defect = rng.random(200) < 0.3
    scores = np.round(rng.random(200), 1)  # ten distinct values: many ties
    assert roc_auc(is_defect, scores) == pytest.approx(roc_auc_score(is_defect, scores), abs=1e-12)
    assert pr_auc(is_defect, scores) == pytest.approx(
        average_precision_score(is_defect, scores), abs=1e-12
    )


def test_expected_calibration_error_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.65, 0.35]])
    labels = np.array([0, 1, 0, 0])
    result = reliability(probs, labels, bins=10)
    # bin 0.9-1.0: conf .95, acc .5 (2 images); bin 0.6-0.7: conf .65, acc 1 (2 images)
    assert result["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)
    assert result["counts"][9] == 2 and result["counts"][6] == 2


@pytest.mark.parametrize("k,n", [(0, 300), (3, 300), (7, 50), (50, 50)])
def test_clopper_pearson_matches_scipy_beta(k, n):
    low, high = clopper_pearson(k, n, 0.95)
    assert low == pytest.approx(0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1))
    assert high == pytest.approx(1.0 if k == n else beta.ppf(0.975, k + 1, n - k))
    upper = clopper_pearson_upper(k, n, 0.95)
    assert upper == pytest.approx(1.0 if k == n else beta.ppf(0.95, k + 1, n - k))


def test_about_300_good_images_certify_one_percent():
    needed = min_good_to_certify(0.01, 0.95)
    assert 295 <= needed <= 300
    assert clopper_pearson_upper(0, needed) <= 0.01 < clopper_pearson_upper(0, needed - 1)


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.random(50) < 0.3
    large = rng.random(2000) < 0.3
    low_s, high_s = bootstrap_ci(lambda i: float(small[i].mean()), small.size, resamples=500)
    low_l, high_l = bootstrap_ci(lambda i: float(large[i].mean()), large.size, resamples=500)
    assert low_s < small.mean() < high_s
    assert low_l < large.mean() < high_l
    assert high_l - low_l < high_s - low_s


def test_compute_metrics_headline_and_rates():
    metrics = compute_metrics(PROBS, LABELS, NAMES, THRESHOLD, bootstrap=200)
    assert metrics["false_reject_rate"] == pytest.approx(0.25)
    assert metrics["escape_rate"] == pytest.approx(1 / 6)
    assert metrics["defect_recall"] == pytest.approx(5 / 6)
    assert metrics["accuracy"] == pytest.approx(7 / 10)
    assert metrics["binary_confusion_matrix"] == [[3, 1], [1, 5]]
    assert metrics["rates"] == {
        "tp": 5,
        "n_defect": 6,
        "fp": 1,
        "n_good": 4,
        "threshold": 0.5,
        "class_names": NAMES,
        "confusion_matrix": [[3, 1, 0], [1, 1, 1], [0, 0, 3]],
    }
    low, high = metrics["intervals"]["defect_recall"]
    assert low <= 5 / 6 <= high


def test_mcnemar_exact_binomial():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=bool)
    b = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=bool)
    result = mcnemar(a, b)
    assert (result["only_a"], result["only_b"]) == (5, 1)
    # two-sided binomial, 6 trials, 5 successes: 2 * (C(6,5)+C(6,6)) / 64
    assert result["p_value"] == pytest.approx(2 * 7 / 64)
    assert mcnemar(a, a)["p_value"] == 1.0


def test_operating_rates_count_the_flags_and_the_called_classes():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(3), size=200)
    labels = rng.integers(0, 3, size=200)
    threshold = 0.6
    flagged = 1.0 - probabilities[:, 0] > threshold
    rates = operating_rates(labels, defect_decision(probabilities, threshold), ["good", "a", "b"],
                            threshold)

    defect = labels != 0
    assert (rates["tp"], rates["n_defect"]) == (int((flagged & defect).sum()), int(defect.sum()))
    assert (rates["fp"], rates["n_good"]) == (int((flagged & ~defect).sum()), int((~defect).sum()))
    matrix = np.array(rates["confusion_matrix"])
    called_a = flagged & (probabilities[:, 1] > probabilities[:, 2])
    assert matrix[2, 1] == int((called_a & (labels == 2)).sum()) and matrix.sum() == 200
    full = compute_metrics(probabilities, labels, ["good", "a", "b"], threshold, bootstrap=0)
    assert full["rates"] == rates
