"""Prometheus metrics, one registry per server so several servers can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STEPS = ("queue", "preprocess", "inference", "postprocess")
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0
)


class ServerMetrics:
    """Request counts, per-step latency and batch sizes, all labelled by model and version."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "visionline_requests",
            "Inference requests by outcome.",
            ["model", "version", "protocol", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "visionline_request_duration_seconds",
            "End-to-end inference request latency inside the server.",
            ["model", "version", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.step_latency = Histogram(
            "visionline_step_duration_seconds",
            "Latency of one step of a request: queue, preprocess, inference, postprocess.",
            ["model", "version", "step"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "visionline_batch_size",
            "Rows per executed model batch (dynamic batching merges requests).",
            ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.queue_rows = Gauge(
            "visionline_queue_rows", "Rows waiting for the model.", ["model", "version"], registry=r
        )
        self.rejected = Counter(
            "visionline_rejected_requests",
            "Requests refused before inference, by reason.",
            ["reason"],
            registry=r,
        )
        self.model_loads = Counter(
            "visionline_model_loads",
            "Model version loads by outcome.",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.hook_failures = Counter(
            "visionline_prediction_hook_failures", "Prediction-log hook calls that raised.", registry=r
        )
        self.hook_dropped = Counter(
            "visionline_prediction_hook_dropped",
            "Prediction records dropped because the hook queue was full.",
            registry=r,
        )
        self.routed = Counter(
            "visionline_routed_requests",
            "Requests by route: primary, canary or shadow.",
            ["model", "version", "route"],
            registry=r,
        )
