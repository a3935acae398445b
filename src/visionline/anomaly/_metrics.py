"""Image-level numbers of an anomaly detector at its operating threshold.

The detector has one score per image, not class probabilities, so this mirrors
`visionline.evaluate.compute_metrics` on scores, built from the same pieces (false-reject and
escape rates, exact Clopper–Pearson intervals, bootstrap intervals, per-subtype recall), and the
result feeds the same quality gates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from visionline.evaluate import (
    bootstrap_ci,
    clopper_pearson,
    escape_rate,
    false_reject_rate,
    pr_auc,
    roc_auc,
    subtype_recall,
)

GOOD_INDEX = 0


def anomaly_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    threshold: float,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC, rates at `threshold`, and per-subtype recall with exact intervals, as a JSON dict."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    is_defect = labels != GOOD_INDEX
    flagged = scores > threshold
    n_good, n_defect = int((~is_defect).sum()), int(is_defect.sum())
    false_rejects, detected = int(flagged[~is_defect].sum()), int(flagged[is_defect].sum())

    def _boot(fn: Callable[[np.ndarray], float]) -> list[float]:
        if bootstrap <= 0:
            return [float("nan"), float("nan")]
        return list(bootstrap_ci(fn, len(labels), confidence, bootstrap, seed))

    recall_by_subtype = subtype_recall(labels, flagged, class_names)
    subtype_ci = {
        name: list(
            clopper_pearson(int(flagged[labels == i].sum()), int((labels == i).sum()), confidence)
        )
        for i, name in enumerate(class_names[1:], start=1)
    }
    subtype_auroc = {
        name: roc_auc(labels[(labels == i) | ~is_defect] == i, scores[(labels == i) | ~is_defect])
        for i, name in enumerate(class_names[1:], start=1)
    }
    return {
        "roc_auc": roc_auc(is_defect, scores),
        "pr_auc": pr_auc(is_defect, scores),
        "false_reject_rate": false_reject_rate(is_defect, flagged),
        "escape_rate": escape_rate(is_defect, flagged),
        "defect_recall": 1.0 - escape_rate(is_defect, flagged),
        "intervals": {
            "roc_auc": _boot(lambda i: roc_auc(is_defect[i], scores[i])),
            "false_reject_rate": _boot(lambda i: false_reject_rate(is_defect[i], flagged[i])),
            "defect_recall": _boot(lambda i: 1.0 - escape_rate(is_defect[i], flagged[i])),
        },
        "confidence": confidence,
        "threshold": float(threshold),
        "n_images": len(labels),
        "n_good": n_good,
        "n_defect": n_defect,
        "false_rejects": false_rejects,
        "detected_defects": detected,
        "false_reject_rate_exact_ci": list(clopper_pearson(false_rejects, n_good, confidence)),
        "defect_recall_exact_ci": list(clopper_pearson(detected, n_defect, confidence)),
        "class_names": list(class_names),
        "subtype_recall": recall_by_subtype,
        "subtype_recall_exact_ci": subtype_ci,
        "subtype_roc_auc": subtype_auroc,
        "subtype_support": {
            name: int((labels == i).sum()) for i, name in enumerate(class_names[1:], start=1)
        },
    }
