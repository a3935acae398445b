import numpy as np
import pytest

import edge


def test_int8_is_scored_with_the_fp32_val_threshold_and_its_extra_false_rejects_are_counted() -> None:
    rng = np.random.default_rng(0)
    val_labels = np.array([0] * 100 + [1] * 50)
    test_labels = np.array([0] * 100 + [1] * 50)
    val = np.concatenate([rng.uniform(0, 0.5, 100), rng.uniform(0.6, 1, 50)])
    fp32_test = np.concatenate([np.full(100, 0.1), np.full(50, 0.9)])
    int8_test = fp32_test.copy()
    int8_test[:3] = 0.99  # three good apples now rejected
    int8_test[100] = 0.0  # one defect now missed
    scores = {"fp32": {"val": val, "test": fp32_test}, "int8": {"val": val, "test": int8_test}}

    result = edge.accuracy(scores, {"val": val_labels, "test": test_labels}, resamples=200)

    assert result["threshold"] < 0.6
    assert result["fp32"]["test"]["false_reject_rate"] == 0.0
    assert result["int8"]["test"]["false_reject_rate"] == 0.03
    change = result["int8_minus_fp32_test"]
    assert change["false_reject_rate_pp"] == pytest.approx(3.0)
    assert change["defect_recall_pp"] == pytest.approx(-2.0)
    assert change["good_apples_newly_rejected_by_int8"] == 3
    assert change["defects_newly_missed_by_int8"] == 1
    low, high = change["false_reject_rate_pp_ci95"]
    assert 0 <= low <= 3.0 <= high
    low, high = result["int8"]["test"]["false_reject_rate_ci95"]
    assert low < 0.03 < high
