"""Operating point at a false-reject budget, and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from visionline.errors import DataError
from visionline.evaluate import (
    choose_operating_point,
    conformal_threshold,
    fit_temperature,
    recall_at_false_reject_rate,
    softmax,
    threshold_for_false_reject_rate,
)


def test_threshold_keeps_false_rejects_within_budget():
    good = np.arange(1, 101) / 100.0  # 0.01 .. 1.00
    threshold = threshold_for_false_reject_rate(good, 0.02)
    assert threshold == pytest.approx(0.98)
    assert np.mean(good > threshold) == pytest.approx(0.02)
    recall, same = recall_at_false_reject_rate(
        np.concatenate([good, [0.5, 0.99, 1.5]]),
        np.r_[np.zeros(100), np.ones(3)].astype(bool),
        0.02,
    )
    assert same == threshold and recall == pytest.approx(2 / 3)


def test_conformal_threshold_uses_the_finite_sample_rank():
    good = np.arange(1, 101) / 100.0  # 0.01 .. 1.00
    # ceil(101 * 0.98) = 99: one calibration image above, not floor(0.02 * 100) = 2
    assert conformal_threshold(good, 0.02) == pytest.approx(0.99)
    # too few images for the rank: the largest score, nothing above it
    assert conformal_threshold(good[:40], 0.02) == pytest.approx(0.40)
    assert choose_operating_point(good, 0.02).threshold == pytest.approx(0.99)


def test_conformal_threshold_holds_its_budget_on_new_images_where_the_quantile_does_not():
    """Heavy-tailed good scores, 130 calibration goods per draw (the demo's calib split): the
    conformal threshold's false-reject rate on new goods averages within the 2% budget, the
    empirical quantile's above it."""
    rng = np.random.default_rng(0)
    conformal, empirical = [], []
    for _ in range(400):
        calib = rng.pareto(1.5, 130)
        conformal.append(np.mean(rng.pareto(1.5, 2000) > conformal_threshold(calib, 0.02)))
        empirical.append(
            np.mean(rng.pareto(1.5, 2000) > threshold_for_false_reject_rate(calib, 0.02))
        )
    assert np.mean(conformal) <= 0.02 < np.mean(empirical)


def test_operating_point_certifies_with_enough_good_images():
    rng = np.random.default_rng(0)
    point = choose_operating_point(rng.random(2000) * 0.5, 0.01)
    assert point.n_good == 2000
    assert point.false_rejects <= 20
    assert point.false_reject_upper_bound > point.false_reject_rate
    assert point.certified is False  # 20/2000 observed: the upper bound is above 1 %
    point = choose_operating_point(np.linspace(0, 0.4, 600), 0.01)
    assert point.warning is not None and "upper bound" in point.warning


def test_operating_point_warns_with_too_few_good_images():
    point = choose_operating_point(np.linspace(0, 1, 50), 0.01)
    assert not point.certified
    assert point.min_good_needed >= 295
    assert "Only 50 good validation images" in point.warning


def test_operating_point_without_good_images_is_a_data_error():
    with pytest.raises(DataError, match="no good images"):
        choose_operating_point(np.array([]), 0.01)


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 3000)
    true_logits = rng.normal(0, 1, (3000, 3))
    true_logits[np.arange(3000), labels] += 1.5
    # sample labels from the true model, then make the logits 3x overconfident
    probs = softmax(true_logits)
    sampled = np.array([rng.choice(3, p=p) for p in probs])
    temperature = fit_temperature(true_logits * 3.0, sampled)
    assert temperature == pytest.approx(3.0, rel=0.15)
