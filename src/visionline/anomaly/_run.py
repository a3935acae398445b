"""`fit_anomaly`: fit a detector on a dataset version's good training images, set its threshold
on the validation good images at the project's false-reject budget (the supervised model's
`choose_operating_point`), and track it in MLflow like a training run: dataset input with digest,
params, metrics, artifacts and a logged model that the registry can register."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.anomaly._config import AnomalyConfig
from visionline.anomaly._fit import FitStats, fit_detector, score_images
from visionline.anomaly._metrics import anomaly_metrics
from visionline.anomaly._model import AnomalySpec, PatchCore, save_anomaly_model
from visionline.anomaly._records import good_training_records, images
from visionline.errors import DataError
from visionline.evaluate import split_records

if TYPE_CHECKING:
    from visionline.config import Project
    from visionline.data import ImageRecord
    from visionline.evaluate import OperatingPoint

MODEL_FILE = "model.pt"
KIND_TAG = "visionline.model_kind"


@dataclass
class AnomalyFitResult:
    """What `fit_anomaly` produced."""

    run_id: str | None
    model_path: Path
    out_dir: Path
    spec: AnomalySpec
    stats: FitStats
    operating_point: OperatingPoint
    val_metrics: dict[str, Any]


def class_indices(records: Sequence[ImageRecord], class_names: list[str]) -> np.ndarray:
    """Each record's class index in `class_names` (good = 0); unknown classes are refused."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({r.model_class for r in records} - index.keys())
    if unknown:
        raise DataError(
            f"Images of classes {', '.join(unknown)} are not in the project's classes "
            f"({', '.join(class_names)}); add them to visionline.yaml or relabel."
        )
    return np.asarray([index[r.model_class] for r in records], dtype=np.int64)


def _progress(enabled: bool):
    from visionline.train._checkpoint import Progress

    return Progress(enabled)


def fit_anomaly(
    config: AnomalyConfig,
    dataset: str,
    project: Project,
    out_dir: Path | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    track: bool = True,
) -> AnomalyFitResult:
    """Fit on `dataset`'s train good images; threshold on its val good images; log to MLflow."""
    from visionline.data import DatasetRepo
    from visionline.evaluate import choose_operating_point
    from visionline.train._tracking import Tracker, environment_tags, git_commit

    repo = DatasetRepo(project)
    version = repo.get(dataset)
    goals = project.config.goals
    class_names = project.config.model_classes()
    train = good_training_records(version, config.max_good_images, config.seed)
    val = split_records(version, "val")
    val_labels = class_indices(val, class_names)
    if not np.any(val_labels == 0):
        raise DataError(
            f"The val split of {version.short_id} has no good images; add good images to it to "
            "set the threshold at the false-reject budget."
        )
    out = Path(out_dir) if out_dir else project.root / "runs" / f"anomaly-{version.short_id}"
    out.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(tracking_uri or project.tracking_uri, project.config.name, enabled=track)
    run_id = tracker.start(None, f"anomaly-{config.backbone}-{version.short_id}")
    try:
        tags = {
            **environment_tags("cpu", 1),
            "visionline.dataset_version": version.id,
            KIND_TAG: "anomaly",
        }
        commit = git_commit(project.root)
        if commit:
            tags["git_commit"] = commit
        extra = {
            "dataset_version": version.id,
            "dataset_name": version.name,
            "method": "anomaly",
            "n_train_good": len(train),
            "n_val": len(val),
            "max_false_reject_rate": goals.max_false_reject_rate,
            "threshold_false_reject_rate": goals.operating_false_reject_rate,
        }
        tracker.log_setup(config, version, project.datasets_dir, extra, tags)
        with _progress(progress) as bar:
            bar.start("fitting on good images", total=len(train))
            model, spec, stats = fit_detector(
                images(repo.blobs, train), len(train), config, advance=bar.update
            )
            bar.start("scoring validation images", total=len(val))
            val_scores, _ = score_images(
                model, spec.preprocessing, images(repo.blobs, val), config.batch_size, bar.update
            )
        operating = choose_operating_point(
            val_scores[val_labels == 0], goals.operating_false_reject_rate
        )
        spec.threshold = operating.threshold
        val_metrics = anomaly_metrics(val_scores, val_labels, class_names, operating.threshold, 0)
        model_path = save_anomaly_model(
            out / MODEL_FILE, model, spec, dataset_version=version.id, run_id=run_id
        )
        _write_outputs(out, config, spec, stats, operating, val_metrics)
        logged = {
            "fit_seconds": stats.fit_seconds,
            "feature_seconds": stats.feature_seconds,
            "coreset_seconds": stats.coreset_seconds,
            "bank_size": float(stats.bank_size),
            "val_threshold": operating.threshold,
            "val_false_reject_rate": operating.false_reject_rate,
        }
        for key in ("roc_auc", "defect_recall"):
            value = val_metrics[key]
            if value is not None and np.isfinite(value):
                logged[f"val_{key}"] = float(value)
        tracker.log_epoch(logged, 0)
        if track:
            _log_artifacts(out, model)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return AnomalyFitResult(run_id, model_path, out, spec, stats, operating, val_metrics)


def _write_outputs(
    out: Path,
    config: AnomalyConfig,
    spec: AnomalySpec,
    stats: FitStats,
    operating: OperatingPoint,
    val_metrics: dict[str, Any],
) -> None:
    from visionline.evaluate import jsonable

    (out / "anomaly_config.yaml").write_text(config.to_yaml())
    (out / "preprocessing.json").write_text(json.dumps(spec.preprocessing.to_dict(), indent=2))
    summary = {
        "spec": spec.to_dict(),
        "fit": {**stats.__dict__, "fit_seconds": stats.fit_seconds},
        "operating_point": operating.to_dict(),
        "val_metrics": val_metrics,
    }
    (out / "fit.json").write_text(json.dumps(jsonable(summary), indent=2))


def _log_artifacts(out: Path, model: PatchCore) -> None:
    """Files where `visionline.registry` looks for them, and an MLflow PyTorch model to register."""
    import mlflow
    import mlflow.pytorch
    import timm
    import torch

    mlflow.log_artifact(str(out / MODEL_FILE), artifact_path="checkpoint")
    mlflow.log_artifact(str(out / "preprocessing.json"))
    mlflow.log_artifact(str(out / "anomaly_config.yaml"), artifact_path="config")
    mlflow.log_artifact(str(out / "fit.json"))
    mlflow.pytorch.log_model(
        model,
        name="model",
        serialization_format="pickle",  # the pt2 format needs a traceable single-output model
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}"],
    )
