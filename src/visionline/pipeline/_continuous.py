"""Continuous training: from production evidence to a hot-swapped challenger.

Triggers are read from the prediction log: a drift alarm, enough new labelled production images,
or realised recall (from operator verdicts) falling below what the champion was validated at. A
triggered run builds a dataset version = the champion's version + the labelled production images
(into train/val; the test split stays the champion's, so both are compared on the same images),
fine-tunes the champion on it through the pipeline, and lets the registry's comparison decide.
Only a promoted challenger is deployed; the server verifies, warms up and swaps it in.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from visionline.config import GOOD_CLASS, Project
from visionline.errors import DataError, NotFoundError
from visionline.pipeline._records import PipelineRun, _read_json, _write_json


@dataclass(frozen=True)
class Trigger:
    kind: str
    reason: str


@dataclass
class RetrainResult:
    """What `retrain` found and did."""

    triggers: list[Trigger]
    ran: bool = False
    dataset_version: str | None = None
    new_images: int = 0
    run: PipelineRun | None = None
    registered: str | None = None
    promoted: bool = False
    reasons: list[str] = field(default_factory=list)
    deployed: str | None = None


def _state_path(project: Project) -> Path:
    return project.cache_dir / "pipeline" / "retrain.json"


def last_retrain(project: Project) -> float:
    """When the last retraining started (0 when never): evidence before it is used up."""
    state = _read_json(_state_path(project)) or {}
    return float(state.get("started_at", 0.0))


def _production_model(project: Project) -> dict[str, Any]:
    """The champion; without one (no model passed its gates yet), the newest registered version,
    which is what a plant that deployed anyway is running."""
    from visionline.registry import CHAMPION, show_model

    name = project.config.name
    try:
        versions = show_model(project, name)
    except NotFoundError:
        versions = []
    if not versions:
        raise NotFoundError(
            f"Model {name} has no registered version to retrain; run 'visionline pipeline run' first."
        )
    return next((row for row in versions if CHAMPION in row["aliases"]), versions[-1])


def _validated_recall(champion: dict[str, Any]) -> float | None:
    """The champion's test recall, copied into its registry tags when it was registered."""
    value = champion.get("metrics", {}).get("test_defect_recall")
    return None if value is None else float(value)


def check_triggers(project: Project, db: Any, since: float | None = None) -> list[Trigger]:
    """Every reason to retrain now, oldest evidence first; empty when the champion is fine."""
    settings = project.config.pipeline.retrain
    since = last_retrain(project) if since is None else since
    name = project.config.name
    triggers = []
    if settings.on_drift:
        alarms = db.alarms_frame(name)
        alarms = alarms[alarms["ts"] > since] if not alarms.empty else alarms
        if not alarms.empty:
            latest = alarms.sort_values("ts").iloc[-1]
            triggers.append(Trigger(
                "drift", f"{len(alarms)} drift alarm(s) since the last retraining; latest: {latest['cause']}"
            ))
    feedback = _labelled_images(db, since)
    if len(feedback) >= settings.min_new_labels:
        triggers.append(Trigger(
            "labels", f"{len(feedback)} new labelled production images (threshold {settings.min_new_labels})"
        ))
    defects = feedback[feedback["label"] != GOOD_CLASS] if not feedback.empty else feedback
    if len(defects) >= settings.min_labelled_defects:
        realised = float(defects["flagged"].mean())
        validated = _validated_recall(_production_model(project))
        if validated is not None and realised < validated - settings.max_recall_drop:
            triggers.append(Trigger(
                "performance",
                f"realised defect recall {realised:.1%} on {len(defects)} verdicts is below the "
                f"validated {validated:.1%} by more than {settings.max_recall_drop:.0%}",
            ))
    return triggers


def _labelled_images(db: Any, since: float) -> Any:
    """Verdicts given after `since` on predictions whose image was kept in the blob store."""
    frame = db.feedback_frame()
    if frame.empty:
        return frame
    frame = frame[frame["image_sha256"].notna() & (frame["feedback_ts"] > since)]
    return frame.drop_duplicates("image_sha256", keep="last").reset_index(drop=True)


def build_retraining_version(project: Project, base_id: str, feedback: Any, val_share: float) -> tuple[Any, int]:
    """The base version plus every labelled production image it lacks, split into train/val by a
    hash of the image (stable across runs); the base's test split is untouched."""
    from PIL import Image

    from visionline.data import DatasetRepo, ImageRecord

    repo = DatasetRepo(project)
    base = repo.get(base_id)
    known = {r.sha256 for r in base.records}
    added = []
    for row in feedback.itertuples():
        sha = row.image_sha256
        if sha in known:
            continue
        data = repo.blobs.get(sha)
        with Image.open(io.BytesIO(data)) as image:
            width, height, mode = image.width, image.height, image.mode
        bucket = int(hashlib.sha256(sha.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        added.append(ImageRecord(
            sha256=sha, path=f"production/{row.prediction_id}.jpg", bytes=len(data), width=width,
            height=height, mode=mode, label=row.label,
            subtype=row.subtype if isinstance(row.subtype, str) and row.subtype else None,
            source=f"feedback:{row.source}", split="val" if bucket < val_share else "train",
        ))
        known.add(sha)
    if not added:
        raise DataError(
            "No labelled production image is new to the champion's dataset; label some with "
            "'visionline monitor feedback' or a Label Studio import first."
        )
    version = repo.create_version(
        base.records + added, f"{base.name}+production", parent=base.id,
        metadata={"retraining": {"base": base.id, "production_images": len(added)}},
    )
    return version, len(added)


def retrain(
    project: Project,
    *,
    if_triggered: bool = True,
    server: str | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> RetrainResult:
    """Check the triggers; when one fired (or `if_triggered` is off) train, compare, promote and
    deploy a challenger. Returns what happened; raises `VisionlineError`s with a fix."""
    from visionline.monitor import MonitorDB
    from visionline.pipeline._run import run_pipeline
    from visionline.registry import resolve_model

    console = console or Console()
    settings = project.config.pipeline.retrain
    db = MonitorDB(project.monitor_db_url)
    since = last_retrain(project)
    triggers = check_triggers(project, db, since)
    for trigger in triggers:
        console.print(f"[bold]trigger[/bold] {trigger.kind}: {trigger.reason}")
    result = RetrainResult(triggers)
    if if_triggered and not triggers:
        console.print("No retraining trigger fired; the champion stays.")
        return result
    if not triggers:
        triggers.append(Trigger("forced", "retraining was requested without a trigger"))
    champion = _production_model(project)
    if not champion.get("dataset_version"):
        raise DataError(
            f"Champion v{champion['version']} records no dataset version, so there is nothing to extend."
        )
    started = time.time()
    version, added = build_retraining_version(
        project, champion["dataset_version"], _labelled_images(db, 0.0), settings.val_share
    )
    name = project.config.name
    console.print(
        f"dataset {version.short_id}: {name} v{champion['version']}'s "
        f"{champion['dataset_version'][:12]} + {added} labelled production images"
    )
    checkpoint = resolve_model(f"models:/{name}/{champion['version']}", project.tracking_uri).path
    overrides = {
        "train": {"pretrained": str(checkpoint), "epochs": settings.epochs, "lr": settings.lr,
                  "freeze_epochs": 0},
        "deploy": {"only_champion": True, **({"server": server} if server else {})},
    }
    run = run_pipeline(
        project, data=version.id, overrides=overrides, console=console, progress=progress
    )
    _write_json(_state_path(project), {
        "started_at": started, "run": run.id, "dataset_version": version.id,
        "triggers": [t.__dict__ for t in triggers],
    })
    registered = run.outputs("register").get("registered_model")
    deployment = run.outputs("deploy").get("deployment")
    result.ran, result.run = True, run
    result.dataset_version, result.new_images = version.id, added
    if registered is not None:
        result.registered = registered.id
        result.promoted = bool(registered.meta["promoted"])
        result.reasons = list(registered.meta["reasons"])
    if deployment is not None and deployment.meta.get("deployed"):
        result.deployed = deployment.id
    return result


def summary(result: RetrainResult) -> str:
    """One JSON object for logs and CI."""
    return json.dumps({
        "triggers": [t.__dict__ for t in result.triggers], "ran": result.ran,
        "dataset_version": result.dataset_version, "new_images": result.new_images,
        "registered": result.registered, "promoted": result.promoted,
        "reasons": result.reasons, "deployed": result.deployed,
    }, indent=2)
