"""Actions on an alarm: registered callbacks (the retraining trigger), webhooks, Prometheus gauges.

Callbacks registered with `on_alarm` (or advertised under the entry-point group
`visionline.on_alarm`) run for every alarm; one that fails is logged and never stops the others
or the monitor. Webhooks POST the alarm JSON with bounded retries and backoff, and report
failure instead of raising when the target is down.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visionline.monitor._drift import Alarm

log = logging.getLogger("visionline.monitor")

ENTRY_POINT_GROUP = "visionline.on_alarm"
AlarmCallback = Callable[["Alarm"], None]
_registry: list[AlarmCallback] = []


def on_alarm(callback: AlarmCallback) -> AlarmCallback:
    """Register `callback(alarm)` for every alarm (usable as a decorator); returns it."""
    if callback not in _registry:
        _registry.append(callback)
    return callback


def remove_alarm_callback(callback: AlarmCallback) -> None:
    if callback in _registry:
        _registry.remove(callback)


def registered_callbacks() -> list[AlarmCallback]:
    """Registered callbacks followed by those installed under the `visionline.on_alarm` entry points."""
    found = list(_registry)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append(entry.load())
        except Exception:
            log.exception("could not load alarm callback entry point %s", entry.name)
    return found


def fire(alarm: Alarm, extra: Iterable[AlarmCallback] = ()) -> int:
    """Run every callback for `alarm`; returns how many succeeded (failures are logged)."""
    ok = 0
    for callback in [*extra, *registered_callbacks()]:
        try:
            callback(alarm)
            ok += 1
        except Exception:
            log.exception("alarm callback %r failed; the monitor carries on", callback)
    return ok


@dataclass(frozen=True)
class WebhookResult:
    """How a webhook delivery went."""

    delivered: bool
    attempts: int
    status: int | None
    error: str | None


def post_webhook(
    url: str,
    payload: dict[str, Any],
    *,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 5.0,
) -> WebhookResult:
    """POST `payload` as JSON; retry connection errors and 5xx with exponential backoff."""
    body = json.dumps(payload, default=str).encode()
    status: int | None = None
    error: str | None = None
    for attempt in range(1, retries + 2):
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return WebhookResult(True, attempt, response.status, None)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
            if exc.code < 500:
                break
        except (urllib.error.URLError, OSError, ValueError) as exc:
            status, error = None, str(getattr(exc, "reason", exc))
        if attempt <= retries:
            time.sleep(backoff * 2 ** (attempt - 1))
    log.warning("webhook %s not delivered after %d attempts: %s", url, attempt, error)
    return WebhookResult(False, attempt, status, error)


def webhook_callback(url: str, **options: Any) -> AlarmCallback:
    """An alarm callback that posts the alarm JSON to `url`."""

    def send(alarm: Alarm) -> None:
        post_webhook(url, {"type": "visionline.drift_alarm", "alarm": alarm.to_dict()}, **options)

    return send


class MonitorMetrics:
    """Prometheus gauges for drift statistics and estimated performance (own registry)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry()
        labels = ["model", "version", "detector"]
        self.p_value = Gauge(
            "visionline_drift_p_value",
            "Latest window p-value per detector.",
            labels,
            registry=self.registry,
        )
        self.statistic = Gauge(
            "visionline_drift_statistic",
            "Latest window test statistic per detector.",
            labels,
            registry=self.registry,
        )
        self.drifted = Gauge(
            "visionline_drift_detected",
            "1 when the detector drifted in the latest window.",
            labels,
            registry=self.registry,
        )
        self.alarms = Gauge(
            "visionline_drift_alarms",
            "Alarms recorded.",
            ["model", "version"],
            registry=self.registry,
        )
        perf = ["model", "version"]
        self.expected_accuracy = Gauge(
            "visionline_estimated_accuracy", "CBPE expected accuracy.", perf, registry=self.registry
        )
        self.expected_frr = Gauge(
            "visionline_estimated_false_reject_rate",
            "CBPE expected false-reject rate.",
            perf,
            registry=self.registry,
        )
        self.flag_rate = Gauge(
            "visionline_flag_rate", "Share of images flagged.", perf, registry=self.registry
        )
        self.predictions = Gauge(
            "visionline_logged_predictions", "Predictions in the log.", perf, registry=self.registry
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
