"""Monitoring: prediction log, drift detection, feedback, per-delivery rates, alerts, dashboard.

`PredictionLogger` is the server's hook; `DriftMonitor` tests windows of predictions against a
bundle's `Reference`; `check_drift`, `realised_performance`, `estimate_performance` and
`estimate_deliveries` read the log; `create_app` serves the dashboard.
"""

from visionline.monitor._adapter import (
    LoggedPrediction,
    Reference,
    from_edge_prediction,
    from_serve_records,
    image_quality,
    validated_rates,
)
from visionline.monitor._alerts import (
    MonitorMetrics,
    WebhookResult,
    on_alarm,
    post_webhook,
    remove_alarm_callback,
    webhook_callback,
)
from visionline.monitor._analysis import (
    CBPE_ASSUMPTIONS,
    FeedbackImport,
    PerformanceEstimate,
    check_drift,
    estimate_deliveries,
    estimate_from_log,
    estimate_performance,
    import_feedback,
    parse_verdict,
    realised_performance,
    record_feedback,
)
from visionline.monitor._db import MonitorDB
from visionline.monitor._drift import (
    Alarm,
    Detector,
    DriftConfig,
    DriftMonitor,
    TestResult,
    WindowResult,
    chi2_classes,
    diagnose_quality,
    holm,
    ks_scores,
    mmd_permutation,
    quality_tests,
)
from visionline.monitor._logger import LoggerStats, PredictionLogger

__all__ = [
    "CBPE_ASSUMPTIONS",
    "Alarm",
    "Detector",
    "DriftConfig",
    "DriftMonitor",
    "FeedbackImport",
    "LoggedPrediction",
    "LoggerStats",
    "MonitorDB",
    "MonitorMetrics",
    "PerformanceEstimate",
    "PredictionLogger",
    "Reference",
    "TestResult",
    "WebhookResult",
    "WindowResult",
    "check_drift",
    "chi2_classes",
    "diagnose_quality",
    "estimate_deliveries",
    "estimate_from_log",
    "estimate_performance",
    "from_edge_prediction",
    "from_serve_records",
    "holm",
    "image_quality",
    "import_feedback",
    "ks_scores",
    "mmd_permutation",
    "on_alarm",
    "parse_verdict",
    "post_webhook",
    "quality_tests",
    "realised_performance",
    "record_feedback",
    "remove_alarm_callback",
    "validated_rates",
    "webhook_callback",
]
