"""Continuous training: from production evidence to a hot-swapped challenger.

Triggers are read from the prediction log: a drift alarm, enough new labelled production images,
or realised recall (from operator verdicts) falling below what the champion was validated at.
Which images the operator labels is chosen by active learning (`select_from_monitor`, mixed:
nearest the threshold + spread over the logged embeddings); a trigger without enough new labels
writes that selection as a labelling request instead of training on whatever was labelled last.

A triggered run keeps a slice of the newly labelled images out of training (the conditions that
triggered it: dirty lens, new variety, ...), builds a dataset version = the champion's version +
the other labelled production images (into train/val; the test split stays the champion's) and
fine-tunes the champion on it through the pipeline. The challenger is promoted only if it is not
worse than the champion on both the champion's test split (the registry's gates and McNemar
comparison) and the held-out production images (McNemar, with each model's recall and
false-reject rate and their intervals reported). Only a promoted challenger is deployed.
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

SIGNIFICANCE = 0.05
"""McNemar p-value below which the champion counts as better on the held-out images."""


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
    held_out: int = 0
    """New labelled production images kept out of training to judge the challenger on."""
    holdout: dict[str, Any] = field(default_factory=dict)
    """Both models on the held-out images: recall and false-reject rate with intervals, McNemar."""
    label_request: Path | None = None
    """Where the images active learning wants labelled next were written, when it ran."""


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


def _bucket(sha: str, salt: str = "") -> float:
    """A stable number in [0, 1] from an image hash: the same image always lands the same way."""
    return int(hashlib.sha256(f"{salt}{sha}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _production_record(repo: Any, row: Any, split: str) -> Any:
    from PIL import Image

    from visionline.data import ImageRecord

    data = repo.blobs.get(row.image_sha256)
    with Image.open(io.BytesIO(data)) as image:
        width, height, mode = image.width, image.height, image.mode
    return ImageRecord(
        sha256=row.image_sha256, path=f"production/{row.prediction_id}.jpg", bytes=len(data),
        width=width, height=height, mode=mode, label=row.label,
        subtype=row.subtype if isinstance(row.subtype, str) and row.subtype else None,
        source=f"feedback:{row.source}", split=split,
    )


def split_holdout(feedback: Any, since: float, share: float) -> tuple[Any, Any]:
    """(for training, held out): a stable `share` of the images labelled after `since` (the
    evidence of the conditions that triggered this retraining) is kept out of training."""
    if feedback.empty or share <= 0:
        return feedback, feedback.iloc[0:0]
    held = (feedback["feedback_ts"] > since) & feedback["image_sha256"].map(
        lambda sha: _bucket(sha, "holdout:") < share
    )
    return feedback[~held].reset_index(drop=True), feedback[held].reset_index(drop=True)


def build_retraining_version(project: Project, base_id: str, feedback: Any, val_share: float) -> tuple[Any, int]:
    """The base version plus every labelled production image it lacks, split into train/val by a
    hash of the image (stable across runs); the base's test split is untouched."""
    from visionline.data import DatasetRepo

    repo = DatasetRepo(project)
    base = repo.get(base_id)
    known = {r.sha256 for r in base.records}
    added = []
    for row in feedback.itertuples():
        if row.image_sha256 in known:
            continue
        split = "val" if _bucket(row.image_sha256) < val_share else "train"
        added.append(_production_record(repo, row, split))
        known.add(row.image_sha256)
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


def build_holdout_version(project: Project, version: Any, holdout: Any) -> Any | None:
    """A version whose test split is the held-out production images and whose threshold split
    (calib, else val) is `version`'s, so both models are thresholded as the pipeline does and
    measured on production images neither was trained on. None when nothing is held out."""
    from visionline.data import DatasetRepo
    from visionline.evaluate import threshold_split

    repo = DatasetRepo(project)
    known = {r.sha256 for r in version.records}
    tested = []
    for row in holdout.itertuples():
        if row.image_sha256 not in known:
            tested.append(_production_record(repo, row, "test"))
            known.add(row.image_sha256)
    if not tested:
        return None
    threshold_records = version.split_records(threshold_split(version))
    return repo.create_version(
        threshold_records + tested, f"{version.name}-holdout", parent=version.id,
        metadata={"retraining_holdout": {"version": version.id, "production_images": len(tested)}},
    )


def judge_on_holdout(
    project: Project, challenger: str, champion: str, holdout: Any | None, bootstrap: int = 300
) -> tuple[bool, list[str], dict[str, Any]]:
    """Is challenger version `challenger` not worse than `champion` on the held-out production
    images? McNemar on per-image correctness (the registry's comparison), each model at its own
    threshold from the holdout version's threshold split; recall and false-reject rate with
    their exact intervals are reported for both."""
    from visionline.evaluate import evaluate_model, mcnemar

    settings = project.config.pipeline.retrain
    if settings.holdout_share == 0:
        return True, ["not judged on held-out production images (pipeline.retrain.holdout_share is 0)"], {}
    count = 0 if holdout is None else len(holdout.split_records("test"))
    if count < settings.min_holdout:
        reason = (
            f"only {count} held-out production images (at least {settings.min_holdout} needed) to "
            "show the challenger is not worse than the champion where retraining was triggered; "
            "label more images or lower pipeline.retrain.min_holdout"
        )
        return False, [reason], {"images": count}
    name = project.config.name
    results = {}
    for role, number in (("challenger", challenger), ("champion", champion)):
        results[role] = evaluate_model(
            project, f"models:/{name}/{number}", holdout.id, split="test", bootstrap=bootstrap,
            output_dir=project.reports_dir / f"retrain-holdout-{holdout.short_id}-v{number}",
            log=False,
        )
    test = mcnemar(results["challenger"].correct(), results["champion"].correct())
    summary = {"images": count, "dataset_version": holdout.id, "mcnemar": test}
    for role, result in results.items():
        metrics = result.metrics
        summary[role] = {
            "version": challenger if role == "challenger" else champion,
            "defect_recall": metrics["defect_recall"],
            "defect_recall_ci": metrics["defect_recall_exact_ci"],
            "false_reject_rate": metrics["false_reject_rate"],
            "false_reject_rate_ci": metrics["false_reject_rate_exact_ci"],
        }
    line = (
        f"on {count} held-out production images: challenger recall "
        f"{_rate(summary['challenger'], 'defect_recall')}, FRR "
        f"{_rate(summary['challenger'], 'false_reject_rate')}; champion recall "
        f"{_rate(summary['champion'], 'defect_recall')}, FRR "
        f"{_rate(summary['champion'], 'false_reject_rate')}; McNemar: challenger right where "
        f"champion wrong on {test['only_a']}, the reverse on {test['only_b']} "
        f"(p = {test['p_value']:.3g})"
    )
    if test["only_b"] > test["only_a"] and test["p_value"] < SIGNIFICANCE:
        return False, [f"champion is significantly better {line}"], summary
    return True, [f"challenger is not worse {line}"], summary


def _rate(row: dict[str, Any], key: str) -> str:
    value, (low, high) = row[key], row[f"{key}_ci"]
    if value is None:
        return "n/a"
    return f"{value:.1%} [{low:.1%}, {high:.1%}]"


def request_labels(project: Project, db: Any, since: float, budget: int) -> tuple[Path, int]:
    """Write the kept, unlabelled images active learning picks (mixed) since `since` as a
    labelling request (JSON); returns its path and how many images it names."""
    from visionline.data import Strategy, select_from_monitor

    picks, pool = select_from_monitor(
        db, project.config.name, Strategy.MIXED, budget, since=since or None
    )
    path = project.reports_dir / "retrain-label-request.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, {
        "strategy": Strategy.MIXED.value, "pool": pool, "since": since,
        "images": [pick.__dict__ for pick in picks],
    })
    return path, len(picks)


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
    labelled = _labelled_images(db, 0.0)
    fresh = int((labelled["feedback_ts"] > since).sum()) if not labelled.empty else 0
    if if_triggered and fresh < settings.min_new_labels:
        budget = settings.label_budget or settings.min_new_labels
        try:
            path, count = request_labels(project, db, since, budget)
        except DataError as exc:
            console.print(f"Too few new labels to retrain ({fresh}), and none to request: {exc}")
            return result
        result.label_request = path
        console.print(
            f"Only {fresh} production images were labelled since the last retraining "
            f"({settings.min_new_labels} needed); active learning picked {count} to label next: "
            f"{path} (send them with 'visionline label select --from-monitor --push')."
        )
        return result
    champion = _production_model(project)
    if not champion.get("dataset_version"):
        raise DataError(
            f"Champion v{champion['version']} records no dataset version, so there is nothing to extend."
        )
    started = time.time()
    training, held = split_holdout(labelled, since, settings.holdout_share)
    version, added = build_retraining_version(
        project, champion["dataset_version"], training, settings.val_share
    )
    holdout = build_holdout_version(project, version, held)
    result.held_out = 0 if holdout is None else len(holdout.split_records("test"))
    name = project.config.name
    console.print(
        f"dataset {version.short_id}: {name} v{champion['version']}'s "
        f"{champion['dataset_version'][:12]} + {added} labelled production images; "
        f"{result.held_out} more held out to judge the challenger"
    )
    checkpoint = resolve_model(f"models:/{name}/{champion['version']}", project.tracking_uri).path
    overrides: dict[str, dict[str, Any]] = {
        "train": {"pretrained": str(checkpoint), "epochs": settings.epochs, "lr": settings.lr,
                  "freeze_epochs": 0},
        "register": {"promote": False},
        "deploy": {"only_champion": True, **({"server": server} if server else {})},
    }
    run = run_pipeline(
        project, data=version.id, overrides=overrides, console=console, progress=progress
    )
    _write_json(_state_path(project), {
        "started_at": started, "run": run.id, "dataset_version": version.id,
        "holdout_version": holdout.id if holdout is not None else None,
        "triggers": [t.__dict__ for t in triggers],
    })
    result.ran, result.run = True, run
    result.dataset_version, result.new_images = version.id, added
    registered = run.outputs("register").get("registered_model")
    if registered is None:
        return result
    result.registered = registered.id
    challenger = str(registered.meta["version"])
    fair, result.reasons, result.holdout = judge_on_holdout(
        project, challenger, str(champion["version"]), holdout
    )
    if not fair:
        result.reasons.insert(0, "the champion stays")
        return result
    from visionline.registry import promote

    decision = promote(project, name, progress=progress)
    result.promoted = decision.promoted
    result.reasons = [*decision.reasons, *result.reasons]
    if decision.promoted:  # register finds the new champion; deploy installs and hot-swaps it
        overrides["register"] = {"promote": True}
        run = run_pipeline(
            project, data=version.id, overrides=overrides, console=console, progress=progress
        )
        result.run = run
    deployment = run.outputs("deploy").get("deployment")
    if deployment is not None and deployment.meta.get("deployed"):
        result.deployed = deployment.id
    return result


def summary(result: RetrainResult) -> str:
    """One JSON object for logs and CI."""
    return json.dumps({
        "triggers": [t.__dict__ for t in result.triggers], "ran": result.ran,
        "dataset_version": result.dataset_version, "new_images": result.new_images,
        "held_out": result.held_out, "holdout": result.holdout,
        "registered": result.registered, "promoted": result.promoted,
        "reasons": result.reasons, "deployed": result.deployed,
        "label_request": str(result.label_request) if result.label_request else None,
    }, indent=2, default=str)
