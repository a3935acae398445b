"""Operating-point metrics and the accuracy gate that an optimised model must pass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from visionline.errors import GateFailedError


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


@dataclass(frozen=True)
class GateResult:
    """An optimised model's metrics at the reference operating threshold, against the reference."""

    name: str
    reference: dict[str, float]
    candidate: dict[str, float]
    tolerance: float

    @property
    def recall_drop(self) -> float:
        return self.reference["defect_recall"] - self.candidate["defect_recall"]

    @property
    def frr_rise(self) -> float:
        return self.candidate["false_reject_rate"] - self.reference["false_reject_rate"]

    @property
    def passed(self) -> bool:
        return (
            self.recall_drop <= self.tolerance + 1e-12 and self.frr_rise <= self.tolerance + 1e-12
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "recall_drop": self.recall_drop,
            "frr_rise": self.frr_rise,
            "passed": self.passed,
        }


def accuracy_gate(
    name: str,
    reference_scores: np.ndarray,
    candidate_scores: np.ndarray,
    is_defect: np.ndarray,
    threshold: float,
    tolerance: float = 0.01,
) -> GateResult:
    """Evaluate both models at the same threshold; raise `GateFailedError` with the numbers if the
    candidate loses more than `tolerance` defect recall or adds more than `tolerance` false rejects."""
    result = GateResult(
        name,
        operating_metrics(reference_scores, is_defect, threshold),
        operating_metrics(candidate_scores, is_defect, threshold),
        tolerance,
    )
    if not result.passed:
        ref, cand = result.reference, result.candidate
        raise GateFailedError(
            f"{name} gate failed at threshold {threshold:.4f}: defect recall {ref['defect_recall']:.1%} → "
            f"{cand['defect_recall']:.1%}, false-reject rate {ref['false_reject_rate']:.1%} → "
            f"{cand['false_reject_rate']:.1%} (tolerance {tolerance:.1%}); try --calibration entropy or "
            "percentile, more --calibration-images, or export with --no-int8."
        )
    return result
