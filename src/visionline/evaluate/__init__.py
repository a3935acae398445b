"""Evaluation: metrics, thresholds at a false-reject budget, gates, reports, defect rates.

Pure functions on arrays (`compute_metrics`, `choose_operating_point`, `check_gates`,
`estimate_prevalence`, ...) are separate from the model-running part (`predict_records`,
`evaluate_model`), so production logs can be scored without a model.
"""

from visionline.evaluate._estimate import (
    Estimate,
    ValidatedRates,
    condition_spread,
    estimate_by_group,
    estimate_prevalence,
    estimate_prevalence_classes,
    estimate_prevalence_parts,
    estimate_subtypes,
    load_predictions,
    rogan_gladen,
)
from visionline.evaluate._evaluate import (
    EvalResult,
    evaluate_model,
    evaluate_predictions,
    jsonable,
    log_evaluation,
    split_records,
    threshold_split,
)
from visionline.evaluate._gates import Gate, GateReport, check_gates
from visionline.evaluate._metrics import (
    bootstrap_ci,
    clopper_pearson,
    clopper_pearson_upper,
    compute_metrics,
    confusion,
    defect_decision,
    escape_rate,
    false_reject_rate,
    mcnemar,
    min_good_to_certify,
    per_class_report,
    pr_auc,
    reliability,
    roc_auc,
    subtype_recall,
)
from visionline.evaluate._operating import (
    OperatingPoint,
    choose_operating_point,
    fit_temperature,
    softmax,
)
from visionline.evaluate._predict import Predictions, predict_records
from visionline.evaluate._report import render_report, write_report
from visionline.evaluate._threshold import (
    conformal_threshold,
    recall_at_false_reject_rate,
    threshold_for_false_reject_rate,
)

__all__ = [
    "Estimate",
    "EvalResult",
    "Gate",
    "GateReport",
    "OperatingPoint",
    "Predictions",
    "ValidatedRates",
    "bootstrap_ci",
    "check_gates",
    "choose_operating_point",
    "clopper_pearson",
    "clopper_pearson_upper",
    "compute_metrics",
    "condition_spread",
    "conformal_threshold",
    "confusion",
    "defect_decision",
    "escape_rate",
    "estimate_by_group",
    "estimate_prevalence",
    "estimate_prevalence_classes",
    "estimate_prevalence_parts",
    "estimate_subtypes",
    "evaluate_model",
    "evaluate_predictions",
    "false_reject_rate",
    "fit_temperature",
    "jsonable",
    "load_predictions",
    "log_evaluation",
    "mcnemar",
    "min_good_to_certify",
    "per_class_report",
    "pr_auc",
    "predict_records",
    "recall_at_false_reject_rate",
    "reliability",
    "render_report",
    "roc_auc",
    "rogan_gladen",
    "softmax",
    "split_records",
    "subtype_recall",
    "threshold_for_false_reject_rate",
    "threshold_split",
    "write_report",
]
