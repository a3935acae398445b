"""Deterministic, stratified train/val/test splits that keep near-duplicates together.

Images whose pHashes are within the near-duplicate distance form one group (connected
components), and a group goes to one split as a whole: otherwise two frames of the same tile
end up in train and test and the test score lies. Within each stratum (label + subtype) groups
are shuffled with the seed, largest first, and each goes to the split furthest below its target.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from visionline.data._manifest import SPLITS, ImageRecord
from visionline.data._phash import (
    DEFAULT_MAX_DISTANCE,
    groups_from_pairs,
    near_duplicate_pairs,
    phash,
)
from visionline.errors import ConfigError
from visionline.preprocessing import decode_image

if TYPE_CHECKING:
    from visionline.data._repo import DatasetRepo, DatasetVersion


def record_phashes(repo: DatasetRepo, records: list[ImageRecord]) -> dict[str, int]:
    """pHash of every record, from the cache or computed from its blob (and then cached)."""
    known = repo.phashes()
    missing = [r.sha256 for r in records if r.sha256 not in known]
    if missing:
        with ThreadPoolExecutor(max_workers=8) as pool:
            computed = dict(
                zip(
                    missing, pool.map(lambda sha: phash(decode_image(repo.blobs.get(sha))), missing)
                )
            )
        repo.remember_phashes(computed)
        known.update(computed)
    return {r.sha256: known[r.sha256] for r in records}


def assign_splits(
    records: list[ImageRecord],
    hashes: dict[str, int],
    val: float,
    test: float,
    seed: int,
    max_distance: int = DEFAULT_MAX_DISTANCE,
) -> tuple[list[ImageRecord], int]:
    """Records with `split` set, and the number of near-duplicate groups (size > 1) kept together."""
    ordered = sorted(records, key=lambda r: r.sha256)
    pairs = near_duplicate_pairs([hashes[r.sha256] for r in ordered], max_distance)
    group_of = groups_from_pairs(len(ordered), pairs)
    members: dict[int, list[ImageRecord]] = defaultdict(list)
    for record, group in zip(ordered, group_of):
        members[group].append(record)

    strata: dict[tuple[str, str], list[list[ImageRecord]]] = defaultdict(list)
    for group in members.values():
        votes = Counter((r.label, r.subtype or "") for r in group)
        stratum = min(votes, key=lambda key: (-votes[key], key))
        strata[stratum].append(group)

    fractions = {"train": 1.0 - val - test, "val": val, "test": test}
    out: list[ImageRecord] = []
    for stratum in sorted(strata):
        groups = strata[stratum]
        total = sum(len(g) for g in groups)
        target = {"val": round(total * val), "test": round(total * test)}
        target["train"] = total - target["val"] - target["test"]
        filled = dict.fromkeys(SPLITS, 0)
        key = lambda g: (-len(g), hashlib.sha256(f"{seed}:{g[0].sha256}".encode()).hexdigest())
        for group in sorted(groups, key=key):
            split = max(
                SPLITS,
                key=lambda s: (target[s] - filled[s], fractions[s], -SPLITS.index(s)),
            )
            filled[split] += len(group)
            out.extend(replace(r, split=split) for r in group)
    return out, sum(1 for g in members.values() if len(g) > 1)


def split_version(
    repo: DatasetRepo, version_id: str, val: float, test: float, seed: int
) -> DatasetVersion:
    """A child version of `version_id` with every image assigned to train, val or test."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(
            f"Split fractions val={val} and test={test} must be in [0, 1) and sum below 1; lower them."
        )
    version = repo.get(version_id)
    hashes = record_phashes(repo, version.records)
    records, groups = assign_splits(version.records, hashes, val, test, seed)
    metadata = {
        "labels": version.metadata.get("labels", {}),
        "validation": version.metadata.get("validation", {}),
        "split": {
            "val": val,
            "test": test,
            "seed": seed,
            "near_duplicate_max_distance": DEFAULT_MAX_DISTANCE,
            "near_duplicate_groups": groups,
        },
    }
    return repo.create_version(records, f"{version.name}-split", version.id, metadata)
