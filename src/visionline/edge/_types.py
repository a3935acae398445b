"""The two things every part of the line agent agrees on: a verdict and where it is signalled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    """One item's decision on the line, as the PLC, MQTT and the outbox see it.

    ``reject`` is what the ejector must do; ``fail_safe`` marks a verdict that was not decided by
    the model in time (deadline missed, corrupt frame) and took the plant's configured fail-safe.
    """

    item_id: str
    reject: bool
    score: float
    label: str
    model_version: str
    captured_at: float
    decided_at: float
    fail_safe: bool = False
    reason: str = ""


class SignalSink(Protocol):
    """Where reject signals go (a PLC over OPC UA or Modbus TCP, an MQTT broker).

    ``send`` must not block the line for longer than the sink's own timeout; a sink that cannot
    reach its peer raises :class:`visionline.errors.VisionlineError` with a sentence naming the fix.
    """

    def send(self, verdict: Verdict) -> None: ...

    def close(self) -> None: ...
