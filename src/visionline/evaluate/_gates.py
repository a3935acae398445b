"""Quality gates: the project's goals checked against measured values, with a reason per failure.

The table is open-ended: later stages (export's latency benchmark) add `Gate`s for their own
measurements through `extra`, and the same pass/fail logic and storage apply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from visionline.config import Goals


@dataclass(frozen=True)
class Gate:
    """One check: `value` must be at most (`max`) or at least (`min`) `limit`."""

    name: str
    value: float
    limit: float
    direction: str  # "max" or "min"
    unit: str = ""

    @property
    def passed(self) -> bool:
        if not math.isfinite(self.value):
            return False
        return self.value <= self.limit if self.direction == "max" else self.value >= self.limit

    @property
    def reason(self) -> str:
        if self.passed:
            return ""
        if not math.isfinite(self.value):
            return f"{self.name} could not be measured (no images of that kind in the test split)"
        relation = "above the maximum" if self.direction == "max" else "below the minimum"
        return (
            f"{self.name} {_fmt(self.value, self.unit)} is {relation} {_fmt(self.limit, self.unit)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "reason": self.reason}


def _fmt(value: float, unit: str) -> str:
    return f"{value:.2%}" if unit == "%" else f"{value:.3g}{unit}"


@dataclass(frozen=True)
class GateReport:
    """All gates of one evaluation."""

    gates: list[Gate]

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def failures(self) -> list[Gate]:
        return [gate for gate in self.gates if not gate.passed]

    def summary(self) -> str:
        """One sentence: what failed and why, or that all passed."""
        if self.passed:
            return f"All {len(self.gates)} quality gates passed."
        reasons = "; ".join(gate.reason for gate in self.failures)
        return f"Quality gates failed: {reasons}; improve the model or revisit the goals."

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "gates": [gate.to_dict() for gate in self.gates]}

    def as_tags(self) -> dict[str, str]:
        """Flat string tags for an MLflow run or model version."""
        tags = {"gate.passed": str(self.passed).lower()}
        for gate in self.gates:
            tags[f"gate.{gate.name}"] = "pass" if gate.passed else f"fail: {gate.reason}"
        return tags


def check_gates(metrics: dict[str, Any], goals: Goals, extra: Iterable[Gate] = ()) -> GateReport:
    """Gates from the project goals on the test metrics, plus any extra measured gates."""
    gates = [
        Gate(
            "false_reject_rate",
            metrics["false_reject_rate"],
            goals.max_false_reject_rate,
            "max",
            "%",
        ),
        Gate("defect_recall", metrics["defect_recall"], goals.min_defect_recall, "min", "%"),
    ]
    recalls = metrics.get("subtype_recall", {})
    for subtype, limit in goals.min_subtype_recall.items():
        value = recalls.get(subtype, float("nan"))
        gates.append(Gate(f"recall_{subtype}", value, limit, "min", "%"))
    gates.extend(extra)
    return GateReport(gates)
