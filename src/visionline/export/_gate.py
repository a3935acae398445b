"""Operating-point metrics and the paired accuracy gate that an optimised model must pass.

The gate compares the reference (FP32) and candidate (INT8) decisions on the *same* images, at
the reference's operating threshold, class by class: on defect images a flip changes recall, on
good images it changes the false-reject rate. A raw one-point difference on a few hundred images
is mostly noise (two good apples flipping move the rate by half a point), so the gate refuses the
candidate only when the change is both larger than the tolerance and significant by an exact
McNemar test on the flipped images; it records both rates, the flips, the p-values and a Newcombe
(1998, method 10) 95 % interval for each paired change as its evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionline.errors import DataError, GateFailedError

ALPHA = 0.05
Z95 = 1.959963984540054


def operating_metrics(
    scores: np.ndarray, is_defect: np.ndarray, threshold: float
) -> dict[str, float]:
    """Defect recall and false-reject rate when images scoring above `threshold` are flagged."""
    scores, is_defect = np.asarray(scores, dtype=np.float64), np.asarray(is_defect, dtype=bool)
    flagged = scores > threshold
    metrics = {
        "threshold": float(threshold),
        "defect_recall": float(flagged[is_defect].mean()) if is_defect.any() else float("nan"),
        "false_reject_rate": float(flagged[~is_defect].mean())
        if (~is_defect).any()
        else float("nan"),
        "n_good": int((~is_defect).sum()),
        "n_defect": int(is_defect.sum()),
    }
    if is_defect.any() and (~is_defect).any():
        from sklearn.metrics import roc_auc_score

        metrics["auroc"] = float(roc_auc_score(is_defect, scores))
    return metrics


def _wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_interval(
    reference: np.ndarray, candidate: np.ndarray, z: float = Z95
) -> tuple[float, float]:
    """Newcombe's hybrid-score interval for rate(candidate) − rate(reference) on paired flags.

    It stays inside [−1, 1] and keeps its coverage with few flips, where a Wald interval
    collapses to zero width.
    """
    reference, candidate = np.asarray(reference, bool), np.asarray(candidate, bool)
    n = len(reference)
    both = int((reference & candidate).sum())
    only_cand = int((candidate & ~reference).sum())
    only_ref = int((reference & ~candidate).sum())
    neither = n - both - only_cand - only_ref
    p1, p2 = (both + only_cand) / n, (both + only_ref) / n
    l1, u1 = _wilson(both + only_cand, n, z)
    l2, u2 = _wilson(both + only_ref, n, z)
    margins = (both + only_cand) * (only_ref + neither) * (both + only_ref) * (only_cand + neither)
    phi = (both * neither - only_cand * only_ref) / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, p1 - p2 - delta), min(1.0, p1 - p2 + epsilon)


@dataclass(frozen=True)
class PairedChange:
    """How one class's flag rate moved between two models on the same images."""

    images: int
    reference_rate: float
    candidate_rate: float
    flagged_by_reference_only: int
    flagged_by_candidate_only: int
    p_value: float
    change_ci95: tuple[float, float]

    @property
    def change(self) -> float:
        return self.candidate_rate - self.reference_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "reference_rate": self.reference_rate,
            "candidate_rate": self.candidate_rate,
            "change": self.change,
            "change_ci95": list(self.change_ci95),
            "flagged_by_reference_only": self.flagged_by_reference_only,
            "flagged_by_candidate_only": self.flagged_by_candidate_only,
            "mcnemar_p_value": self.p_value,
        }


def paired_change(reference_flags: np.ndarray, candidate_flags: np.ndarray) -> PairedChange:
    """Rates, flips, exact McNemar p-value and Newcombe interval of two flag vectors."""
    from visionline.evaluate import mcnemar

    reference_flags = np.asarray(reference_flags, bool)
    candidate_flags = np.asarray(candidate_flags, bool)
    test = mcnemar(reference_flags, candidate_flags)
    return PairedChange(
        images=len(reference_flags),
        reference_rate=float(reference_flags.mean()),
        candidate_rate=float(candidate_flags.mean()),
        flagged_by_reference_only=test["only_a"],
        flagged_by_candidate_only=test["only_b"],
        p_value=test["p_value"],
        change_ci95=paired_interval(reference_flags, candidate_flags),
    )


@dataclass(frozen=True)
class GateResult:
    """Paired evidence for an optimised model against its reference at one threshold."""

    name: str
    reference: dict[str, float]
    candidate: dict[str, float]
    tolerance: float
    recall: PairedChange
    false_rejects: PairedChange
    alpha: float = ALPHA
    split: str = "val"

    @property
    def recall_drop(self) -> float:
        return -self.recall.change

    @property
    def frr_rise(self) -> float:
        return self.false_rejects.change

    @property
    def recall_loss_significant(self) -> bool:
        return self.recall_drop > 0 and self.recall.p_value < self.alpha

    @property
    def frr_rise_significant(self) -> bool:
        return self.frr_rise > 0 and self.false_rejects.p_value < self.alpha

    @property
    def reasons(self) -> list[str]:
        """Why the candidate is refused; empty when it passes."""
        reasons = []
        if self.recall_drop > self.tolerance + 1e-12 and self.recall_loss_significant:
            reasons.append(
                f"defect recall fell {self.recall.reference_rate:.1%} → {self.recall.candidate_rate:.1%} "
                f"({self.recall.flagged_by_reference_only} defects newly missed, McNemar "
                f"p={self.recall.p_value:.3g})"
            )
        if self.frr_rise > self.tolerance + 1e-12 and self.frr_rise_significant:
            reasons.append(
                f"false-reject rate rose {self.false_rejects.reference_rate:.1%} → "
                f"{self.false_rejects.candidate_rate:.1%} ({self.false_rejects.flagged_by_candidate_only} "
                f"good images newly rejected, McNemar p={self.false_rejects.p_value:.3g})"
            )
        return reasons

    @property
    def passed(self) -> bool:
        return not self.reasons

    def message(self) -> str:
        """One sentence: the verdict, with the numbers that decided it."""
        if self.passed:
            return (
                f"{self.name} passed on {self.recall.images + self.false_rejects.images} {self.split}-split "
                f"images that calibration did not see: recall {self.recall.change:+.1%} "
                f"[{self.recall.change_ci95[0]:+.1%}, {self.recall.change_ci95[1]:+.1%}], false rejects "
                f"{self.false_rejects.change:+.1%} [{self.false_rejects.change_ci95[0]:+.1%}, "
                f"{self.false_rejects.change_ci95[1]:+.1%}], no significant loss beyond {self.tolerance:.1%}"
            )
        return (
            f"{self.name} refused on {self.split}-split images: "
            + "; ".join(self.reasons)
            + f" (tolerance {self.tolerance:.1%}, alpha {self.alpha})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "threshold": self.reference["threshold"],
            "reference": self.reference,
            "candidate": self.candidate,
            "tolerance": self.tolerance,
            "alpha": self.alpha,
            "test": "exact McNemar on flipped decisions per class; Newcombe 95% interval of the paired change",
            "rule": "refused when a loss exceeds the tolerance and is significant at alpha",
            "recall": self.recall.to_dict(),
            "false_rejects": self.false_rejects.to_dict(),
            "recall_drop": self.recall_drop,
            "frr_rise": self.frr_rise,
            "passed": self.passed,
            "message": self.message(),
        }


def compare_decisions(
    name: str,
    reference_scores: np.ndarray,
    candidate_scores: np.ndarray,
    is_defect: np.ndarray,
    threshold: float,
    tolerance: float = 0.01,
    alpha: float = ALPHA,
    split: str = "val",
) -> GateResult:
    """Both models' decisions at `threshold` on the same images, with the paired evidence."""
    reference_scores = np.asarray(reference_scores, dtype=np.float64)
    candidate_scores = np.asarray(candidate_scores, dtype=np.float64)
    is_defect = np.asarray(is_defect, dtype=bool)
    if not (len(reference_scores) == len(candidate_scores) == len(is_defect)):
        raise DataError(
            f"The {name} gate needs one reference score, one candidate score and one label per "
            "image; score both models on the same images."
        )
    if is_defect.all() or not is_defect.any():
        raise DataError(
            f"The {name} gate needs good and defect images in the {split} split; add both or "
            "export with --no-int8."
        )
    ref_flags, cand_flags = reference_scores > threshold, candidate_scores > threshold
    return GateResult(
        name,
        operating_metrics(reference_scores, is_defect, threshold),
        operating_metrics(candidate_scores, is_defect, threshold),
        tolerance,
        paired_change(ref_flags[is_defect], cand_flags[is_defect]),
        paired_change(ref_flags[~is_defect], cand_flags[~is_defect]),
        alpha,
        split,
    )


def accuracy_gate(
    name: str,
    reference_scores: np.ndarray,
    candidate_scores: np.ndarray,
    is_defect: np.ndarray,
    threshold: float,
    tolerance: float = 0.01,
    alpha: float = ALPHA,
    split: str = "val",
) -> GateResult:
    """`compare_decisions`, raising `GateFailedError` with the evidence when the candidate fails."""
    result = compare_decisions(
        name, reference_scores, candidate_scores, is_defect, threshold, tolerance, alpha, split
    )
    if not result.passed:
        raise GateFailedError(
            result.message() + "; try --calibration entropy or percentile, more "
            "--calibration-images, or export with --no-int8."
        )
    return result
