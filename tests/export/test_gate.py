"""The accuracy gate compares optimised and reference models at one operating threshold."""

from __future__ import annotations

import numpy as np
import pytest

from visionline.errors import GateFailedError
from visionline.export import accuracy_gate

IS_DEFECT = np.array([False] * 50 + [True] * 50)


def test_gate_passes_when_scores_barely_move() -> None:
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 0.3, 50), rng.uniform(0.6, 1, 50)])
    result = accuracy_gate("INT8", ref, ref + 0.001, IS_DEFECT, threshold=0.45)
    assert result.passed and result.recall_drop == 0 and result.frr_rise == 0


def test_gate_rejects_a_recall_drop_with_the_numbers() -> None:
    ref = np.concatenate([np.full(50, 0.1), np.full(50, 0.9)])
    cand = ref.copy()
    cand[50:55] = 0.2  # five defects (10 %) now pass as good
    with pytest.raises(GateFailedError, match=r"recall 100\.0% → 90\.0%"):
        accuracy_gate("INT8", ref, cand, IS_DEFECT, threshold=0.5, tolerance=0.01)


def test_gate_rejects_more_false_rejects() -> None:
    ref = np.concatenate([np.full(50, 0.1), np.full(50, 0.9)])
    cand = ref.copy()
    cand[:2] = 0.8  # two good images (4 %) now rejected
    with pytest.raises(GateFailedError, match=r"false-reject rate 0\.0% → 4\.0%"):
        accuracy_gate("INT8", ref, cand, IS_DEFECT, threshold=0.5, tolerance=0.01)
