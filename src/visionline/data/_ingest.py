"""Ingest: hash, decode-validate, pHash and store every image, then check the set as a whole.

One bad file never stops an ingest: unreadable, truncated and decompression-bomb files are
skipped with their reason. Exact duplicates are stored once, near-duplicates flagged, the same
image under two labels left out and reported, and the class balance recorded. The report is
stored in the version's metadata so `data show` can repeat it later.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionline.data._manifest import ImageRecord
from visionline.data._phash import DEFAULT_MAX_DISTANCE, near_duplicate_pairs, phash
from visionline.data._sources import Candidate, scan_source
from visionline.data._store import sha256_hex
from visionline.errors import DataError, NotFoundError
from visionline.preprocessing import decode_image

if TYPE_CHECKING:
    from visionline.data._repo import DatasetRepo, DatasetVersion

_STORED_EXAMPLES = 50
"""How many entries of each issue list go into the version metadata (all are counted)."""


@dataclass
class IngestReport:
    """What an ingest did: the version, and every file that was skipped, merged or flagged."""

    version: DatasetVersion
    created: bool
    source_kind: str
    scanned: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready validation report (issue lists capped) that is stored with the version."""
        return {
            "source_kind": self.source_kind,
            "scanned": self.scanned,
            "kept": sum(self.counts.values()),
            "counts": self.counts,
            "imbalance_ratio": imbalance_ratio(self.counts),
            "skipped": len(self.skipped),
            "duplicates": len(self.duplicates),
            "near_duplicates": len(self.near_duplicates),
            "conflicts": len(self.conflicts),
            "notes": self.notes,
            "examples": {
                "skipped": self.skipped[:_STORED_EXAMPLES],
                "duplicates": self.duplicates[:_STORED_EXAMPLES],
                "near_duplicates": self.near_duplicates[:_STORED_EXAMPLES],
                "conflicts": self.conflicts[:_STORED_EXAMPLES],
            },
        }


def imbalance_ratio(counts: dict[str, int]) -> float | None:
    """Largest over smallest class count (None with fewer than two non-empty classes)."""
    values = [v for v in counts.values() if v > 0]
    return round(max(values) / min(values), 2) if len(values) > 1 else None


@dataclass
class _Processed:
    candidate: Candidate
    sha: str = ""
    size: int = 0
    width: int = 0
    height: int = 0
    mode: str = ""
    phash: int = 0
    mask_sha: str | None = None
    error: str | None = None
    mask_error: str | None = None


def _process(repo: DatasetRepo, candidate: Candidate) -> _Processed:
    """Read, hash, fully decode, pHash and store one image (and its mask)."""
    result = _Processed(candidate)
    try:
        if candidate.blob is not None:
            data = repo.blobs.get(candidate.blob, verify=True)
        else:
            data = candidate.file.read_bytes()
        image = decode_image(data)
    except (OSError, DataError, NotFoundError) as exc:
        result.error = _reason(exc)
        return result
    result.sha = sha256_hex(data)
    result.size = len(data)
    result.width, result.height = image.size
    result.mode = image.mode
    result.phash = phash(image)
    if candidate.blob is None:
        repo.blobs._put_known(result.sha, data)
    if candidate.mask is not None:
        try:
            mask_data = candidate.mask.read_bytes()
            mask = decode_image(mask_data)
            if mask.size != image.size:
                raise DataError(
                    f"mask is {mask.size[0]}x{mask.size[1]}, image {image.size[0]}x{image.size[1]}"
                )
        except (OSError, DataError) as exc:
            result.mask_error = _reason(exc)
        else:
            result.mask_sha = sha256_hex(mask_data)
            repo.blobs._put_known(result.mask_sha, mask_data)
    return result


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "decompression bomb" in text or "above the limit" in text:
        return "decompression bomb (too many pixels)"
    if "truncated" in text.lower():
        return "truncated image"
    if isinstance(exc, OSError):
        return f"unreadable file ({exc.strerror or type(exc).__name__})"
    if "no image format" in text or "cannot identify" in text:
        return "not an image"
    return text.split(";")[0]


def ingest(
    repo: DatasetRepo,
    source: Path,
    name: str | None,
    parent: str | None,
    label_map: dict[str, str] | None,
    masks: bool,
    show_progress: bool,
    max_distance: int = DEFAULT_MAX_DISTANCE,
) -> IngestReport:
    """Ingest `source` into a new version (or return the existing one with identical content).

    Masks (with `masks=True`): `X_mask.png` beside an image `X.*`, or `X.png` beside a non-PNG
    `X.*` (the magnetic-tile layout); masks are stored as blobs and never ingested as images.
    """
    started = time.perf_counter()
    parent_version = repo.get(parent) if parent else None
    scan = scan_source(source, repo.config, label_map, masks, repo.blobs)
    processed = _run(repo, scan.candidates, show_progress)

    skipped = list(scan.skipped)
    by_sha: dict[str, list[_Processed]] = defaultdict(list)
    for item in processed:
        if item.error is not None:
            skipped.append((item.candidate.rel, item.error))
            continue
        if item.mask_error is not None:
            skipped.append((str(item.candidate.mask), f"mask left out: {item.mask_error}"))
        by_sha[item.sha].append(item)

    base = {r.sha256: r for r in parent_version.records} if parent_version else {}
    records = list(base.values())
    duplicates: list[tuple[str, str]] = []
    conflicts: list[tuple[str, str]] = []
    new_hashes: dict[str, int] = {}
    for sha, items in by_sha.items():
        items.sort(key=lambda p: p.candidate.rel)
        labels = {(p.candidate.label, p.candidate.subtype) for p in items}
        if sha in base:
            labels.add((base[sha].label, base[sha].subtype))
        if len(labels) > 1:
            where = ", ".join(
                f"{p.candidate.rel}={_label(p.candidate.label, p.candidate.subtype)}" for p in items
            )
            if sha in base:
                where += f", {base[sha].path}={_label(base[sha].label, base[sha].subtype)} (parent, kept)"
            conflicts.append((sha[:12], where))
            continue
        first = base[sha].path if sha in base else items[0].candidate.rel
        duplicates.extend((p.candidate.rel, first) for p in (items if sha in base else items[1:]))
        new_hashes[sha] = items[0].phash
        if sha not in base:
            c = items[0]
            records.append(
                ImageRecord(
                    sha256=sha,
                    path=c.candidate.rel,
                    bytes=c.size,
                    width=c.width,
                    height=c.height,
                    mode=c.mode,
                    label=c.candidate.label,
                    subtype=c.candidate.subtype,
                    source=scan.kind + ":" + source.name,
                    split=c.candidate.split,
                    mask_sha256=c.mask_sha,
                )
            )
    repo.remember_phashes(new_hashes)
    known = repo.phashes()
    hashed = sorted((r.path, known[r.sha256]) for r in records if r.sha256 in known)
    near = [
        (hashed[i][0], hashed[j][0], d)
        for i, j, d in near_duplicate_pairs([h for _, h in hashed], max_distance)
    ]
    counts = _class_counts(repo, records)
    notes = list(scan.notes)
    notes.append(_DEFERRED_NOTE)
    missing = [c for c, n in counts.items() if n == 0]
    if missing:
        notes.append(f"No images for class {', '.join(missing)}; a model cannot learn it.")
    report = IngestReport(
        version=None,  # type: ignore[arg-type]  # set right below, after the summary exists
        created=False,
        source_kind=scan.kind,
        scanned=len(scan.candidates) + len(scan.skipped),
        skipped=sorted(skipped),
        duplicates=sorted(duplicates),
        near_duplicates=near,
        conflicts=sorted(conflicts),
        notes=notes,
        counts=counts,
    )
    if not records:
        example = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(
            f"No usable images in {source}: {len(skipped)} skipped{example}, "
            f"{len(conflicts)} with conflicting labels; fix or replace those files."
        )
    metadata = {
        "source": str(source.resolve()),
        "labels": {"provenance": scan.kind, "label_map": dict(label_map or {}), "masks": masks},
        "validation": report.summary(),
    }
    report.version, report.created = repo._create(records, name or source.stem, parent, metadata)
    report.seconds = time.perf_counter() - started
    return report


def _label(label: str, subtype: str | None) -> str:
    return f"{label}/{subtype}" if subtype else label


def _class_counts(repo: DatasetRepo, records: list[ImageRecord]) -> dict[str, int]:
    counts: Counter[str] = Counter(r.model_class for r in records)
    ordered = {name: counts.get(name, 0) for name in repo.config.model_classes()}
    ordered.update({k: v for k, v in counts.items() if k not in ordered})
    return ordered


_DEFERRED_NOTE = (
    "Rotated, cropped or relit copies are not looked for at ingest (it stays fast); "
    "'visionline data dedupe' groups them and 'data split' keeps each group in one split."
)
_CHUNK = 64
_MIN_FOR_PROCESSES = 512
_worker_repo: DatasetRepo | None = None
"""The repo a forked worker process uses (inherited from the parent at fork time)."""


def _process_chunk(chunk: list[Candidate]) -> list[_Processed]:
    return [_process(_worker_repo, candidate) for candidate in chunk]  # type: ignore[arg-type]


def _run(repo: DatasetRepo, candidates: list[Candidate], show_progress: bool) -> list[_Processed]:
    """Process candidates in parallel, in chunks.

    Decoding and pHashing hold the GIL for much of their time, so threads use about one core;
    large ingests into a local store fork one worker process per core instead. Remote (S3)
    stores and small ingests use threads: their clients must not cross a fork, and a fork
    costs more than it saves for a few hundred images.
    """
    global _worker_repo
    import multiprocessing

    cores = os.cpu_count() or 1
    chunks = [candidates[i : i + _CHUNK] for i in range(0, len(candidates), _CHUNK)]
    use_processes = (
        repo.blobs.is_local
        and cores > 1
        and len(candidates) >= _MIN_FOR_PROCESSES
        and "fork" in multiprocessing.get_all_start_methods()
    )
    if use_processes:
        _worker_repo = repo
        pool: Executor = ProcessPoolExecutor(
            max_workers=min(cores, 8), mp_context=multiprocessing.get_context("fork")
        )
        task = _process_chunk
    else:
        pool = ThreadPoolExecutor(max_workers=max(2, min(8, cores)))
        task = lambda chunk: [_process(repo, c) for c in chunk]
    with pool:
        results = pool.map(task, chunks)
        out: list[_Processed] = []
        if not show_progress:
            for chunk in results:
                out.extend(chunk)
            return out
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            bar = progress.add_task("Ingesting images", total=len(candidates))
            for chunk in results:
                out.extend(chunk)
                progress.advance(bar, len(chunk))
        return out
