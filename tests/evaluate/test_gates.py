"""Quality gates pass/fail with reasons, and the extensible gate table."""

from __future__ import annotations

from visionline.config import Goals
from visionline.evaluate import Gate, check_gates

GOOD_METRICS = {
    "false_reject_rate": 0.01,
    "defect_recall": 0.95,
    "subtype_recall": {"rot": 0.99, "bruise": 0.9},
}


def test_gates_pass_when_goals_are_met():
    report = check_gates(GOOD_METRICS, Goals(max_false_reject_rate=0.02, min_defect_recall=0.9))
    assert report.passed
    assert [g.name for g in report.gates] == ["false_reject_rate", "defect_recall"]
    assert report.summary() == "All 2 quality gates passed."
    assert report.as_tags()["gate.passed"] == "true"


def test_gates_fail_with_a_reason_per_failure():
    goals = Goals(
        max_false_reject_rate=0.005, min_defect_recall=0.9, min_subtype_recall={"bruise": 0.95}
    )
    report = check_gates(GOOD_METRICS, goals)
    assert not report.passed
    assert [g.name for g in report.failures] == ["false_reject_rate", "recall_bruise"]
    assert "false_reject_rate 1.00% is above the maximum 0.50%" in report.summary()
    assert "recall_bruise 90.00% is below the minimum 95.00%" in report.summary()
    tags = report.as_tags()
    assert tags["gate.passed"] == "false"
    assert tags["gate.defect_recall"] == "pass"
    assert tags["gate.recall_bruise"].startswith("fail:")


def test_unmeasurable_subtype_fails_and_extra_gates_are_checked():
    goals = Goals(min_subtype_recall={"scab": 0.8})
    latency = Gate("edge_p95_latency_ms", 25.0, goals.edge_p95_latency_ms, "max", " ms")
    report = check_gates(GOOD_METRICS, goals, extra=[latency])
    failures = {g.name: g.reason for g in report.failures}
    assert "could not be measured" in failures["recall_scab"]
    assert failures["edge_p95_latency_ms"] == "edge_p95_latency_ms 25 ms is above the maximum 20 ms"
    assert report.to_dict()["gates"][-1]["passed"] is False
