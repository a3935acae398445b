"""Anomaly detection from good images only: a PatchCore-style memory bank of patch features from
a frozen, offline-pretrained backbone, with anomaly maps and pixel metrics.

`fit_detector` / `score_images` work on decoded images; `fit_anomaly` / `evaluate_anomaly` take a
dataset version through the lifecycle (threshold at the false-reject budget, MLflow, registry).
"""

from visionline.anomaly._config import AnomalyConfig, load_anomaly_config
from visionline.anomaly._coreset import greedy_coreset
from visionline.anomaly._evaluate import (
    AnomalyEvalResult,
    evaluate_anomaly,
    pixel_metrics,
    pixel_metrics_from_masks,
)
from visionline.anomaly._features import PatchFeatures, build_features, check_image_size
from visionline.anomaly._fit import FitStats, fit_detector, preprocessing_for, score_images
from visionline.anomaly._metrics import anomaly_metrics
from visionline.anomaly._model import (
    AnomalySpec,
    PatchCore,
    is_anomaly_checkpoint,
    load_anomaly_model,
    save_anomaly_model,
)
from visionline.anomaly._onnx import (
    check_anomaly_parity,
    export_anomaly_onnx,
    onnx_anomaly_predict,
    quantize_anomaly_onnx,
)
from visionline.anomaly._pixel import aupro, pixel_auroc
from visionline.anomaly._run import AnomalyFitResult, fit_anomaly

__all__ = [
    "AnomalyConfig",
    "AnomalyEvalResult",
    "AnomalyFitResult",
    "AnomalySpec",
    "FitStats",
    "PatchCore",
    "PatchFeatures",
    "anomaly_metrics",
    "aupro",
    "build_features",
    "check_anomaly_parity",
    "check_image_size",
    "evaluate_anomaly",
    "export_anomaly_onnx",
    "fit_anomaly",
    "fit_detector",
    "greedy_coreset",
    "is_anomaly_checkpoint",
    "load_anomaly_config",
    "load_anomaly_model",
    "onnx_anomaly_predict",
    "pixel_auroc",
    "pixel_metrics",
    "pixel_metrics_from_masks",
    "preprocessing_for",
    "quantize_anomaly_onnx",
    "save_anomaly_model",
    "score_images",
]
