"""Per-delivery defect rates: Rogan–Gladen on known values, interval coverage, subtypes, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from visionline.errors import ConfigError, DataError
from visionline.evaluate import (
    ValidatedRates,
    condition_spread,
    estimate_by_group,
    estimate_prevalence,
    estimate_prevalence_classes,
    estimate_prevalence_parts,
    estimate_subtypes,
    rogan_gladen,
)

RATES = ValidatedRates(tp=180, n_defect=200, fp=8, n_good=400, threshold=0.5)


def test_rogan_gladen_known_values():
    # true prevalence 10 %, TPR .9, FPR .02: flag = .1*.9 + .9*.02 = .108
    assert rogan_gladen(0.108, 0.9, 0.02) == pytest.approx(0.1)
    assert rogan_gladen(0.01, 0.9, 0.02) == 0.0  # below FPR clips to 0
    assert rogan_gladen(0.95, 0.9, 0.02) == 1.0


def test_model_no_better_than_chance_is_refused():
    with pytest.raises(DataError, match="no better than chance"):
        ValidatedRates(tp=10, n_defect=100, fp=20, n_good=100)


def test_rates_from_metrics_json_block():
    rates = ValidatedRates.from_metrics({"rates": {"tp": 9, "n_defect": 10, "fp": 1, "n_good": 50}})
    assert rates.tpr == 0.9 and rates.fpr == 0.02
    with pytest.raises(DataError, match="lacks the count"):
        ValidatedRates.from_metrics({"accuracy": 0.9})


def test_interval_widens_with_small_groups_and_small_validation():
    big = estimate_prevalence(54, 500, RATES)
    small = estimate_prevalence(11, 100, RATES)
    weak = estimate_prevalence(54, 500, ValidatedRates(tp=18, n_defect=20, fp=1, n_good=40))
    assert big.estimate == pytest.approx(rogan_gladen(54 / 500, 0.9, 0.02))
    assert big.low < big.estimate < big.high
    assert (small.high - small.low) > (big.high - big.low)
    assert (weak.high - weak.low) > (big.high - big.low)


def test_ninety_percent_interval_coverage_on_a_small_simulation():
    rng = np.random.default_rng(7)
    tpr, fpr, n_def, n_good = 0.9, 0.03, 150, 300
    covered, trials = 0, 200
    for trial in range(trials):
        truth = rng.uniform(0.02, 0.25)
        rates = ValidatedRates(
            tp=int(rng.binomial(n_def, tpr)),
            n_defect=n_def,
            fp=int(rng.binomial(n_good, fpr)),
            n_good=n_good,
        )
        bad = rng.binomial(500, truth)
        flagged = rng.binomial(bad, tpr) + rng.binomial(500 - bad, fpr)
        found = estimate_prevalence(int(flagged), 500, rates, 0.90, draws=2000, seed=trial)
        covered += found.low <= bad / 500 <= found.high
    assert 0.84 <= covered / trials <= 0.97


def test_subtype_correction_undoes_known_confusion():
    # classes good, bruise, rot; 20 % of bruises are called rot
    rates = ValidatedRates(
        tp=170,
        n_defect=200,
        fp=0,
        n_good=1000,
        class_names=("good", "bruise", "rot"),
        confusion_matrix=((1000, 0, 0), (10, 72, 18), (10, 0, 90)),
    )
    # truth in a delivery of 1000: 100 bruise, 50 rot -> expected predictions
    # bruise: 72 predicted bruise, 18 rot; rot: 45 rot
    result = estimate_subtypes({"bruise": 72, "rot": 63}, 1000, rates, draws=200)
    assert result["bruise"]["raw_rate"] == pytest.approx(0.072)
    assert result["bruise"]["estimate"] == pytest.approx(0.10, abs=0.005)
    assert result["rot"]["estimate"] == pytest.approx(0.05, abs=0.005)
    assert result["rot"]["low"] <= 0.05 <= result["rot"]["high"]
    with pytest.raises(DataError, match="not classes"):
        estimate_subtypes({"scab": 3}, 1000, rates)


def test_estimate_by_group_with_scores_and_days():
    frame = pd.DataFrame(
        {
            "delivery": ["a"] * 4 + ["b"] * 4,
            "timestamp": ["2026-11-01T08:00"] * 4 + ["2026-11-02T09:00"] * 4,
            "defect_score": [0.9, 0.1, 0.2, 0.3, 0.8, 0.7, 0.1, 0.6],
        }
    )
    rows = estimate_by_group(frame, "delivery", RATES)
    assert [(r["delivery"], r["flagged"], r["raw_rate"]) for r in rows] == [
        ("a", 1, 0.25),
        ("b", 3, 0.75),
    ]
    assert rows[0]["estimate"] == pytest.approx(rogan_gladen(0.25, 0.9, 0.02))
    days = estimate_by_group(frame, "day", None, threshold=0.5)
    assert [r["day"] for r in days] == ["2026-11-01", "2026-11-02"]
    assert "estimate" not in days[0]


def test_estimate_by_group_bad_input():
    frame = pd.DataFrame({"delivery": ["a"], "defect_score": [0.3]})
    with pytest.raises(DataError, match="no column 'supplier'"):
        estimate_by_group(frame, "supplier", RATES)
    with pytest.raises(ConfigError, match="no threshold"):
        estimate_by_group(frame, "delivery", None)
    with pytest.raises(DataError, match="flag column"):
        estimate_by_group(pd.DataFrame({"delivery": ["a"]}), "delivery", RATES)


def test_text_flags_count_only_flagged_words_and_refuse_unknown_ones():
    frame = pd.DataFrame(
        {"delivery": ["a"] * 5, "flagged": ["yes", "no", "Good", "DEFECT", None]}
    )
    rows = estimate_by_group(frame, "delivery", RATES)
    assert (rows[0]["flagged"], rows[0]["raw_rate"]) == (2, 0.4)
    frame.loc[1, "flagged"] = "maybe"
    with pytest.raises(DataError, match="'maybe'"):
        estimate_by_group(frame, "delivery", RATES)


def test_a_group_judged_by_two_models_sums_their_corrected_counts():
    weak = ValidatedRates(tp=70, n_defect=100, fp=2, n_good=100)
    one = estimate_prevalence_parts([(54, 500, RATES)], seed=3)
    assert one == estimate_prevalence(54, 500, RATES, seed=3)
    both = estimate_prevalence_parts([(11, 100, RATES), (9, 50, weak)])
    bad = rogan_gladen(11 / 100, 0.9, 0.02) * 100 + rogan_gladen(9 / 50, 0.7, 0.02) * 50
    assert (both.n, both.flagged, both.raw_rate) == (150, 20, 20 / 150)
    assert both.estimate == pytest.approx(bad / 150)
    assert both.low < both.estimate < both.high
    with pytest.raises(DataError, match="no images"):
        estimate_prevalence_parts([(0, 0, RATES)])
    with pytest.raises(DataError, match="no judged parts"):
        estimate_prevalence_parts([])


def test_split_groups_keep_ninety_percent_coverage_of_the_whole_group():
    rng = np.random.default_rng(11)
    covered, trials = 0, 150
    for trial in range(trials):
        parts, bad_total = [], 0
        for tpr, fpr, n in ((0.8, 0.01, 40), (0.9, 0.03, 110)):
            rates = ValidatedRates(
                tp=int(rng.binomial(120, tpr)), n_defect=120,
                fp=int(rng.binomial(180, fpr)), n_good=180,
            )
            bad = int(rng.binomial(n, 0.15))
            parts.append((int(rng.binomial(bad, tpr) + rng.binomial(n - bad, fpr)), n, rates))
            bad_total += bad
        found = estimate_prevalence_parts(parts, 0.90, draws=2000, seed=trial)
        covered += found.low <= bad_total / 150 <= found.high
    assert 0.84 <= covered / trials <= 0.97


CLASS_RATES = ValidatedRates(
    tp=140, n_defect=200, fp=4, n_good=400, class_names=("good", "bruise", "rot"),
    # bruises are missed half the time, rot almost never
    confusion_matrix=((396, 2, 2), (50, 45, 5), (10, 5, 85)),
)


def _called(rng: np.random.Generator, composition: list[int]) -> dict[str, int]:
    matrix = np.asarray(CLASS_RATES.confusion_matrix, dtype=np.float64)
    matrix /= matrix.sum(axis=1, keepdims=True)
    called = sum(rng.multinomial(c, row) for c, row in zip(composition, matrix))
    return {"bruise": int(called[1]), "rot": int(called[2])}


def test_class_correction_follows_the_delivery_subtype_mix():
    # 20 bad of 200 in both deliveries: all bruises (half missed) or all rot (one in ten missed)
    bruises = estimate_prevalence_classes([({"bruise": 10, "rot": 1}, 200, CLASS_RATES)], draws=300)
    rot = estimate_prevalence_classes([({"bruise": 1, "rot": 17}, 200, CLASS_RATES)], draws=300)
    pooled = [estimate_prevalence(f, 200, CLASS_RATES).estimate for f in (11, 18)]
    assert bruises.estimate == pytest.approx(0.10, abs=0.015)
    assert rot.estimate == pytest.approx(0.10, abs=0.015)
    assert pooled[0] < 0.085 and pooled[1] > 0.11  # one TPR misses both ways
    assert bruises.low < 0.10 < bruises.high and rot.low < 0.10 < rot.high


def test_class_correction_keeps_ninety_percent_coverage_for_mixed_deliveries():
    rng = np.random.default_rng(5)
    covered, trials = 0, 40
    for trial in range(trials):
        bad = int(rng.binomial(150, rng.uniform(0.03, 0.2)))
        split = rng.binomial(bad, rng.uniform())
        called = _called(rng, [150 - bad, split, bad - split])
        found = estimate_prevalence_classes([(called, 150, CLASS_RATES)], draws=200, seed=trial)
        covered += found.low <= bad / 150 <= found.high
    assert 0.8 <= covered / trials <= 1.0


def test_condition_spread_and_its_wider_interval():
    assert condition_spread([(45, 50), (44, 50), (46, 50)]) == 0.0  # chance alone
    assert condition_spread([(45, 50), (20, 50), (30, 50)]) > 0.5
    assert condition_spread([(3, 5)]) == 0.0
    parts = [({"bruise": 5, "rot": 5}, 150, CLASS_RATES)]
    narrow = estimate_prevalence_classes(parts, draws=300)
    wide = estimate_prevalence_classes(parts, spread=0.8, draws=300)
    assert wide.high - wide.low > narrow.high - narrow.low


def test_class_correction_bad_input():
    with pytest.raises(DataError, match="confusion matrix"):
        estimate_prevalence_classes([({"bruise": 1}, 10, RATES)])
    with pytest.raises(DataError, match="not defect classes"):
        estimate_prevalence_classes([({"scab": 1}, 10, CLASS_RATES)])
    with pytest.raises(DataError, match="more flagged"):
        estimate_prevalence_classes([({"rot": 11}, 10, CLASS_RATES)])
    with pytest.raises(DataError, match="no judged parts"):
        estimate_prevalence_classes([])
