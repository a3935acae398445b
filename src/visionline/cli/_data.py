"""`visionline data`: add, list, show, diff, split, export and verify dataset versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from visionline.cli._common import ProjectOption, console, load_project
from visionline.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from visionline.data import DatasetRepo, DatasetVersion, IngestReport

app = typer.Typer(
    help="Versioned image datasets: ingest with validation, splits, diff, export, verify.",
    no_args_is_help=True,
)

VersionArg = Annotated[str, typer.Argument(help="Dataset version id or a unique prefix of it.")]
_SHOWN = 10


def _repo(project: Path | None) -> DatasetRepo:
    from visionline.data import DatasetRepo

    return DatasetRepo(load_project(project))


def _parse_map(entries: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for entry in entries:
        folder, sep, target = entry.partition("=")
        if not sep or not folder.strip() or not target.strip():
            raise ConfigError(
                f"--map '{entry}' is not FOLDER=LABEL or FOLDER=LABEL/SUBTYPE; write e.g. --map ok=good."
            )
        mapping[folder.strip()] = target.strip()
    return mapping


@app.command()
def add(
    source: Annotated[
        Path,
        typer.Argument(
            help="Image folder (class folders, optional train/val/test), CSV or Label Studio JSON export."
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="Version name (default: the source's name).")
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option(help="Version to extend: the new one holds its images plus these."),
    ] = None,
    label_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="FOLDER=LABEL or FOLDER=LABEL/SUBTYPE, e.g. --map MT_Free=good --map MT_Crack=defect/crack; repeatable.",
        ),
    ] = None,
    masks: Annotated[
        bool,
        typer.Option(
            "--masks", help="Attach X_mask.png, or X.png beside a non-PNG X.*, as the image's mask."
        ),
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Ingest images as a new immutable version (hash, validate, dedupe, store)."""
    repo = _repo(project)
    report = repo.add(
        source,
        name=name,
        parent=parent,
        label_map=_parse_map(label_map or []),
        masks=masks,
        show_progress=True,
    )
    _print_report(report)


def _print_report(report: IngestReport) -> None:
    from rich.table import Table

    version = report.version
    table = Table(
        title=f"Validation of {report.source_kind} source ({report.scanned} files)",
        title_justify="left",
    )
    table.add_column("check")
    table.add_column("count", justify="right")
    table.add_column("examples", overflow="fold")
    rows = [
        (
            "skipped (unreadable, truncated, bomb, missing)",
            report.skipped,
            lambda s: f"{s[0]}: {s[1]}",
        ),
        ("exact duplicates (stored once)", report.duplicates, lambda d: f"{d[0]} = {d[1]}"),
        (
            "near-duplicates (pHash)",
            report.near_duplicates,
            lambda n: f"{n[0]} ~ {n[1]} (d={n[2]})",
        ),
        ("conflicting labels (left out)", report.conflicts, lambda c: f"{c[0]}: {c[1]}"),
    ]
    for title, items, fmt in rows:
        style = "yellow" if items else "green"
        examples = "\n".join(fmt(i) for i in items[:3]) + (
            f"\n… {len(items) - 3} more" if len(items) > 3 else ""
        )
        table.add_row(title, f"[{style}]{len(items)}[/{style}]", examples)
    console.print(table)
    _print_counts(report.counts)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    verb = "Created" if report.created else "Unchanged content; existing"
    console.print(
        f"[green]{verb}[/green] version [bold]{version.short_id}[/bold] '{version.name}': "
        f"{version.n_images} images ({report.images_per_second:,.0f} files/s)"
    )


def _print_counts(counts: dict[str, int], splits: dict[str, dict[str, int]] | None = None) -> None:
    from rich.table import Table

    from visionline.data import SPLITS
    from visionline.data._ingest import imbalance_ratio

    total = sum(counts.values()) or 1
    ratio = imbalance_ratio(counts)
    table = Table(title=f"Classes (imbalance {ratio if ratio else '-'}:1)", title_justify="left")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    split_names = sorted(splits or {}, key=lambda s: (*SPLITS, "unsplit").index(s))
    for split in split_names:
        table.add_column(split, justify="right")
    for name, count in counts.items():
        style = "red" if count == 0 else ""
        cells = [str((splits or {})[s].get(name, 0)) for s in split_names]
        table.add_row(
            f"[{style}]{name}[/{style}]" if style else name,
            str(count),
            f"{count / total:.1%}",
            *cells,
        )
    console.print(table)


@app.command("list")
def list_(project: ProjectOption = None) -> None:
    """All dataset versions, oldest first."""
    from rich.table import Table

    versions = _repo(project).list()
    if not versions:
        console.print("No dataset versions yet; add one with: visionline data add IMAGES_DIR")
        return
    table = Table()
    for column in ("id", "name", "images", "parent", "created"):
        table.add_column(column, justify="right" if column == "images" else "left")
    for v in versions:
        table.add_row(v.short_id, v.name, str(v.n_images), (v.parent or "")[:12], v.created_at)
    console.print(table)


def _class_counts(repo: DatasetRepo, version: DatasetVersion) -> dict[str, int]:
    counts = version.class_counts()
    ordered = {c: counts.get(c, 0) for c in repo.config.model_classes()}
    ordered.update({k: v for k, v in counts.items() if k not in ordered})
    return ordered


@app.command()
def show(version: VersionArg, project: ProjectOption = None) -> None:
    """Class/subtype and split counts, image sizes and the validation summary of a version."""
    import numpy as np

    repo = _repo(project)
    v = repo.get(version)
    records = v.records
    console.print(f"[bold]{v.id}[/bold]  '{v.name}'  created {v.created_at}")
    console.print(
        f"parent: {v.parent or '-'}   images: {v.n_images}   masks: {sum(1 for r in records if r.mask_sha256)}"
    )
    splits: dict[str, dict[str, int]] = {}
    for r in records:
        per = splits.setdefault(r.split or "unsplit", {})
        per[r.model_class] = per.get(r.model_class, 0) + 1
    _print_counts(_class_counts(repo, v), splits)
    if records:
        w = np.array([r.width for r in records])
        h = np.array([r.height for r in records])
        kb = np.array([r.bytes for r in records]) / 1024
        modes = ", ".join(f"{m} {n}" for m, n in sorted(_count(r.mode for r in records).items()))
        console.print(
            f"size: width {w.min()}–{w.max()} (median {int(np.median(w))}), height {h.min()}–{h.max()} "
            f"(median {int(np.median(h))}), {kb.mean():.1f} KiB mean; modes: {modes}"
        )
    validation = v.metadata.get("validation")
    if validation:
        console.print(
            "validation: "
            + ", ".join(
                f"{k.replace('_', ' ')} {validation.get(k, 0)}"
                for k in (
                    "scanned",
                    "skipped",
                    "duplicates",
                    "near_duplicates",
                    "conflicts",
                )
            )
        )
        for note in validation.get("notes", []):
            console.print(f"[yellow]note:[/yellow] {note}")
    if "split" in v.metadata:
        s = v.metadata["split"]
        console.print(
            f"split: val {s['val']}, calib {s.get('calib', 0)}, test {s['test']}, seed {s['seed']}; "
            f"{_group_summary(s)}",
            highlight=False,
        )


def _count(values: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:  # type: ignore[attr-defined]
        counts[value] = counts.get(value, 0) + 1
    return counts


@app.command()
def diff(
    a: VersionArg,
    b: Annotated[str, typer.Argument(help="Second version id or prefix.")],
    project: ProjectOption = None,
) -> None:
    """Images added, removed, relabelled and moved between splits from A to B."""
    d = _repo(project).diff(a, b)
    console.print(
        f"{a} → {b}: [green]+{len(d.added)} added[/green], [red]-{len(d.removed)} removed[/red], "
        f"[yellow]{len(d.relabelled)} relabelled[/yellow], {len(d.resplit)} moved between splits"
    )
    for r in d.added[:_SHOWN]:
        console.print(f"  [green]+[/green] {r.path} ({r.model_class})", highlight=False)
    for r in d.removed[:_SHOWN]:
        console.print(f"  [red]-[/red] {r.path} ({r.model_class})", highlight=False)
    for old, new in d.relabelled[:_SHOWN]:
        console.print(
            f"  [yellow]~[/yellow] {new.path}: {old.model_class} → {new.model_class}",
            highlight=False,
        )
    hidden = sum(max(0, len(x) - _SHOWN) for x in (d.added, d.removed, d.relabelled))
    if hidden:
        console.print(f"  … and {hidden} more")


@app.command()
def split(
    version: VersionArg,
    val: Annotated[
        float, typer.Option(help="Fraction for validation (early stopping, tuning).")
    ] = 0.15,
    test: Annotated[
        float, typer.Option(help="Fraction for test (measured once, at the end).")
    ] = 0.15,
    calib: Annotated[
        float,
        typer.Option(
            help="Fraction for calibration: the split that sets the decision threshold, so the "
            "certified false-reject rate does not reuse val (0 = none; val sets it then).",
        ),
    ] = 0.0,
    seed: Annotated[
        int, typer.Option(help="Shuffle seed; the same seed gives the same split.")
    ] = 0,
    group_by: Annotated[
        str | None,
        typer.Option(
            help="Images of one object stay in one split: 'regex:PATTERN' (first capture group "
            "of the path), 'sequence:PATTERN:MAXGAP' (frame numbers at most MAXGAP apart in one "
            "folder, e.g. 'sequence:num_(\\d+):400' for the magnetic tiles), "
            "'csv:FILE:PATHCOLUMN:GROUPCOLUMN', 'near-duplicates' (the default: copies that are "
            "rotated, flipped, cropped or relit; see 'data dedupe') or 'phash' (near-identical only).",
        ),
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Stratified train/val/test split (plus calib with --calib) as a new child version; every
    group stays in one split."""
    from visionline.data import SPLITS

    repo = _repo(project)
    v = repo.split(version, val=val, test=test, seed=seed, group_by=group_by, calib=calib)
    counts = v.split_counts()
    console.print(
        f"[green]Split[/green] into version [bold]{v.short_id}[/bold] '{v.name}': "
        + ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS if s != "calib" or calib > 0),
        highlight=False,
    )
    console.print(_group_summary(v.metadata["split"]), highlight=False)


def _group_summary(s: dict[str, Any]) -> str:
    """What a split guarantees: groups by which key, how many straddle splits, and the leak rate
    as near-duplicate detection sees it (test images with a copy in another split)."""
    if "groups" not in s:
        return f"{s['near_duplicate_groups']} near-duplicate groups kept within one split"
    line = (
        f"groups by {s['group_by']}: {s['groups']}, shared between splits: {s['groups_shared']} "
        f"(leak rate {s['groups_shared'] / max(s['groups'], 1):.0%})"
    )
    if s["group_by"] != "near-duplicates":
        line += (
            f"; near-duplicate groups split by this key: {s['near_duplicate_groups_shared']} "
            f"of {s['near_duplicate_groups']}"
        )
    if "test_images" in s:
        leaks = s["test_images_with_a_near_duplicate_elsewhere"]
        line += (
            f"; test images with a detected near-duplicate in another split: {leaks} of "
            f"{s['test_images']} ({leaks / max(s['test_images'], 1):.1%}, "
            f"{s['near_duplicate_method']})"
        )
    for note in s.get("notes", []):
        line += f"\nnote: {note}"
    return line


@app.command()
def dedupe(
    version: VersionArg,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for near-duplicates.png and .html (default: reports/dedupe-ID)."),
    ] = None,
    max_group_share: Annotated[
        float,
        typer.Option(help="Refuse a grouping whose largest group holds more than this share."),
    ] = 0.25,
    shown: Annotated[int, typer.Option("--show", help="Groups listed in the terminal.")] = 10,
    project: ProjectOption = None,
) -> None:
    """Near-duplicate groups (rotated, flipped, cropped, relit copies), largest first, with a
    contact sheet PNG and an HTML page to check them."""
    from rich.table import Table

    from visionline.data._dedupe import DedupeConfig
    from visionline.data._dedupe_sheet import write_contact_sheet, write_html
    from visionline.data._dedupe_store import near_duplicate_report

    if not 0 < max_group_share <= 1:
        raise ConfigError(f"--max-group-share {max_group_share} must be in (0, 1]; e.g. 0.25.")
    repo = _repo(project)
    v = repo.get(version)
    report = near_duplicate_report(
        repo, v.records, DedupeConfig(max_group_share=max_group_share), show_progress=True
    )
    groups = report.groups()
    table = Table(
        title=f"Near-duplicate groups of {v.short_id} '{v.name}' ({len(groups)} groups, "
        f"{sum(len(g) for g in groups)} of {v.n_images} images)",
        title_justify="left",
    )
    for column in ("#", "images", "classes", "splits", "paths"):
        table.add_column(column, overflow="fold")
    for i, g in enumerate(groups[:shown]):
        more = f" … {len(g) - 3} more" if len(g) > 3 else ""
        table.add_row(
            str(i + 1),
            str(len(g)),
            ", ".join(sorted({r.model_class for r in g})),
            ", ".join(sorted({r.split or "-" for r in g})),
            ", ".join(r.path for r in g[:3]) + more,
        )
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    folder = out or repo.project.reports_dir / f"dedupe-{v.short_id}"
    sheet = write_contact_sheet(repo, report, folder / "near-duplicates.png")
    page = write_html(
        report, sheet, folder / "near-duplicates.html", f"Near-duplicates of {v.name}"
    )
    console.print(
        f"{report.computed} images described now, the rest from the cache; {report.seconds:.1f} s. "
        f"Report: {page}" + (f", contact sheet: {sheet}" if sheet else ""),
        highlight=False,
    )


@app.command()
def export(
    version: VersionArg,
    directory: Annotated[
        Path, typer.Argument(help="New or empty folder to write the ImageFolder tree into.")
    ],
    masks: Annotated[
        bool,
        typer.Option("--masks", help="Also write masks as <stem>_mask.png beside their images."),
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Write a version as DIR/<split>/<class>/ (or DIR/<class>/ when unsplit)."""
    repo = _repo(project)
    count = repo.export(version, directory, masks=masks)
    console.print(f"[green]Exported[/green] {count} images to {directory}")


@app.command()
def verify(version: VersionArg, project: ProjectOption = None) -> None:
    """Re-hash every blob of a version; exits non-zero if any is missing or corrupt."""
    repo = _repo(project)
    report = repo.verify(version, show_progress=True)
    for path in report.missing[:_SHOWN]:
        console.print(f"  [red]missing[/red] {path}", highlight=False)
    for path in report.corrupt[:_SHOWN]:
        console.print(f"  [red]corrupt[/red] {path}", highlight=False)
    if not report.ok:
        raise IntegrityError(
            f"{len(report.missing)} blobs missing and {len(report.corrupt)} corrupt of {report.checked} "
            "checked; re-add the source images with 'visionline data add' to restore them."
        )
    console.print(
        f"[green]OK[/green]: all {report.checked} blobs of {report.version[:12]} match their hashes"
    )
