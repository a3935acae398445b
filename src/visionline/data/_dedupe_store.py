"""Near-duplicate groups of a dataset version's records, with features cached in the store.

Features are computed once per blob (content hash) and kept under the dataset root, so a new
version only describes its new blobs; the groups found among a set of blobs are kept with them,
so splitting or deduplicating the same images again skips the matching. An image too small to
describe, and a cache that cannot be read, each produce a note rather than a failure; nothing
already stored changes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from visionline.data._dedupe import DedupeConfig, NearDuplicates, find_groups
from visionline.data._dedupe_features import (
    FeatureCache,
    FeatureTable,
    ImageTooSmall,
    concat,
    image_features,
)
from visionline.data._manifest import ImageRecord
from visionline.preprocessing import decode_image

if TYPE_CHECKING:
    from visionline.data._repo import DatasetRepo

__all__ = ["DedupeReport", "group_keys", "near_duplicate_report", "record_features"]


@dataclass
class DedupeReport:
    """Near-duplicate groups of `records` (sorted by sha256); `group[i]` is record i's group."""

    records: list[ImageRecord]
    group: list[int]
    pairs: list[tuple[int, int, int]] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    computed: int = 0
    candidates: int = 0

    def groups(self) -> list[list[ImageRecord]]:
        """Groups of two or more records, largest first."""
        return [
            [self.records[i] for i in members] for members in NearDuplicates(self.group).groups()
        ]

    def summary(self) -> dict[str, object]:
        """JSON-ready counts for a version's metadata."""
        groups = self.groups()
        return {
            "method": "orb-affine-ransac",
            "candidate_pairs": self.candidates,
            "groups": len(groups),
            "images_in_groups": sum(len(g) for g in groups),
            "largest": len(groups[0]) if groups else 0,
            "too_small": len(self.too_small),
            "examples": [[r.path for r in g[:5]] for g in groups[:10]],
        }


def _describe(repo: DatasetRepo, record: ImageRecord) -> FeatureTable | str:
    try:
        return image_features(decode_image(repo.blobs.get(record.sha256)), record.path)
    except ImageTooSmall as exc:
        return str(exc)


def record_features(
    repo: DatasetRepo, records: list[ImageRecord], show_progress: bool = False
) -> tuple[dict[str, str], FeatureCache, int]:
    """Describe every record the cache lacks: messages for images too small to describe, the
    cache (which now holds all the others; its `message` says if the old one was unreadable) and
    how many blobs were described now."""
    cache = FeatureCache(repo.root)
    message = cache.message
    known = cache.known()
    unique = {r.sha256: r for r in records if r.sha256 not in known}
    missing = sorted(unique.values(), key=lambda r: r.sha256)
    too_small: dict[str, str] = {}
    fresh_shas: list[str] = []
    fresh: list[FeatureTable] = []
    if missing:
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda r: _describe(repo, r), missing)
            if show_progress:
                from rich.progress import track

                results = track(
                    results, total=len(missing), description="Describing images", transient=True
                )
            for record, result in zip(missing, results):
                if isinstance(result, str):
                    too_small[record.sha256] = result
                else:
                    fresh_shas.append(record.sha256)
                    fresh.append(result)
        cache.add(fresh_shas, concat(fresh))
    cache.message = message
    return too_small, cache, len(missing)


def _phash_pairs(
    repo: DatasetRepo, ordered: list[ImageRecord], usable: list[int]
) -> list[tuple[int, int]]:
    """Pairs (positions in `usable`) of nearly pixel-identical images, which always join."""
    from visionline.data._phash import near_duplicate_pairs
    from visionline.data._split import record_phashes

    records = [ordered[i] for i in usable]
    hashes = record_phashes(repo, records)
    return [(i, j) for i, j, _ in near_duplicate_pairs([hashes[r.sha256] for r in records])]


_GROUPING_CODE = ("_dedupe.py", "_dedupe_retrieval.py", "_dedupe_verify.py", "_phash.py")


@functools.cache
def _grouping_code_digest() -> str:
    """sha256 of the grouping code, read once per process."""
    digest = hashlib.sha256()
    here = os.path.dirname(__file__)
    for name in _GROUPING_CODE:
        with open(os.path.join(here, name), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def _groups_key(shas: list[str], config: DedupeConfig) -> str:
    """What the groups of a set of blobs depend on: the blobs (in order), the settings and the
    code that groups them, so a changed detector never reads an old result."""
    what = [shas, dataclasses.asdict(config), _grouping_code_digest()]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def _load_groups(path: os.PathLike[str]) -> NearDuplicates | None:
    """The groups saved by an earlier report of the same blobs, or None (absent, unreadable)."""
    try:
        with open(path) as handle:
            saved = json.load(handle)
        return NearDuplicates(
            saved["group"], [tuple(p) for p in saved["pairs"]], saved["candidates"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_groups(path: os.PathLike[str], found: NearDuplicates) -> None:
    """Keep the groups beside the features they came from (a cache rewrite drops them), so a
    second split or dedupe of the same images skips the matching; best effort."""
    staging = f"{path}.{os.getpid()}.tmp"
    try:
        with open(staging, "w") as handle:
            json.dump(dataclasses.asdict(found), handle)
        os.replace(staging, path)
    except OSError:
        try:
            os.remove(staging)
        except OSError:
            pass


def near_duplicate_report(
    repo: DatasetRepo,
    records: list[ImageRecord],
    config: DedupeConfig | None = None,
    show_progress: bool = False,
) -> DedupeReport:
    """Near-duplicate groups of `records` (see `visionline.data._dedupe`), features cached;
    pHash pairs (near pixel-identical) always join.

    Raises `DataError` when one group would hold more than `config.max_group_share` of them.
    """
    started = time.perf_counter()
    ordered = sorted(records, key=lambda r: r.sha256)
    too_small, cache, computed = record_features(repo, ordered, show_progress)
    notes = [cache.message] if cache.message else []
    usable = [i for i, r in enumerate(ordered) if r.sha256 not in too_small]
    config = config or DedupeConfig()
    usable_shas = [ordered[i].sha256 for i in usable]
    saved = cache.dir / f"groups-{_groups_key(usable_shas, config)}.json"
    found = _load_groups(saved)
    if found is None:
        found = find_groups(
            cache.table(usable_shas), config, must_link=_phash_pairs(repo, ordered, usable)
        )
        _save_groups(saved, found)
    group = list(range(len(ordered)))
    for position, g in enumerate(found.group):
        group[usable[position]] = usable[g]
    pairs = [(usable[i], usable[j], k) for i, j, k in found.pairs]
    small = [ordered[i].path for i in range(len(ordered)) if ordered[i].sha256 in too_small]
    if small:
        notes.append(
            f"{len(small)} image(s) too small to compare for near-duplicates, e.g. "
            f"{too_small[next(r.sha256 for r in ordered if r.path == small[0])]}"
        )
    return DedupeReport(
        ordered,
        group,
        pairs,
        small,
        notes,
        time.perf_counter() - started,
        computed,
        found.candidates,
    )


def group_keys(report: DedupeReport) -> list[str]:
    """A group key per record of `report` (its group's first path)."""
    return [f"near-duplicates/{report.records[g].path}" for g in report.group]
