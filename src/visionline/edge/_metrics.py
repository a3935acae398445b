"""Prometheus metrics of the line agent, in their own registry (several agents per process in
tests, and no clash with the server's metrics)."""

from __future__ import annotations

from typing import Any

__all__ = ["AgentMetrics"]


class AgentMetrics:
    """Frames, verdicts, fail-safes, deadline misses, latencies, outbox backlog, sync lag, alarms
    and roll-out events."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("visionline_edge_frames", "Frames received from the source.",
                              registry=r)
        self.verdicts = Counter("visionline_edge_verdicts", "Verdicts by outcome.", ["outcome"],
                                registry=r)
        self.fail_safe = Counter("visionline_edge_fail_safe", "Fail-safe verdicts by reason.",
                                 ["reason"], registry=r)
        self.deadline_misses = Counter("visionline_edge_deadline_misses",
                                       "Verdicts that missed the item deadline.", registry=r)
        self.sink_errors = Counter("visionline_edge_sink_errors",
                                   "Reject signals the sink could not deliver.", registry=r)
        buckets = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
        self.decision_latency = Histogram("visionline_edge_decision_seconds",
                                          "Frame capture to verdict.", buckets=buckets, registry=r)
        self.signal_latency = Histogram("visionline_edge_signal_seconds",
                                        "Frame capture to reject signal written.", buckets=buckets,
                                        registry=r)
        self.sink_latency = Histogram("visionline_edge_sink_write_seconds",
                                      "Time of one PLC/MQTT write.", buckets=buckets, registry=r)
        self.backlog = Gauge("visionline_edge_outbox_backlog",
                             "Verdicts waiting for the central log's acknowledgement.", registry=r)
        self.sync_lag = Gauge("visionline_edge_sync_lag_seconds",
                              "Age of the oldest unacknowledged verdict.", registry=r)
        self.camera_alarm = Gauge("visionline_edge_camera_alarm",
                                  "1 while the camera has sent no frame within its timeout.",
                                  registry=r)
        self.plc_backlog = Gauge("visionline_edge_plc_backlog",
                                 "Reject signals buffered while the PLC does not answer.", registry=r)
        self.plc_alarm = Gauge("visionline_edge_plc_alarm", "1 while the PLC does not answer.",
                               registry=r)
        self.rollout_events = Counter("visionline_edge_rollout_events",
                                      "Roll-out events by kind (refused, shadowing, switched, "
                                      "kept, rejected, rolled_back).", ["kind"], registry=r)
        self.item_tag_errors = Gauge("visionline_edge_item_tag_errors",
                                     "Frames that kept their source id because the PLC's trigger "
                                     "tag could not be read.", registry=r)
        self.images_disabled = Gauge("visionline_edge_image_store_disabled",
                                     "1 when image storage stopped (disk full).", registry=r)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Expose /metrics on `port`."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
