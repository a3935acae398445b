"""`evaluate_model`: resolve a model, run it on a dataset version, choose the threshold on the
calibration split (the validation split when the version has none, and the report says so),
measure the test split, check the gates, write and log the report."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.errors import DataError
from visionline.evaluate._gates import Gate, GateReport, check_gates
from visionline.evaluate._metrics import compute_metrics
from visionline.evaluate._operating import OperatingPoint, choose_operating_point, fit_temperature
from visionline.evaluate._predict import Predictions, predict_records

if TYPE_CHECKING:
    from visionline.config import Project
    from visionline.data import DatasetVersion
    from visionline.registry._resolve import ModelRef

VALIDATION_SPLIT = "val"
CALIBRATION_SPLIT = "calib"
WORST_SHOWN = 12


@dataclass
class EvalResult:
    """One evaluation: the metrics dict (= metrics.json), its parts, and where it was written."""

    metrics: dict[str, Any]
    operating_point: OperatingPoint
    gates: GateReport
    temperature: float
    test: Predictions
    report_path: Path | None = None
    metrics_path: Path | None = None
    calibrated_model_path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def correct(self) -> np.ndarray:
        """Per test image: is the good/defect decision right? (McNemar input)."""
        flagged = self.test.defect_scores(self.temperature) > self.operating_point.threshold
        return flagged == (self.test.labels != 0)


def jsonable(value: Any) -> Any:
    """NaN/inf → None and numpy scalars → Python, so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def split_records(version: DatasetVersion, split: str) -> list:
    """A split's records, or a DataError that lists the splits the version has."""
    records = version.split_records(split)
    if not records:
        present = sorted({r.split for r in version.records if r.split})
        raise DataError(
            f"Dataset version {version.short_id} has no images in split {split!r} "
            f"(it has: {', '.join(present) or 'no splits'}); split it first or pick another split."
        )
    return records


def threshold_split(version: DatasetVersion) -> str:
    """The split that sets the decision threshold: `calib` when the version has one, else `val`.

    Val already picked the early-stopping epoch and the tuned settings; a threshold set on it too
    certifies a false-reject rate that those choices flatter.
    """
    return CALIBRATION_SPLIT if version.split_records(CALIBRATION_SPLIT) else VALIDATION_SPLIT


VAL_THRESHOLD_WARNING = (
    "The threshold was set on the val split, which also chose the epoch; split with a calib "
    "fraction ('visionline data split --calib 0.15') for an honest false-reject rate."
)


def evaluate_predictions(
    validation: Predictions,
    test: Predictions,
    project: Project,
    temperature: float = 1.0,
    calibrate: bool = False,
    extra_gates: Iterable[Gate] = (),
    bootstrap: int = 1000,
) -> EvalResult:
    """Threshold on the good scores of `validation` (the calib or val split), metrics and gates
    on the test predictions."""
    goals = project.config.goals
    if calibrate:
        temperature = fit_temperature(validation.logits, validation.labels)
    val_scores = validation.defect_scores(temperature)
    operating = choose_operating_point(
        val_scores[validation.labels == 0], goals.operating_false_reject_rate
    )
    metrics = compute_metrics(
        test.probabilities(temperature),
        test.labels,
        test.class_names,
        operating.threshold,
        bootstrap,
    )
    gates = check_gates(metrics, goals, extra_gates)
    metrics.update(
        temperature=temperature,
        calibrated=calibrate,
        operating_point=operating.to_dict(),
        gates=gates.to_dict(),
    )
    warnings = [operating.warning] if operating.warning else []
    return EvalResult(metrics, operating, gates, temperature, test, warnings=warnings)


def _worst(result: EvalResult, blobs: Any) -> list[tuple[Any, str]]:
    from visionline.preprocessing import decode_image

    scores = result.test.defect_scores(result.temperature)
    is_defect = result.test.labels != 0
    threshold = result.operating_point.threshold
    wrong = np.flatnonzero((scores > threshold) != is_defect)
    margin = np.abs(scores[wrong] - threshold)
    chosen = wrong[np.argsort(-margin)][:WORST_SHOWN]
    names = result.test.class_names
    worst = []
    for index in chosen:
        record = result.test.records[index]
        caption = f"{names[result.test.labels[index]]} · score {scores[index]:.3f} · {Path(record.path).name}"
        worst.append((decode_image(blobs.get(record.sha256)), caption))
    return worst


def _log_to_mlflow(result: EvalResult, ref: ModelRef, tracking_uri: str, split: str) -> None:
    metrics = result.metrics
    logged = {
        f"{split}_{key}": float(metrics[key])
        for key in (
            "false_reject_rate",
            "escape_rate",
            "defect_recall",
            "accuracy",
            "roc_auc",
            "pr_auc",
            "ece",
        )
        if metrics[key] is not None and math.isfinite(metrics[key])
    }
    log_evaluation(
        ref,
        tracking_uri,
        logged,
        result.operating_point.threshold,
        result.gates,
        (result.report_path, result.metrics_path, result.calibrated_model_path),
    )


def log_evaluation(
    ref: ModelRef,
    tracking_uri: str,
    logged: dict[str, float],
    threshold: float,
    gates: GateReport,
    artifacts: Sequence[Path | None],
) -> None:
    """Record an evaluation on the model's MLflow run and, if registered, on its model version.

    One place for both kinds of model (classifier, anomaly detector), so `models show`, `promote`
    and the gates read the same tags whichever produced them.
    """
    from visionline.registry._resolve import client

    mlflow_client = client(tracking_uri)
    for key, value in logged.items():
        mlflow_client.log_metric(ref.run_id, key, value)
    mlflow_client.log_metric(ref.run_id, "threshold", threshold)
    mlflow_client.log_metric(ref.run_id, "gate_passed", float(gates.passed))
    for key, value in gates.as_tags().items():
        mlflow_client.set_tag(ref.run_id, key, value[:5000])
    for path in artifacts:
        if path is not None:
            mlflow_client.log_artifact(ref.run_id, str(path), artifact_path="eval")
    if ref.name and ref.version:
        for key, value in gates.as_tags().items():
            mlflow_client.set_model_version_tag(ref.name, ref.version, key, value[:5000])
        mlflow_client.set_model_version_tag(ref.name, ref.version, "threshold", f"{threshold:.6f}")
        for key, value in logged.items():
            mlflow_client.set_model_version_tag(
                ref.name, ref.version, f"metric.{key}", f"{value:.4g}"
            )


def evaluate_model(
    project: Project,
    model_uri: str,
    dataset: str,
    split: str = "test",
    calibrate: bool = False,
    output_dir: Path | None = None,
    extra_gates: Iterable[Gate] = (),
    bootstrap: int = 1000,
    batch_size: int = 64,
    log: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Evaluate `model_uri` on `dataset`'s `split`, with the threshold set on its `calib` split
    (its `val` split when it has no calib split; the metrics and warnings say which).

    Writes report.html and metrics.json to `output_dir` (default: reports/eval-<model>-<data>-<split>)
    and, when the model came from an MLflow run, logs both plus gate tags to that run.
    """
    from visionline.data import DatasetRepo

    repo = DatasetRepo(project)  # the data first: a wrong version or split fails before torch
    version = repo.get(dataset)
    test_records = split_records(version, split)
    chosen = threshold_split(version)
    val_records = split_records(version, chosen)

    from visionline.registry._resolve import resolve_model
    from visionline.train import load_model, save_model

    ref = resolve_model(model_uri, project.tracking_uri)
    model, spec = load_model(ref.path)
    validation = predict_records(model, spec, val_records, repo.blobs, batch_size, progress)
    test = predict_records(model, spec, test_records, repo.blobs, batch_size, progress)
    result = evaluate_predictions(
        validation, test, project, spec.temperature, calibrate, extra_gates, bootstrap
    )
    if split == chosen:
        result.warnings.append(
            "The threshold was set on the same split it is measured on; evaluate on 'test' for honest numbers."
        )
    elif chosen == VALIDATION_SPLIT:
        result.warnings.append(VAL_THRESHOLD_WARNING)
    model_tag = (f"{ref.name}-v{ref.version}" if ref.name else ref.run_id) or ref.path.stem
    output_dir = output_dir or project.reports_dir / f"eval-{model_tag}-{version.short_id}-{split}"
    output_dir.mkdir(parents=True, exist_ok=True)
    result.metrics.update(
        model_uri=model_uri,
        run_id=ref.run_id,
        registered_model=ref.name,
        model_version=ref.version,
        dataset_version=version.id,
        split=split,
        threshold_split=chosen,
        preprocessing=spec.preprocessing.to_dict(),
        warnings=result.warnings,
    )
    if calibrate:
        spec.temperature = result.temperature
        result.calibrated_model_path = save_model(output_dir / "model.calibrated.pt", model, spec)
    result.metrics_path = output_dir / "metrics.json"
    result.metrics_path.write_text(json.dumps(jsonable(result.metrics), indent=2))
    result.report_path = output_dir / "report.html"
    from visionline.evaluate._report import write_report

    write_report(
        result.report_path,
        metrics=result.metrics,
        scores=test.defect_scores(result.temperature),
        labels=test.labels,
        worst=_worst(result, repo.blobs),
        title=f"Evaluation of {model_uri}",
        meta={
            "dataset": version.short_id,
            "split": split,
            "threshold set on": f"{chosen} split",
            "run": ref.run_id or "-",
            "temperature": f"{result.temperature:.3f}",
        },
    )
    if log and ref.run_id:
        _log_to_mlflow(result, ref, project.tracking_uri, split)
    return result
