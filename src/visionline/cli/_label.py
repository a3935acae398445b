"""`visionline label`: send images to Label Studio and turn its answers into dataset versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from visionline.cli._common import ProjectOption, console, load_project
from visionline.cli._label_select import select_command

if TYPE_CHECKING:
    from visionline.config import Project
    from visionline.data._labelstudio import LabelImport

app = typer.Typer(
    help=(
        "Label Studio interchange: export tasks (with model predictions), import the "
        "annotations back as a new dataset version."
    ),
    no_args_is_help=True,
)

_LOCAL_FILES_HELP = (
    "Label Studio's local-files document root (must contain the blob store); images become "
    "/data/local-files/?d=... URLs. Without it, tasks hold absolute file paths."
)
_MODEL_VERSION_HELP = (
    "model_version of the predictions (default: the predictions file name); it must match "
    "the one selected in Label Studio or they stay hidden."
)
_LABEL_STUDIO_NOTES = (
    "\n\nLocal files: Label Studio serves /data/local-files/?d=PATH only when started with "
    "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
    "set to a folder that contains the blob store; pass that folder as --document-root."
    "\n\nPredictions: Label Studio shows a prediction only when its model_version is the one "
    "selected under Settings > Annotation > Prelabeling; a mismatch hides them silently."
)

OnlyUnlabelledOption = Annotated[
    bool, typer.Option(help="Only images without a good/defect label.")
]
ModelVersionOption = Annotated[
    str | None, typer.Option(help=_MODEL_VERSION_HELP, show_default=False)
]
DocumentRootOption = Annotated[
    Path | None, typer.Option("--document-root", help=_LOCAL_FILES_HELP, show_default=False)
]
UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar="LABEL_STUDIO_URL", help="Label Studio base URL ($LABEL_STUDIO_URL)."
    ),
]
ApiKeyOption = Annotated[
    str,
    typer.Option(
        "--api-key",
        envvar="LABEL_STUDIO_API_KEY",
        help="Access token from Account & Settings ($LABEL_STUDIO_API_KEY).",
        show_default=False,
    ),
]


AnomalyModelOption = Annotated[
    str | None,
    typer.Option(
        "--anomaly-model",
        help="Anomaly bundle, model.pt, runs:/ or models:/ URI: its heatmap's regions above the "
        "threshold become pre-annotated defect rectangles.",
        show_default=False,
    ),
]


def _tasks(
    project: Project,
    version_id: str,
    document_root: Path | None,
    only_unlabelled: bool,
    predictions: Path | None,
    model_version: str | None,
    anomaly_model: str | None = None,
) -> tuple[Any, list[dict[str, Any]], int, str]:
    from visionline.data import DatasetRepo
    from visionline.data._labelstudio import build_tasks, load_predictions

    repo = DatasetRepo(project)
    version = repo.get(version_id)
    loaded = load_predictions(predictions, project.config) if predictions else None
    name = model_version or (predictions.stem if predictions else "visionline")
    tasks, n_predicted = build_tasks(
        version,
        repo,
        project.config,
        document_root=document_root,
        only_unlabelled=only_unlabelled,
        predictions=loaded,
        model_version=name,
    )
    if predictions and n_predicted == 0:
        console.print(
            f"[yellow]warning:[/yellow] no row of {predictions} matched an image of version "
            f"{version.short_id} by sha256 or path; the tasks carry no predictions."
        )
    if anomaly_model:
        from visionline.data._labelstudio_regions import add_anomaly_regions, open_anomaly_model

        detector = open_anomaly_model(anomaly_model, project.tracking_uri)
        before = sum("predictions" in t for t in tasks)
        n_regions = add_anomaly_regions(tasks, repo, project.config, detector, name)
        n_predicted += sum("predictions" in t for t in tasks) - before
        console.print(
            f"Anomaly model {detector.name}: defect regions on {n_regions} of {len(tasks)} images."
        )
    return version, tasks, n_predicted, name


@app.command(
    "export",
    help="Write Label Studio import tasks and label_config.xml for a dataset version."
    + _LABEL_STUDIO_NOTES,
)
def export(
    version: Annotated[str, typer.Argument(help="Dataset version id or unique prefix.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Tasks JSON to write.")],
    only_unlabelled: OnlyUnlabelledOption = False,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="JSON or CSV of model outputs: sha256 or path, then per-class probabilities "
            "or label and score. They pre-fill the choice and let annotators sort by score.",
            show_default=False,
        ),
    ] = None,
    document_root: DocumentRootOption = None,
    model_version: ModelVersionOption = None,
    anomaly_model: AnomalyModelOption = None,
    project_dir: ProjectOption = None,
) -> None:
    """Write Label Studio import tasks and label_config.xml for a dataset version."""
    from visionline.data._labelstudio import ENV_DOCUMENT_ROOT, ENV_SERVING, label_config_xml

    project = load_project(project_dir)
    found, tasks, n_predicted, name = _tasks(
        project, version, document_root, only_unlabelled, predictions, model_version,
        anomaly_model,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, indent=1))
    config_path = out.parent / "label_config.xml"
    config_path.write_text(label_config_xml(project.config))
    console.print(
        f"[green]Wrote[/green] {len(tasks)} tasks of version {found.short_id} "
        f"({n_predicted} with predictions) to {out}, and the labelling interface to "
        f"{config_path}."
    )
    root = document_root.resolve() if document_root else project.root
    if not document_root:
        console.print(
            "[yellow]note:[/yellow] tasks hold absolute file paths, which a browser cannot "
            f"load; rerun with --document-root {root} for local-files URLs."
        )
    console.print("To label them in Label Studio:")
    console.print(f"  {ENV_SERVING}=true {ENV_DOCUMENT_ROOT}={root} label-studio start")
    console.print(
        f"  Create project > Labeling Setup > Code: paste {config_path.name}; "
        f"Data Import: upload {out.name}."
    )
    if n_predicted:
        console.print(
            f"  Settings > Annotation > Prelabeling: select model version '{name}' or the "
            "predictions stay hidden."
        )
    console.print(
        f"  Export > JSON, then: visionline label import EXPORT.json --parent {found.short_id}"
    )


def _print_import(result: LabelImport, parent_id: str) -> None:
    from rich.table import Table

    summary = result.summary
    table = Table(title=f"Label Studio → child of {parent_id}")
    table.add_column("change")
    table.add_column("images", justify="right")
    for (old, new), count in sorted(result.changes.items()):
        table.add_row(f"{old} → {new}", str(count))
    rows = [
        ("unchanged", result.n_unchanged),
        ("added (new images)", result.n_added),
        ("skipped (outside the root, unreadable or not an image)", len(result.skipped)),
        ("not found", len(result.unmatched)),
        ("conflicting duplicates", len(result.conflicts)),
        ("unlabelled tasks", summary.n_unlabelled),
        ("ties (left out)", summary.n_ties),
        ("unknown choices (left out)", summary.n_unknown),
        ("cancelled annotations", summary.n_cancelled),
    ]
    for label, count in rows:
        table.add_row(label, str(count), style=None if count else "dim")
    table.add_row("disagreements (listed below)", str(len(summary.disagreements)))
    if summary.agreement() is not None:
        table.add_row("agreement where several labelled", f"{summary.agreement():.0%}")
    console.print(table)
    issues = (
        summary.issues
        + summary.disagreements
        + result.skipped
        + result.unmatched
        + result.conflicts
    )
    for issue in issues[:20]:
        console.print(f"[yellow]issue:[/yellow] {issue}", highlight=False)
    if len(issues) > 20:
        console.print(f"[yellow]… and {len(issues) - 20} more issues (in the version metadata).")
    if result.version is None:
        console.print("No label changed and no image was added, so no new version was made.")
    else:
        console.print(
            f"[green]Created[/green] version {result.version.short_id} "
            f"'{result.version.name}' ({len(result.version.records)} images, "
            f"parent {parent_id})."
        )


def _import(
    project: Project,
    export_path: Path,
    parent: str,
    name: str | None,
    document_root: Path | None,
) -> None:
    from visionline.data import DatasetRepo
    from visionline.data._labelstudio import apply_export

    repo = DatasetRepo(project)
    parent_version = repo.get(parent)
    result = apply_export(
        repo,
        parent_version,
        export_path,
        project.config,
        name=name,
        document_root=document_root,
    )
    _print_import(result, parent_version.short_id)


@app.command("import")
def import_(
    export_file: Annotated[Path, typer.Argument(help="Label Studio JSON export.")],
    parent: Annotated[str, typer.Option(help="Dataset version the export was made from.")],
    name: Annotated[
        str | None, typer.Option(help="Name of the new version (default: <parent>-labelled).")
    ] = None,
    document_root: DocumentRootOption = None,
    project_dir: ProjectOption = None,
) -> None:
    """Make a new dataset version from a Label Studio export.

    Images map back by data.sha256, then by path; ground-truth annotations win, else the
    majority; ties, unknown choices and cancelled annotations are reported and recorded.
    """
    _import(load_project(project_dir), export_file, parent, name, document_root)


@app.command(
    "push",
    help="Create a Label Studio project for a dataset version and import its tasks; the "
    "project's model version is set to the predictions' one so they show at once."
    + _LABEL_STUDIO_NOTES,
)
def push(
    version: Annotated[str, typer.Argument(help="Dataset version id or unique prefix.")],
    api_key: ApiKeyOption,
    url: UrlOption = "http://localhost:8080",
    project_title: Annotated[
        str | None, typer.Option(help="Label Studio project title (default: the version).")
    ] = None,
    only_unlabelled: OnlyUnlabelledOption = False,
    predictions: Annotated[
        Path | None, typer.Option(help="JSON or CSV of model outputs.", show_default=False)
    ] = None,
    document_root: DocumentRootOption = None,
    model_version: ModelVersionOption = None,
    anomaly_model: AnomalyModelOption = None,
    project_dir: ProjectOption = None,
) -> None:
    """Create a Label Studio project for a dataset version and import its tasks."""
    project = load_project(project_dir)
    found, tasks, n_predicted, name = _tasks(
        project, version, document_root, only_unlabelled, predictions, model_version,
        anomaly_model,
    )
    push_tasks(project, found, tasks, n_predicted, name, url, api_key, project_title, document_root)


def _local_folder(tasks: list[dict[str, Any]], document_root: Path | None) -> Path | None:
    """The folder holding every local-files image of the tasks (for Label Studio's storage)."""
    import os
    from urllib.parse import parse_qs, urlsplit

    if document_root is None or not tasks:
        return None
    folders = {os.path.dirname(parse_qs(urlsplit(t["data"]["image"]).query)["d"][0]) for t in tasks}
    return document_root.resolve() / os.path.commonpath(sorted(folders))


def push_tasks(
    project: Project,
    version: Any,
    tasks: list[dict[str, Any]],
    n_predicted: int,
    model_version: str,
    url: str,
    api_key: str,
    title: str | None,
    document_root: Path | None = None,
) -> int:
    """Send tasks to the project of this title (reused when it exists, skipping images it
    already has) and print where to label them; returns the Label Studio project id."""
    from visionline.data._labelstudio import label_config_xml
    from visionline.data._labelstudio_server import LabelStudioServer

    server = LabelStudioServer(url, api_key)
    server.check()
    title = title or f"{project.config.name} {version.name} {version.short_id}"
    existing = server.find_project(title)
    if existing is not None:
        known = {t.get("data", {}).get("sha256") for t in server.export(int(existing.id))}
        fresh = [t for t in tasks if t["data"]["sha256"] not in known]
        n_predicted -= sum("predictions" in t for t in tasks if t not in fresh)
        tasks = fresh
    folder = _local_folder(tasks, document_root)
    project_id, created = server.push(
        title, label_config_xml(project.config), tasks, model_version, folder
    )
    console.print(
        f"[green]{'Created' if created else 'Reused'}[/green] Label Studio project {project_id} "
        f"'{title}' and imported {len(tasks)} new tasks ({n_predicted} with predictions): "
        f"{server.url}/projects/{project_id}"
    )
    parent = "V" if version.id.startswith("monitor-") else version.short_id
    console.print(
        f"When labelled: visionline label pull --project-id {project_id} --parent {parent}"
    )
    return project_id


@app.command("pull")
def pull(
    project_id: Annotated[int, typer.Option(help="Label Studio project id.")],
    parent: Annotated[str, typer.Option(help="Dataset version the tasks were made from.")],
    api_key: ApiKeyOption,
    url: UrlOption = "http://localhost:8080",
    name: Annotated[
        str | None, typer.Option(help="Name of the new version (default: <parent>-labelled).")
    ] = None,
    allow_partial: Annotated[
        bool,
        typer.Option(
            help="Make a version even when some tasks have no usable label yet (unlabelled, "
            "tied or naming unknown classes); they are listed and keep their old labels."
        ),
    ] = False,
    document_root: DocumentRootOption = None,
    project_dir: ProjectOption = None,
) -> None:
    """Export a Label Studio project and import its annotations as a new dataset version.

    The version's metadata records who labelled each image, when, and the share of annotators
    who agreed; disagreements are listed, ties and unknown classes are skipped and listed.
    """
    from visionline.data._labelstudio import read_export
    from visionline.data._labelstudio_server import LabelStudioServer
    from visionline.errors import DataError

    project = load_project(project_dir)
    server = LabelStudioServer(url, api_key)
    server.check()
    tasks = server.export(project_id)
    saved = project.cache_dir / "labelstudio" / f"project-{project_id}.json"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(tasks))
    console.print(f"Saved the export ({len(tasks)} tasks) to {saved}.")
    summary = read_export(saved, project.config)
    undecided = summary.n_tasks - len(summary.decisions)
    if undecided and not allow_partial:
        for issue in summary.issues[:20]:
            console.print(f"[yellow]issue:[/yellow] {issue}", highlight=False)
        raise DataError(
            f"{undecided} of {summary.n_tasks} tasks in Label Studio project {project_id} have "
            f"no usable label ({summary.n_unlabelled} unlabelled, {summary.n_ties} tied, "
            f"{summary.n_unknown} with unknown classes), so no version was made; finish them "
            "or pass --allow-partial."
        )
    _import(project, saved, parent, name, document_root)


app.command("select")(select_command)
