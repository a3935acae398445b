"""Deterministic, stratified splits that keep every group of images inside one split.

A group is the set of images that show one object: the user's key (`--group-by`, see
`visionline.data._groups`) when given, else the pHash near-duplicate components. A group goes to
one split as a whole: otherwise two frames of the same tile end up in train and test and the test
score lies. Within each stratum (the group's majority label + subtype) every split first gets one
of the smallest groups, so a class with enough groups appears in every split; the other groups,
largest first (ties shuffled by the seed), go to the split furthest below its target.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from visionline.data._groups import group_ids
from visionline.data._manifest import ImageRecord
from visionline.data._phash import (
    DEFAULT_MAX_DISTANCE,
    groups_from_pairs,
    near_duplicate_pairs,
    phash,
)
from visionline.errors import ConfigError, DataError
from visionline.preprocessing import decode_image

if TYPE_CHECKING:
    from visionline.data._repo import DatasetRepo, DatasetVersion

__all__ = ["split_groups"]


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


def split_groups(
    groups: Sequence[str],
    classes: Sequence[str],
    fractions: Mapping[str, float],
    seed: int = 0,
    required: Sequence[str] | None = None,
) -> list[str]:
    """The split of each item, given its group key and class: every group inside one split.

    `fractions` maps split names (in order of preference for ties) to shares summing to 1; a
    split with share 0 gets nothing. Raises `DataError` if a class of `required` (one entry per
    item; by default `classes` itself) ends up with no images in a split of positive share: too few
    groups of it for the splits asked for. A finer class (a rare defect subtype) that is not
    required may then sit in fewer splits, as its few groups allow.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(groups):
        members[key].append(index)
    # A group joins the stratum of its rarest class, so a near-duplicate group that mixes a rare
    # defect with common good images still counts towards placing that defect in every split.
    frequency = Counter(classes)
    strata: dict[str, list[str]] = defaultdict(list)
    for key, indices in members.items():
        present = {classes[i] for i in indices}
        strata[min(present, key=lambda c: (frequency[c], c))].append(key)

    names = [s for s in fractions if fractions[s] > 0]
    out = [""] * len(groups)
    for stratum in sorted(strata):
        keys = strata[stratum]
        total = sum(len(members[k]) for k in keys)
        target = {s: round(total * fractions[s]) for s in names[1:]}
        target[names[0]] = total - sum(target.values())
        filled = dict.fromkeys(names, 0)

        def shuffle(key: str) -> str:
            return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

        ordered = sorted(keys, key=lambda k: (-len(members[k]), shuffle(k)))
        # One small group per split first (smallest share first), so no split lacks the class.
        first = ordered[::-1][: len(names)] if len(ordered) >= len(names) else []
        by_share = sorted(names, key=lambda s: (fractions[s], names.index(s)))
        chosen = dict(zip(first, by_share))
        for key in ordered:
            split = chosen.get(key) or max(
                names, key=lambda s: (target[s] - filled[s], fractions[s], -names.index(s))
            )
            filled[split] += len(members[key])
            for i in members[key]:
                out[i] = split
    must_cover = classes if required is None else required
    for name in sorted(set(must_cover)):
        items = [i for i, c in enumerate(must_cover) if c == name]
        present = {out[i] for i in items}
        empty = [s for s in names if s not in present]
        if empty:
            n_groups = len({groups[i] for i in items})
            raise DataError(
                f"Class '{name}' has no images in the {empty[0]} split: its {len(items)} images "
                f"form {n_groups} group(s) for {len(names)} splits; add images of that class, "
                f"group more finely, or lower the {empty[0]} fraction to 0."
            )
    return out


def _near_duplicate_groups(ordered: list[ImageRecord], hashes: dict[str, int]) -> list[int]:
    pairs = near_duplicate_pairs([hashes[r.sha256] for r in ordered], DEFAULT_MAX_DISTANCE)
    return groups_from_pairs(len(ordered), pairs)


def assign_splits(
    records: list[ImageRecord],
    hashes: dict[str, int],
    val: float,
    test: float,
    seed: int,
    group_by: str | None = None,
    calib: float = 0.0,
    near_groups: list[int] | None = None,
) -> tuple[list[ImageRecord], dict[str, Any]]:
    """Records with `split` set, and what the split guarantees (groups, groups shared, ...).

    `near_groups` (a group number per record in sha256 order, from `near_duplicate_report`)
    are the near-duplicate groups; without them, pHash components stand in.
    """
    ordered = sorted(records, key=lambda r: r.sha256)
    near = _near_duplicate_groups(ordered, hashes) if near_groups is None else near_groups
    near_keys = [f"near-duplicates/{ordered[g].path}" for g in near]
    if group_by is None:
        keys = near_keys
    else:
        keys = group_ids(
            [r.path for r in ordered],
            group_by,
            phashes=[hashes[r.sha256] for r in ordered],
            near_duplicates=near_keys,
        )
    fractions = {"train": 1.0 - val - calib - test, "val": val, "calib": calib, "test": test}
    # Stratified by model class (good and each defect subtype); good and defect must each reach
    # every split, while a subtype with fewer groups than splits sits in as many as it can.
    splits = split_groups(
        keys, [r.model_class for r in ordered], fractions, seed, required=[r.label for r in ordered]
    )
    out = [replace(r, split=s) for r, s in zip(ordered, splits)]

    splits_of: dict[str, set[str]] = defaultdict(set)
    for key, split in zip(keys, splits):
        splits_of[key].add(split)
    near_splits: dict[int, set[str]] = defaultdict(set)
    for g, split in zip(near, splits):
        near_splits[g].add(split)
    multi = {g for g, n in Counter(near).items() if n > 1}
    test_leaks = sum(
        1 for g, split in zip(near, splits) if split == "test" and len(near_splits[g]) > 1
    )
    summary = {
        "group_by": group_by or "near-duplicates",
        "groups": len(splits_of),
        "groups_shared": sum(1 for s in splits_of.values() if len(s) > 1),
        "near_duplicate_method": "pHash" if near_groups is None else "orb-affine-ransac",
        "near_duplicate_groups": len(multi),
        "near_duplicate_groups_shared": sum(1 for g in multi if len(near_splits[g]) > 1),
        "test_images_with_a_near_duplicate_elsewhere": test_leaks,
        "test_images": splits.count("test"),
    }
    return out, summary


def _near_groups(
    repo: DatasetRepo, records: list[ImageRecord], user_key: bool
) -> tuple[list[int] | None, list[str]]:
    """Near-duplicate groups (sha256 order) and notes; with a user key a refused (giant)
    grouping becomes a note, because the user's key decides the split."""
    from visionline.data._dedupe_store import near_duplicate_report

    try:
        report = near_duplicate_report(repo, records)
    except DataError as exc:
        if not user_key:
            raise
        return None, [f"near-duplicate groups not used: {exc}"]
    return report.group, report.notes


def split_version(
    repo: DatasetRepo,
    version_id: str,
    val: float,
    test: float,
    seed: int,
    group_by: str | None = None,
    calib: float = 0.0,
) -> DatasetVersion:
    """A child version of `version_id` with every image assigned to train, val, calib or test.

    `calib` (0 = none) holds images that only set the decision threshold, so the false-reject
    rate certified on them is not flattered by the split that also picked the epoch (val).
    """
    if not (0 <= val < 1 and 0 <= calib < 1 and 0 <= test < 1 and val + calib + test < 1):
        raise ConfigError(
            f"Split fractions val={val}, calib={calib} and test={test} must be in [0, 1) and sum "
            "below 1; lower them."
        )
    version = repo.get(version_id)
    hashes = record_phashes(repo, version.records)
    near_groups, notes = _near_groups(repo, version.records, group_by is not None)
    records, summary = assign_splits(
        version.records, hashes, val, test, seed, group_by, calib, near_groups
    )
    summary["notes"] = notes
    metadata = {
        "labels": version.metadata.get("labels", {}),
        "validation": version.metadata.get("validation", {}),
        "split": {
            "val": val,
            "test": test,
            "seed": seed,
            "near_duplicate_max_distance": DEFAULT_MAX_DISTANCE,
        }
        | ({"calib": calib} if calib > 0 else {})
        | summary,
    }
    return repo.create_version(records, f"{version.name}-split", version.id, metadata)
