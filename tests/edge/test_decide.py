"""Verdicts: the bundle's own scores and threshold; a missed deadline, a corrupt frame or a
failing model takes the configured fail-safe instead of stopping the line."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from edge_agent_support import signed_bundle
from edge_support import png

from visionline.edge import Decider, FailSafe, Frame
from visionline_edge import load_bundle


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    bundle, store = signed_bundle(tmp_path_factory.mktemp("decide"))
    return load_bundle(bundle, trust_store=store, require_signature=True)


class SlowModel:
    """The bundle's model, `delay_s` slower (a stalled inference)."""

    def __init__(self, model: Any, delay_s: float) -> None:
        self._model, self.delay_s = model, delay_s
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict_array(self, batch: np.ndarray) -> Any:
        self.calls += 1
        time.sleep(self.delay_s)
        return self._model.predict_array(batch)


def test_verdicts_are_the_bundles_scores_at_its_threshold(model: Any) -> None:
    decider = Decider(model, deadline_ms=5000)
    images = [png((230, 230, 230)), png((15, 15, 15)), png((120, 110, 100))]
    expected = model.predict(images)
    decisions = [decider.decide(Frame(f"item-{i}", time.time(), data=b))
                 for i, b in enumerate(images)]
    decider.close()
    scores = [d.verdict.score for d in decisions]
    assert scores == pytest.approx(expected.defect_scores.tolist(), abs=1e-6)
    assert [d.verdict.reject for d in decisions] == expected.flagged.tolist()
    assert [d.verdict.label for d in decisions] == expected.decisions
    assert {d.verdict.reject for d in decisions} == {True, False}
    assert not any(d.verdict.fail_safe for d in decisions)
    record = decisions[1].record
    assert record["request_id"] == "item-1" and record["route"] == "edge"
    assert record["probabilities"]["good"] == pytest.approx(1 - scores[1], abs=1e-5)
    assert record["threshold"] == model.threshold and len(record["quality"]) == 4
    assert decisions[0].verdict.model_version == "apples:1"


def test_decoded_arrays_match_encoded_images(model: Any) -> None:
    decider = Decider(model, deadline_ms=5000)
    pixels = np.full((40, 40, 3), 60, np.uint8)
    verdict = decider.decide(Frame("a", time.time(), array=pixels)).verdict
    decider.close()
    assert verdict.score == pytest.approx(float(model.predict([png((60, 60, 60))]).defect_scores[0]),
                                          abs=1e-6)


@pytest.mark.parametrize(("fail_safe", "reject"), [(FailSafe.reject, True), (FailSafe.pass_, False)])
def test_corrupt_frame_takes_the_fail_safe(model: Any, fail_safe: FailSafe, reject: bool) -> None:
    decider = Decider(model, deadline_ms=5000, fail_safe=fail_safe)
    decision = decider.decide(Frame("broken", time.time(), data=png((9, 9, 9))[:30]))
    good = decider.decide(Frame("next", time.time(), data=png((230, 230, 230))))
    decider.close()
    verdict = decision.verdict
    assert verdict.fail_safe and verdict.reason == "corrupt" and verdict.reject is reject
    assert math.isnan(verdict.score) and decision.record["route"] == "fail_safe"
    assert not good.verdict.fail_safe  # the line goes on


def test_a_stalled_model_misses_the_deadline_and_takes_the_fail_safe(model: Any) -> None:
    decider = Decider(SlowModel(model, 0.5), deadline_ms=50, fail_safe=FailSafe.reject)
    start = time.time()
    verdict = decider.decide(Frame("slow", start, data=png((230, 230, 230)))).verdict
    decider.close()
    assert verdict.fail_safe and verdict.reason == "deadline" and verdict.reject
    assert verdict.decided_at - start < 0.5  # the fail-safe came before the model answered


def test_a_frame_that_arrives_after_its_deadline_is_not_run(model: Any) -> None:
    decider = Decider(model, deadline_ms=20, fail_safe=FailSafe.pass_)
    verdict = decider.decide(Frame("late", time.time() - 1.0, data=png((1, 1, 1)))).verdict
    decider.close()
    assert verdict.fail_safe and verdict.reason == "deadline" and not verdict.reject


def test_items_queued_behind_a_stall_are_not_run_late(model: Any) -> None:
    slow = SlowModel(model, 0.4)
    decider = Decider(slow, deadline_ms=50)
    verdicts = [decider.decide(Frame(f"i{i}", time.time(), data=png((230, 230, 230)))).verdict
                for i in range(3)]
    time.sleep(0.5)
    decider.close()
    assert [v.reason for v in verdicts] == ["deadline"] * 3
    assert slow.calls == 1  # the two items behind the stalled one were dropped, not run late


def test_warm_up_runs_the_model_before_the_first_item(model: Any) -> None:
    slow = SlowModel(model, 0.0)
    decider = Decider(slow, deadline_ms=5000)
    decider.warm_up()
    assert slow.calls == 3
    assert not decider.decide(Frame("first", time.time(), data=png((9, 9, 9)))).verdict.fail_safe
    decider.close()
