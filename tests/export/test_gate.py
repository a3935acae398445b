"""The paired INT8 gate: same images, McNemar on the flips, Newcombe intervals, refusal only for a
loss that is both beyond the tolerance and significant."""

from __future__ import annotations

import numpy as np
import pytest

from visionline.errors import DataError, GateFailedError
from visionline.export import accuracy_gate, compare_decisions
from visionline.export._gate import paired_interval

IS_DEFECT = np.array([False] * 50 + [True] * 50)
REF = np.concatenate([np.full(50, 0.1), np.full(50, 0.9)])


def test_gate_passes_when_scores_barely_move() -> None:
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 0.3, 50), rng.uniform(0.6, 1, 50)])
    result = accuracy_gate("INT8", ref, ref + 0.001, IS_DEFECT, threshold=0.45)
    assert result.passed and result.recall_drop == 0 and result.frr_rise == 0
    assert result.to_dict()["recall"]["mcnemar_p_value"] == 1.0


def test_gate_rejects_a_significant_recall_drop_with_the_numbers() -> None:
    cand = REF.copy()
    cand[50:60] = 0.2  # ten defects (20 %) now pass as good, none the other way
    with pytest.raises(
        GateFailedError,
        match=r"recall fell 100\.0% → 80\.0% \(10 defects newly missed, McNemar p=0\.00195\)",
    ):
        accuracy_gate("INT8", REF, cand, IS_DEFECT, threshold=0.5, tolerance=0.01)


def test_a_few_flipped_good_images_are_noise_not_a_refusal() -> None:
    cand = REF.copy()
    cand[:2] = 0.8  # two good images (4 %) newly rejected: the raw 1-point rule refused this
    result = compare_decisions("INT8", REF, cand, IS_DEFECT, threshold=0.5, tolerance=0.01)
    assert result.frr_rise == pytest.approx(0.04)
    assert result.passed and not result.frr_rise_significant
    assert result.false_rejects.p_value == pytest.approx(0.5)
    low, high = result.false_rejects.change_ci95
    assert low < 0 and high > result.frr_rise  # the interval says the rise could be nothing


def test_many_newly_rejected_good_images_refuse_int8() -> None:
    cand = REF.copy()
    cand[:9] = 0.8
    result = compare_decisions("INT8", REF, cand, IS_DEFECT, threshold=0.5, tolerance=0.01)
    assert not result.passed and result.frr_rise_significant
    assert "false-reject rate rose 0.0% → 18.0% (9 good images newly rejected" in result.message()


def test_a_significant_loss_within_tolerance_passes() -> None:
    many = np.array([False] * 5000 + [True] * 50)
    ref = np.where(many, 0.9, 0.1)
    cand = ref.copy()
    cand[:20] = 0.8  # 0.4 % more false rejects: significant (p < 1e-5) but below the 1 % tolerance
    result = compare_decisions("INT8", ref, cand, many, threshold=0.5, tolerance=0.01)
    assert result.frr_rise_significant and result.passed


def test_newcombe_interval_brackets_the_change_and_narrows_with_more_images() -> None:
    ref = np.array([True] * 30 + [False] * 70)
    cand = ref.copy()
    cand[:3] = False  # three lost, one gained: change -2 %
    cand[50] = True
    low, high = paired_interval(ref, cand)
    assert -1 <= low < -0.02 < high <= 1
    big_low, big_high = paired_interval(np.tile(ref, 10), np.tile(cand, 10))
    assert big_low < -0.02 < big_high and big_high - big_low < high - low
    same_low, same_high = paired_interval(ref, ref)
    assert same_low <= 0 <= same_high


def test_the_gate_needs_both_classes_and_paired_scores() -> None:
    with pytest.raises(DataError, match="needs good and defect images"):
        compare_decisions("INT8", REF[:50], REF[:50], IS_DEFECT[:50], threshold=0.5)
    with pytest.raises(DataError, match="same images"):
        compare_decisions("INT8", REF, REF[:10], IS_DEFECT, threshold=0.5)
