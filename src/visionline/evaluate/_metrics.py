"""Pure metrics on arrays: what the packer asks (false rejects, escapes) and what engineers check.

Every function takes plain numpy arrays (labels as class indices, class 0 = `good`, probabilities
(N, C), defect scores = 1 - p(good)) so it can be tested against hand-computed values and reused
on logged production predictions without a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

GOOD_INDEX = 0


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n trials."""
    from scipy.stats import beta

    if n <= 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """Exact one-sided upper bound: the rate is below it with probability `confidence`."""
    from scipy.stats import beta

    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    return float(beta.ppf(confidence, k + 1, n - k))


def min_good_to_certify(target_rate: float, confidence: float = 0.95) -> int:
    """Good images needed so that zero false rejects certifies `target_rate` (≈300 for 1%)."""
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target_rate))


def defect_decision(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Operating class per image: `good` unless 1 - p(good) > threshold, else the top defect class."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    flagged = (1.0 - probabilities[:, GOOD_INDEX]) > threshold
    top_defect = np.argmax(probabilities[:, 1:], axis=1) + 1
    return np.where(flagged, top_defect, GOOD_INDEX)


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[true, predicted] for class indices 0..num_classes-1."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return matrix


def operating_rates(
    labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], threshold: float
) -> dict[str, Any]:
    """The counts a per-delivery correction needs (`ValidatedRates.from_metrics`): detected
    defects, false rejects and the confusion matrix of called classes (rows true, columns
    called; `defect_decision` calls them) at the operating threshold."""
    matrix = confusion(labels, predicted, len(class_names))
    return {
        "tp": int(matrix[1:, 1:].sum()),
        "n_defect": int(matrix[1:].sum()),
        "fp": int(matrix[GOOD_INDEX, 1:].sum()),
        "n_good": int(matrix[GOOD_INDEX].sum()),
        "threshold": float(threshold),
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def per_class_report(matrix: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (NaN when undefined)."""
    report: dict[str, dict[str, float]] = {}
    for index, name in enumerate(class_names):
        tp = float(matrix[index, index])
        predicted = float(matrix[:, index].sum())
        support = float(matrix[index, :].sum())
        precision = tp / predicted if predicted else float("nan")
        recall = tp / support if support else float("nan")
        f1 = (
            2 * precision * recall / (precision + recall)
            if predicted and support and (precision + recall) > 0
            else (0.0 if predicted and support else float("nan"))
        )
        report[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
    return report


def false_reject_rate(is_defect: np.ndarray, flagged: np.ndarray) -> float:
    """Share of good images flagged as defective (the producer's risk)."""
    good = ~np.asarray(is_defect, dtype=bool)
    return float(np.mean(np.asarray(flagged, dtype=bool)[good])) if good.any() else float("nan")


def escape_rate(is_defect: np.ndarray, flagged: np.ndarray) -> float:
    """Share of defective images that pass as good (the consumer's risk) = 1 - defect recall."""
    defect = np.asarray(is_defect, dtype=bool)
    return (
        float(np.mean(~np.asarray(flagged, dtype=bool)[defect])) if defect.any() else float("nan")
    )


def subtype_recall(
    labels: np.ndarray, flagged: np.ndarray, class_names: list[str]
) -> dict[str, float]:
    """Per defect class: share of its images flagged as defective (detected, whatever subtype)."""
    labels = np.asarray(labels, dtype=int)
    flagged = np.asarray(flagged, dtype=bool)
    result = {}
    for index, name in enumerate(class_names[1:], start=1):
        mask = labels == index
        result[name] = float(np.mean(flagged[mask])) if mask.any() else float("nan")
    return result


def roc_auc(is_defect: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of the defect score (NaN with only one class present).

    The Mann-Whitney rank form (ties count half), scikit-learn's value to rounding in a
    twentieth of its time: the bootstrap intervals call it a thousand times per evaluation.
    """
    from scipy.stats import rankdata

    is_defect = np.asarray(is_defect, dtype=bool)
    if is_defect.all() or not is_defect.any():
        return float("nan")
    positives, negatives = int(is_defect.sum()), int((~is_defect).sum())
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    rank_sum = float(ranks[is_defect].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def pr_auc(is_defect: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of the defect score: the PR-curve area, honest under class imbalance.

    Scikit-learn's step-wise definition (precision at each distinct threshold weighted by the
    recall it adds), computed directly for the same reason as `roc_auc`.
    """
    is_defect = np.asarray(is_defect, dtype=bool)
    if is_defect.all() or not is_defect.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    ordered = np.asarray(scores, dtype=np.float64)[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    true_positives = np.cumsum(is_defect[order])[last_of_each_score]
    precision = true_positives / (last_of_each_score + 1)
    recall_gain = np.diff(np.r_[0, true_positives]) / true_positives[-1]
    return float(np.sum(recall_gain * precision))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Top-label calibration: per equal-width confidence bin, mean confidence, accuracy and count,
    and the expected calibration error (count-weighted |accuracy - confidence|)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    acc_sum = np.bincount(index, weights=correct.astype(float), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / np.maximum(counts, 1), np.nan)
        accuracy = np.where(counts > 0, acc_sum / np.maximum(counts, 1), np.nan)
    total = counts.sum()
    ece = float(np.nansum(counts * np.abs(accuracy - mean_conf)) / total) if total else float("nan")
    return {
        "ece": ece,
        "edges": edges.tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": accuracy.tolist(),
        "counts": counts.tolist(),
    }


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(indices)` over resampled image indices.

    Resamples where the statistic is undefined (NaN, e.g. no defects drawn) are skipped.
    """
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def compute_metrics(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    threshold: float,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """All evaluation numbers at an operating threshold, as a JSON-ready dict."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    scores = 1.0 - probabilities[:, GOOD_INDEX]
    is_defect = labels != GOOD_INDEX
    flagged = scores > threshold
    predicted = defect_decision(probabilities, threshold)
    matrix = confusion(labels, predicted, len(class_names))
    binary = confusion(is_defect.astype(int), flagged.astype(int), 2)
    n_good, n_defect = int((~is_defect).sum()), int(is_defect.sum())
    false_rejects, detected = int(flagged[~is_defect].sum()), int(flagged[is_defect].sum())

    def _boot(fn: Callable[[np.ndarray], float]) -> list[float]:
        if bootstrap <= 0:
            return [float("nan"), float("nan")]
        return list(bootstrap_ci(fn, len(labels), confidence, bootstrap, seed))

    headline = {
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else float("nan"),
        "false_reject_rate": false_reject_rate(is_defect, flagged),
        "escape_rate": escape_rate(is_defect, flagged),
        "defect_recall": 1.0 - escape_rate(is_defect, flagged),
        "roc_auc": roc_auc(is_defect, scores),
        "pr_auc": pr_auc(is_defect, scores),
    }
    intervals = {
        "accuracy": _boot(lambda i: float(np.mean(predicted[i] == labels[i]))),
        "false_reject_rate": _boot(lambda i: false_reject_rate(is_defect[i], flagged[i])),
        "escape_rate": _boot(lambda i: escape_rate(is_defect[i], flagged[i])),
        "defect_recall": _boot(lambda i: 1.0 - escape_rate(is_defect[i], flagged[i])),
        "roc_auc": _boot(lambda i: roc_auc(is_defect[i], scores[i])),
        "pr_auc": _boot(lambda i: pr_auc(is_defect[i], scores[i])),
    }
    calibration = reliability(probabilities, labels)
    return {
        **headline,
        "ece": calibration["ece"],
        "confidence": confidence,
        "intervals": intervals,
        "threshold": float(threshold),
        "n_images": len(labels),
        "n_good": n_good,
        "n_defect": n_defect,
        "false_rejects": false_rejects,
        "detected_defects": detected,
        "false_reject_rate_exact_ci": list(clopper_pearson(false_rejects, n_good, confidence)),
        "defect_recall_exact_ci": list(clopper_pearson(detected, n_defect, confidence)),
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
        "binary_confusion_matrix": binary.tolist(),
        "per_class": per_class_report(matrix, class_names),
        "subtype_recall": subtype_recall(labels, flagged, class_names),
        "reliability": calibration,
        "rates": operating_rates(labels, predicted, class_names, threshold),
    }


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact paired McNemar test on per-image correctness of two models on the same images.

    `only_a` counts images that A gets right and B wrong; the p-value is two-sided binomial on the
    discordant pairs.
    """
    from scipy.stats import binomtest

    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p_value}
