"""The operating point: a threshold set on held-out good scores (split conformal, so its
false-reject budget holds on new images in expectation), certified by an exact bound, and
optional temperature scaling fitted on the same data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from visionline.errors import DataError
from visionline.evaluate._metrics import clopper_pearson_upper, min_good_to_certify
from visionline.evaluate._threshold import conformal_threshold


@dataclass(frozen=True)
class OperatingPoint:
    """Threshold on the defect score and what the validation data can prove about it."""

    threshold: float
    target_false_reject_rate: float
    n_good: int
    false_rejects: int
    false_reject_rate: float
    false_reject_upper_bound: float
    confidence: float
    certified: bool
    min_good_needed: int
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_operating_point(
    good_scores: np.ndarray, target_frr: float, confidence: float = 0.95
) -> OperatingPoint:
    """Threshold at the false-reject budget from held-out good scores (`conformal_threshold`:
    at most `target_frr` false rejects on new good images in expectation), with the exact
    one-sided Clopper–Pearson upper bound on the false-reject rate it implies."""
    scores = np.asarray(good_scores, dtype=np.float64)
    if scores.size == 0:
        raise DataError(
            "The validation split has no good images; add good images to it to set a threshold."
        )
    threshold = conformal_threshold(scores, target_frr)
    false_rejects = int(np.sum(scores > threshold))
    upper = clopper_pearson_upper(false_rejects, scores.size, confidence)
    needed = min_good_to_certify(target_frr, confidence)
    certified = upper <= target_frr
    warning = None
    if scores.size < needed:
        warning = (
            f"Only {scores.size} good validation images: at least {needed} are needed to certify a "
            f"false-reject rate of {target_frr:.1%} at {confidence:.0%} confidence; add good images."
        )
    elif not certified:
        warning = (
            f"The {confidence:.0%} upper bound on the false-reject rate is {upper:.2%}, above the "
            f"target {target_frr:.1%}; add good validation images to certify it."
        )
    return OperatingPoint(
        threshold=threshold,
        target_false_reject_rate=target_frr,
        n_good=int(scores.size),
        false_rejects=false_rejects,
        false_reject_rate=false_rejects / scores.size,
        false_reject_upper_bound=upper,
        confidence=confidence,
        certified=certified,
        min_good_needed=needed,
        warning=warning,
    )


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, numerically stable."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises validation negative log-likelihood (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if logits.shape[0] == 0:
        raise DataError("No validation images to calibrate on; add a val split.")

    def nll(log_t: float) -> float:
        probs = softmax(logits, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
