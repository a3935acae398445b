"""Label Studio interchange: labelling config, import tasks with predictions, and export parsing.

Label Studio is where people fix labels; visionline is where the labels become immutable dataset
versions. Tasks carry `data.sha256` and `data.dataset_version`, so an export maps back to blobs
by content even when Label Studio served the image from a different path.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import quoteattr

from visionline.config import GOOD_CLASS, ProjectConfig
from visionline.errors import ConfigError, DataError, ImageError

if TYPE_CHECKING:
    from PIL import Image

    from visionline.data import DatasetRepo, DatasetVersion, ImageRecord

FROM_NAME = "choice"
TO_NAME = "image"
REGION_NAME = "region"  # rectangles around defects; the image's class stays the `choice`
LOCAL_FILES_PREFIX = "/data/local-files/?d="
BLOB_PREFIX = "blob:"
LABEL_SOURCE = "labelstudio"
ENV_SERVING = "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"
ENV_DOCUMENT_ROOT = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"


@dataclass(frozen=True)
class LabelDecision:
    """The label that people settled on for one Label Studio task."""

    image: str
    label: str
    subtype: str | None
    n_annotations: int
    sha256: str | None = None  # `data.sha256` when the task came from `visionline label export`


@dataclass
class ExportSummary:
    """Everything read from an export: decisions, issues and label provenance."""

    decisions: list[LabelDecision] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    n_tasks: int = 0
    n_unlabelled: int = 0
    n_cancelled: int = 0
    n_ties: int = 0
    n_unknown: int = 0
    n_ground_truth: int = 0
    annotators: Counter[str] = field(default_factory=Counter)
    # one entry per decision: sha256/image, annotators, when, share of votes for the decision
    labelled: list[dict[str, Any]] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)

    def agreement(self) -> float | None:
        """Mean share of votes for the decided class over tasks that several people labelled."""
        shared = [entry["agreement"] for entry in self.labelled if len(entry["annotators"]) > 1]
        return round(sum(shared) / len(shared), 4) if shared else None

    def provenance(self) -> dict[str, Any]:
        """JSON-ready counts stored in the metadata of the version that the export makes."""
        return {
            "tasks": self.n_tasks,
            "decisions": len(self.decisions),
            "unlabelled": self.n_unlabelled,
            "cancelled_annotations": self.n_cancelled,
            "ties": self.n_ties,
            "unknown_choices": self.n_unknown,
            "ground_truth_decisions": self.n_ground_truth,
            "annotations_per_annotator": dict(sorted(self.annotators.items())),
            "multi_annotated": sum(len(entry["annotators"]) > 1 for entry in self.labelled),
            "agreement": self.agreement(),
            "disagreements": len(self.disagreements),
        }


def class_labels(config: ProjectConfig) -> dict[str, tuple[str, str | None]]:
    """Model class name → (manifest label, subtype), e.g. 'bruise' → ('defect', 'bruise')."""
    mapping: dict[str, tuple[str, str | None]] = {GOOD_CLASS: (GOOD_CLASS, None)}
    for label, subtypes in config.defect_labels().items():
        if subtypes:
            mapping.update({subtype: (label, subtype) for subtype in subtypes})
        else:
            mapping[label] = (label, None)
    return mapping


def label_config_xml(config: ProjectConfig) -> str:
    """The labelling interface: one single-choice question over the model classes (class and
    subtype at once), and a rectangle tool that marks defect regions by subtype."""
    parents = {name: label for name, (label, _) in class_labels(config).items()}
    choices = "\n".join(
        f"    <Choice value={quoteattr(name)}"
        + (f" hint={quoteattr(parents[name])}" if parents[name] != name else "")
        + "/>"
        for name in config.model_classes()
    )
    regions = "\n".join(
        f"    <Label value={quoteattr(name)}/>"
        for name in config.model_classes()
        if name != GOOD_CLASS
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="${TO_NAME}" zoom="true"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" '
        'showInLine="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        f'  <RectangleLabels name="{REGION_NAME}" toName="{TO_NAME}">\n'
        f"{regions}\n"
        "  </RectangleLabels>\n"
        "</View>\n"
    )


def local_files_url(path: Path, document_root: Path) -> str:
    """The URL Label Studio serves a local file under (needs local-files serving enabled)."""
    try:
        relative = path.resolve().relative_to(document_root.resolve())
    except ValueError:
        raise ConfigError(
            f"{path} is not under the document root {document_root}; pass a --document-root "
            "that contains the blob store."
        ) from None
    return LOCAL_FILES_PREFIX + quote(relative.as_posix(), safe="/")


def image_ref_to_path(image: str, base_dir: Path) -> Path | None:
    """Local path for a task's image ref, or None for remote URLs and blob refs.

    `/data/local-files/?d=...` refs (also behind a host) resolve against `base_dir`, which is
    then Label Studio's document root; relative paths resolve against `base_dir` as well. The
    path is not checked for existence, nor confined: `read_local_image` does that.
    """
    if not image or image.startswith(BLOB_PREFIX):
        return None
    parts = urlsplit(image)
    if parts.path.rstrip("/").endswith("/data/local-files"):
        relative = parse_qs(parts.query).get("d", [""])[0]
        return base_dir / unquote(relative) if relative else None
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # http, s3, gs...; one letter is a Windows drive
        return None
    path = Path(image).expanduser()
    return path if path.is_absolute() else base_dir / path


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; check the path.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{what} {path} is not valid JSON ({exc}); export it again from Label Studio as JSON."
        ) from exc


def _annotation_choices(annotation: dict[str, Any]) -> list[str]:
    """The classes picked in one annotation (our `choice` control first, else any choices)."""
    results = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
    picked = [r for r in results if r.get("type") == "choices" and r.get("from_name") == FROM_NAME]
    if not picked:
        picked = [r for r in results if r.get("type") == "choices"]
    return [str(c) for r in picked for c in (r.get("value") or {}).get("choices") or []]


def _annotator(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return str(who) if who is not None else "unknown"


def _annotated_at(annotation: dict[str, Any]) -> str | None:
    when = annotation.get("updated_at") or annotation.get("created_at")
    return str(when) if when else None


def _task_label(task: Any, number: int) -> str:
    if not isinstance(task, dict):
        return f"task #{number}"
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    image = data.get("path") or data.get(TO_NAME)
    return f"task {task.get('id', '#' + str(number))} ({image})" if image else f"task #{number}"


def read_export(path: Path, config: ProjectConfig) -> ExportSummary:
    """Read a Label Studio JSON export into decisions, issues and provenance counts."""
    tasks = _load_json(path, "Label Studio export")
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(
            f"{path} is not a Label Studio JSON export (expected a list of tasks); "
            "export the project as JSON, not JSON-MIN or CSV."
        )
    classes = class_labels(config)
    summary = ExportSummary(n_tasks=len(tasks))
    for number, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        image = data.get(TO_NAME) if isinstance(data, dict) else None
        if not isinstance(image, str) or not image:
            summary.issues.append(f"{_task_label(task, number)}: no data.{TO_NAME}; it is skipped.")
            continue
        votes: list[tuple[str, bool]] = []
        voters: list[tuple[str, str | None]] = []
        for annotation in task.get("annotations") or []:
            if not isinstance(annotation, dict):
                continue
            if annotation.get("was_cancelled"):
                summary.n_cancelled += 1
                continue
            picked = _annotation_choices(annotation)
            if not picked:
                continue
            summary.annotators[_annotator(annotation)] += 1
            votes.append((picked[0], bool(annotation.get("ground_truth"))))
            voters.append((_annotator(annotation), _annotated_at(annotation)))
        if not votes:
            summary.n_unlabelled += 1
            continue
        unknown = sorted({choice for choice, _ in votes if choice not in classes})
        if unknown:
            summary.n_unknown += 1
            summary.issues.append(
                f"{_task_label(task, number)}: choice {', '.join(map(repr, unknown))} is not a class of this project "
                f"({', '.join(classes)}); add it to visionline.yaml or relabel the task."
            )
            continue
        truth = [choice for choice, is_truth in votes if is_truth]
        counts = Counter(truth or [choice for choice, _ in votes]).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            summary.n_ties += 1
            tied = " vs ".join(f"{c} ({n})" for c, n in counts if n == counts[0][1])
            summary.issues.append(
                f"{_task_label(task, number)}: tie {tied}; it is left out, mark one annotation as ground truth."
            )
            continue
        summary.n_ground_truth += bool(truth)
        label, subtype = classes[counts[0][0]]
        sha = data.get("sha256")
        agreement = sum(choice == counts[0][0] for choice, _ in votes) / len(votes)
        if agreement < 1.0:
            said = ", ".join(
                f"{who}: {choice}" for (who, _), (choice, _) in zip(voters, votes, strict=True)
            )
            rule = "ground truth" if truth else "majority"
            summary.disagreements.append(
                f"{_task_label(task, number)}: annotators disagree ({said}); the {rule} "
                f"{counts[0][0]!r} is used, review the task in Label Studio to change it."
            )
        summary.labelled.append(
            {
                "sha256": sha if isinstance(sha, str) else None,
                "image": image,
                "class": counts[0][0],
                "annotators": [who for who, _ in voters],
                "annotated_at": max((when for _, when in voters if when), default=None),
                "agreement": round(agreement, 4),
            }
        )
        summary.decisions.append(
            LabelDecision(image, label, subtype, len(votes), sha if isinstance(sha, str) else None)
        )
    return summary


def parse_export(path: Path, config: ProjectConfig) -> tuple[list[LabelDecision], list[str]]:
    """One decision per labelled task (ground truth first, else majority) and the issues found."""
    summary = read_export(path, config)
    return summary.decisions, summary.issues


@dataclass(frozen=True)
class ModelPrediction:
    """A model's output for one image, as Label Studio shows it to annotators."""

    choice: str
    score: float
    model_version: str | None = None


def _prediction_from_row(
    row: dict[str, Any], classes: list[str], where: str
) -> tuple[str, ModelPrediction]:
    key = str(row.get("sha256") or row.get("path") or "").strip()
    if not key:
        raise DataError(f"{where} has neither 'sha256' nor 'path'; add one of them to every row.")
    probabilities = row.get("probabilities")
    if not isinstance(probabilities, dict):
        probabilities = {c: row[c] for c in classes if row.get(c) not in (None, "")}
    try:
        if probabilities:
            unknown = sorted(set(probabilities) - set(classes))
            if unknown:
                raise DataError(
                    f"{where} has probabilities for unknown classes {unknown}; "
                    f"use the project's classes ({', '.join(classes)})."
                )
            choice, score = max(
                ((c, float(p)) for c, p in probabilities.items()), key=lambda x: x[1]
            )
        else:
            choice, score = str(row.get("label") or ""), float(row.get("score", 1.0))
            if choice not in classes:
                raise DataError(
                    f"{where} has label {choice!r}, which is not a class of this project "
                    f"({', '.join(classes)}); fix the label or give per-class probabilities."
                )
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{where} has a score that is not a number ({exc}); fix that value."
        ) from exc
    version = row.get("model_version")
    return key, ModelPrediction(choice, score, str(version) if version else None)


def load_predictions(path: Path, config: ProjectConfig) -> dict[str, ModelPrediction]:
    """Per-image model outputs from JSON or CSV, keyed by sha256 or path.

    Rows carry `sha256` or `path`, and either one column per model class (probabilities) or
    `label` and `score`; JSON rows may nest probabilities under `probabilities`.
    """
    classes = config.model_classes()
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DataError(f"Predictions file {path} does not exist; check the path.")
        with path.open(newline="", encoding="utf-8") as handle:
            rows: Any = list(csv.DictReader(handle))
    else:
        rows = _load_json(path, "Predictions file")
        if isinstance(rows, dict):
            rows = rows.get("predictions")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise DataError(
            f"Predictions file {path} must be a list of objects (or CSV rows) with sha256 or "
            "path and per-class probabilities or label and score; rewrite it that way."
        )
    return dict(
        _prediction_from_row(row, classes, f"Predictions file {path}, row {i}")
        for i, row in enumerate(rows, start=1)
    )


def _prediction_payload(prediction: ModelPrediction, model_version: str) -> dict[str, Any]:
    return {
        "model_version": prediction.model_version or model_version,
        "score": round(prediction.score, 6),
        "result": [
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": [prediction.choice]},
            }
        ],
    }


def is_labelled(record: ImageRecord, config: ProjectConfig) -> bool:
    """True when the record names a model class: `good`, or a defect with its subtype.

    A defect of a class that has subtypes but no subtype yet ('defect, kind unknown') is what
    `--only-unlabelled` sends to annotators, together with labels the project does not know.
    """
    if record.label == GOOD_CLASS:
        return True
    subtypes = config.defect_labels().get(record.label)
    return subtypes is not None and (not subtypes or record.subtype in subtypes)


def build_tasks(
    version: DatasetVersion,
    repo: DatasetRepo,
    config: ProjectConfig,
    *,
    document_root: Path | None = None,
    only_unlabelled: bool = False,
    predictions: dict[str, ModelPrediction] | None = None,
    model_version: str = "visionline",
) -> tuple[list[dict[str, Any]], int]:
    """Label Studio import tasks for a dataset version, and how many got a prediction."""
    tasks: list[dict[str, Any]] = []
    n_predicted = 0
    for record in version.records:
        if only_unlabelled and is_labelled(record, config):
            continue
        blob = repo.blobs.local_path(record.sha256)
        if blob is None:
            raise ConfigError(
                "The blob store is not on this filesystem, so Label Studio cannot serve its "
                "images as local files; export from a project with a local blob store."
            )
        image = local_files_url(blob, document_root) if document_root else str(blob.resolve())
        task: dict[str, Any] = {
            "data": {
                TO_NAME: image,
                "sha256": record.sha256,
                "dataset_version": version.id,
                "path": record.path,
                "current_label": record.subtype or record.label,
            }
        }
        prediction = None
        if predictions:
            prediction = predictions.get(record.sha256) or predictions.get(record.path)
        if prediction is not None:
            task["predictions"] = [_prediction_payload(prediction, model_version)]
            n_predicted += 1
        tasks.append(task)
    return tasks, n_predicted


@dataclass
class LabelImport:
    """What an export changed against its parent version."""

    summary: ExportSummary
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    n_unchanged: int = 0
    n_added: int = 0
    unmatched: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # local files refused, each with the reason
    version: DatasetVersion | None = None
    records: list[ImageRecord] = field(default_factory=list)

    @property
    def n_changed(self) -> int:
        return sum(self.changes.values())


def read_local_image(path: Path, root: Path) -> tuple[bytes, Image.Image] | None:
    """The bytes and decoded image of a file that an export names, or None when it is missing.

    Raises `DataError` (with the fix) when the path, after `..` and symlinks are resolved, lies
    outside the document `root`, is not a regular file, or is not a decodable image, so nothing
    outside the root is read and nothing undecodable is stored.
    """
    from visionline.preprocessing import decode_image

    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(
            f"{path} lies outside the document root {root}, so it was not read; move it under "
            "that root or pass the root that holds it as --document-root."
        )
    if not resolved.exists():
        return None
    if not resolved.is_file():
        raise DataError(f"{path} is not a regular file; point the task at an image file.")
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror}); check its permissions.") from exc
    try:
        return data, decode_image(data)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc


def _new_record(
    data: bytes, image: Image.Image, sha: str, path: Path, decision: LabelDecision
) -> ImageRecord:
    from visionline.data import ImageRecord

    return ImageRecord(
        sha256=sha,
        path=str(path),
        bytes=len(data),
        width=image.width,
        height=image.height,
        mode=image.mode,
        label=decision.label,
        subtype=decision.subtype,
        source=LABEL_SOURCE,
        split=None,
    )


def apply_export(
    repo: DatasetRepo,
    parent: DatasetVersion,
    export: Path,
    config: ProjectConfig,
    *,
    name: str | None = None,
    document_root: Path | None = None,
) -> LabelImport:
    """Make a child version of `parent` with the labels of a Label Studio export.

    Images map back to blobs by `data.sha256`, then by path (the manifest path, else the bytes
    of the local file). Local images that `parent` lacks are stored and added with their labels,
    if they lie inside the document root and decode; any other file is skipped with its reason
    (`result.skipped`), so one bad file does not stop the import. Nothing is written when
    nothing changed (`result.version` stays None).
    """
    summary = read_export(export, config)
    root = document_root or Path(os.environ.get(ENV_DOCUMENT_ROOT) or export.parent)
    result = LabelImport(summary)
    records = {r.sha256: r for r in parent.records}
    by_path = {r.path: r.sha256 for r in parent.records}
    order = [r.sha256 for r in parent.records]
    decided: dict[str, LabelDecision] = {}
    for decision in summary.decisions:
        sha = decision.sha256 if decision.sha256 in records else None
        if sha is None and decision.image.startswith(BLOB_PREFIX):
            sha = decision.image.removeprefix(BLOB_PREFIX)
            sha = sha if sha in records else None
        local = image_ref_to_path(decision.image, root)
        if sha is None:
            sha = by_path.get(decision.image) or (by_path.get(str(local)) if local else None)
        if sha is None and local is not None:
            try:
                loaded = read_local_image(local, root)
            except DataError as exc:
                result.skipped.append(f"{decision.image}: {exc}")
                continue
            if loaded is not None:
                data, image = loaded
                sha = hashlib.sha256(data).hexdigest()
                if sha not in records:
                    records[sha] = _new_record(data, image, repo.blobs.put(data), local, decision)
                    order.append(sha)
                    decided[sha] = decision
                    result.n_added += 1
                    continue
        if sha is None:
            result.unmatched.append(
                f"{decision.image}: not in version {parent.short_id} and not a readable local "
                "file; pass --document-root with Label Studio's document root."
            )
            continue
        first = decided.setdefault(sha, decision)
        if first is not decision:
            if (first.label, first.subtype) != (decision.label, decision.subtype):
                result.conflicts.append(
                    f"{decision.image}: same image as {first.image} but labelled "
                    f"{decision.subtype or decision.label} there vs "
                    f"{first.subtype or first.label}; the first task's label is kept."
                )
            continue
        old = records[sha]
        if (old.label, old.subtype) == (decision.label, decision.subtype):
            result.n_unchanged += 1
            continue
        result.changes[(old.subtype or old.label, decision.subtype or decision.label)] += 1
        records[sha] = replace(old, label=decision.label, subtype=decision.subtype)
    result.records = [records[sha] for sha in order]
    if result.n_changed or result.n_added:
        metadata = {
            "source": LABEL_SOURCE,
            "export": str(export.resolve()),
            "export_sha256": hashlib.sha256(export.read_bytes()).hexdigest(),
            "labels": summary.provenance(),
            "changed": result.n_changed,
            "added": result.n_added,
            "unchanged": result.n_unchanged,
            "unmatched": len(result.unmatched),
            "conflicts": len(result.conflicts),
            "skipped": len(result.skipped),
            "issues": (summary.issues + result.skipped + result.unmatched + result.conflicts)[:50],
            "disagreements": summary.disagreements[:200],
            "labelled": summary.labelled,
        }
        result.version = repo.create_version(
            result.records,
            name=name or f"{parent.name}-labelled",
            parent=parent.id,
            metadata=metadata,
        )
    return result
