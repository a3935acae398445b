"""Comparing, exporting and verifying dataset versions."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from visionline.data._manifest import ImageRecord
from visionline.data._sources import MASK_SUFFIX
from visionline.errors import DataError, IntegrityError, NotFoundError

if TYPE_CHECKING:
    from visionline.data._repo import DatasetRepo, DatasetVersion


@dataclass
class VersionDiff:
    """Images added, removed, relabelled (label or subtype changed) and moved between splits."""

    a: str
    b: str
    added: list[ImageRecord] = field(default_factory=list)
    removed: list[ImageRecord] = field(default_factory=list)
    relabelled: list[tuple[ImageRecord, ImageRecord]] = field(default_factory=list)
    resplit: list[tuple[ImageRecord, ImageRecord]] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.relabelled or self.resplit)


def diff_versions(a: DatasetVersion, b: DatasetVersion) -> VersionDiff:
    """What changed from version `a` to version `b`, matching images by content hash."""
    left = {r.sha256: r for r in a.records}
    right = {r.sha256: r for r in b.records}
    diff = VersionDiff(a.id, b.id)
    diff.added = sorted((right[s] for s in right.keys() - left.keys()), key=lambda r: r.path)
    diff.removed = sorted((left[s] for s in left.keys() - right.keys()), key=lambda r: r.path)
    for sha in sorted(left.keys() & right.keys(), key=lambda s: right[s].path):
        old, new = left[sha], right[sha]
        if (old.label, old.subtype) != (new.label, new.subtype):
            diff.relabelled.append((old, new))
        if old.split != new.split:
            diff.resplit.append((old, new))
    return diff


def _export_name(record: ImageRecord, taken: set[str]) -> str:
    name = PurePosixPath(record.path).name or record.sha256[:16]
    stem, suffix = os.path.splitext(name)
    if name in taken or stem.endswith(MASK_SUFFIX.removesuffix(".png")):
        stem = f"{stem}_{record.sha256[:8]}"
    name = stem + suffix
    taken.add(name)
    return name


def export_version(
    repo: DatasetRepo, version: DatasetVersion, directory: Path, masks: bool = False
) -> int:
    """Write images as an ImageFolder tree (`DIR/<split>/<class>/` or `DIR/<class>/`).

    The class folder is the model class (subtype, else label), so adding the export back gives
    the same labels. With `masks`, each mask is written beside its image as `<stem>_mask.png`.
    Returns the number of images written.
    """
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise DataError(
            f"Export target {directory} is not an empty folder; choose a new or empty one."
        )
    records = sorted(version.records, key=lambda r: (r.split or "", r.model_class, r.path))
    if any(r.split for r in records) and not all(r.split for r in records):
        raise DataError(
            f"Version {version.short_id} is only partly split; run 'visionline data split {version.short_id}' first."
        )
    taken: dict[Path, set[str]] = {}
    jobs: list[tuple[str, Path]] = []
    for record in records:
        folder = directory / (record.split or "") / record.model_class
        name = _export_name(record, taken.setdefault(folder, set()))
        jobs.append((record.sha256, folder / name))
        if masks and record.mask_sha256:
            jobs.append((record.mask_sha256, folder / (Path(name).stem + MASK_SUFFIX)))
    for folder in taken:
        folder.mkdir(parents=True, exist_ok=True)

    def write(job: tuple[str, Path]) -> None:
        sha, path = job
        path.write_bytes(repo.blobs.get(sha, verify=True))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, jobs))
    return len(records)


@dataclass
class VerifyReport:
    """Result of re-hashing every blob of a version (images and masks)."""

    version: str
    checked: int
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt


def verify_version(
    repo: DatasetRepo, version: DatasetVersion, show_progress: bool = False
) -> VerifyReport:
    """Re-read and re-hash every blob of `version`; lists the paths whose blob is missing or corrupt."""
    jobs = [(r.sha256, r.path) for r in version.records]
    jobs += [(r.mask_sha256, f"{r.path} (mask)") for r in version.records if r.mask_sha256]
    report = VerifyReport(version.id, len(jobs))

    def check(job: tuple[str, str]) -> tuple[str, str | None]:
        sha, path = job
        try:
            repo.blobs.get(sha, verify=True)
        except NotFoundError:
            return path, "missing"
        except IntegrityError:
            return path, "corrupt"
        return path, None

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = pool.map(check, jobs)
        if show_progress:
            from rich.progress import track

            results = track(results, total=len(jobs), description="Verifying blobs", transient=True)
        for path, problem in results:
            if problem == "missing":
                report.missing.append(path)
            elif problem == "corrupt":
                report.corrupt.append(path)
    report.missing.sort()
    report.corrupt.sort()
    return report
