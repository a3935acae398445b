"""Group keys that say which images show the same physical object.

A split that keeps every group inside one split cannot put one object in train and test. The
key comes from a spec, because only the user knows what "the same object" means in their folder:

- ``regex:PATTERN``: the first capture group (else the whole match) of the path;
- ``sequence:PATTERN:MAXGAP``: PATTERN captures a frame number; within each folder, frames sorted
  by number join one group while neighbours are at most MAXGAP apart (an object shot in several
  runs with neighbouring frame numbers stays together);
- ``csv:FILE:PATHCOLUMN:GROUPCOLUMN``: a column of a CSV file, looked up by path (a path in the
  file may be a trailing part of the image's path, e.g. its name);
- ``near-duplicates``: near-duplicate groups that survive rotation, flips, zoom, crop, shear and
  relighting (ORB keypoints verified by a RANSAC affine fit, see `visionline.data._dedupe`);
- ``phash``: connected components of pHash pairs (Hamming distance <= 4), which only see copies
  that are nearly pixel-identical (kept to compare with).

The magnetic tiles use ``sequence:num_(\\d+):400`` (`TILE_SPEC`): each tile was shot under runs
exp1..exp6 with frame numbers 10-300 apart (tiles of different class folders interleave, so the
folder matters). MAXGAP 400 gives 196 groups of the 1,344 images (142 of exactly six, the largest
24); a smaller gap cuts tiles apart (at 150, 10 group boundaries fall inside an exp1..exp6 run),
a larger one chains tiles shot back to back (at 1000 the largest group holds 41 images).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from visionline.errors import ConfigError, DataError

__all__ = ["DEFAULT_MAX_GROUP_SHARE", "TILE_SPEC", "group_ids"]

TILE_SPEC = r"sequence:num_(\d+):400"
"""Group spec of the magnetic-tile data set: one group per physical tile (see the module doc)."""

DEFAULT_MAX_GROUP_SHARE = 0.25
"""Largest share of the images one group may hold before the grouping is refused as a chain."""

_MIN_IMAGES_FOR_SHARE_CHECK = 20
_FORMS = (
    "regex:PATTERN, sequence:PATTERN:MAXGAP, csv:FILE:PATHCOLUMN:GROUPCOLUMN, near-duplicates "
    "or phash"
)


def group_ids(
    paths: Sequence[str],
    spec: str,
    *,
    phashes: Sequence[int] | None = None,
    near_duplicates: Sequence[str] | None = None,
    max_group_share: float = DEFAULT_MAX_GROUP_SHARE,
) -> list[str]:
    """One group id per path, formed by `spec` (see the module doc).

    `phashes` (one per path) spares reading the images for ``phash``, `near_duplicates` (a group
    key per path) for ``near-duplicates``. A grouping whose
    largest group holds more than `max_group_share` of 20 or more images is refused, because a
    key that chains unrelated images into one giant group makes a stratified split impossible.
    """
    if not paths:
        return []
    kind, _, rest = spec.partition(":")
    if kind == "regex" and rest:
        ids = _regex_ids(paths, spec, _compile(rest, spec))
    elif kind == "sequence" and rest:
        ids = _sequence_ids(paths, spec, rest)
    elif kind == "csv" and rest:
        ids = _csv_ids(paths, spec, rest)
    elif spec == "near-duplicates":
        ids = list(near_duplicates) if near_duplicates is not None else _similar_ids(paths)
    elif spec == "phash":
        ids = _near_duplicate_ids(paths, phashes)
    else:
        raise ConfigError(
            f"Group spec '{spec}' is not one of {_FORMS}; write e.g. --group-by 'regex:^(\\w+)_'."
        )
    _check_share(ids, spec, max_group_share)
    return ids


def _compile(pattern: str, spec: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"Group spec '{spec}' has an invalid regular expression ({exc}); fix the pattern."
        ) from exc


def _no_match(spec: str, unmatched: list[str], total: int) -> DataError:
    return DataError(
        f"Group spec '{spec}' finds no group key in {len(unmatched)} of {total} paths, "
        f"e.g. '{unmatched[0]}'; change the spec so that it matches every path."
    )


def _regex_ids(paths: Sequence[str], spec: str, pattern: re.Pattern[str]) -> list[str]:
    ids: list[str] = []
    unmatched: list[str] = []
    for path in paths:
        match = pattern.search(path)
        if match is None:
            unmatched.append(path)
            continue
        key = next((g for g in match.groups() if g is not None), match.group(0))
        ids.append(key)
    if unmatched:
        raise _no_match(spec, unmatched, len(paths))
    return ids


def _sequence_ids(paths: Sequence[str], spec: str, rest: str) -> list[str]:
    pattern_text, sep, gap_text = rest.rpartition(":")
    try:
        max_gap = int(gap_text)
    except ValueError:
        max_gap = -1
    if not sep or not pattern_text or max_gap < 0:
        raise ConfigError(
            f"Group spec '{spec}' is not sequence:PATTERN:MAXGAP with a whole MAXGAP >= 0; "
            "write e.g. 'sequence:num_(\\d+):400'."
        )
    pattern = _compile(pattern_text, spec)
    frames: dict[str, list[tuple[int, int]]] = defaultdict(list)
    unmatched: list[str] = []
    for index, path in enumerate(paths):
        match = pattern.search(PurePosixPath(path).name)
        digits = next((g for g in match.groups() if g is not None), None) if match else None
        if digits is None or not digits.isdigit():
            unmatched.append(path)
            continue
        frames[str(PurePosixPath(path).parent)].append((int(digits), index))
    if unmatched:
        raise _no_match(spec, unmatched, len(paths))
    ids = [""] * len(paths)
    for folder, members in frames.items():
        members.sort()
        start = members[0][0]
        previous = start
        for frame, index in members:
            if frame - previous > max_gap:
                start = frame
            previous = frame
            ids[index] = f"{folder}/{start}"
    return ids


def _csv_ids(paths: Sequence[str], spec: str, rest: str) -> list[str]:
    parts = rest.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ConfigError(
            f"Group spec '{spec}' is not csv:FILE:PATHCOLUMN:GROUPCOLUMN; "
            "write e.g. 'csv:objects.csv:path:object_id'."
        )
    file, path_column, group_column = parts
    try:
        with Path(file).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in (path_column, group_column) if c not in columns]
            if missing:
                raise ConfigError(
                    f"CSV {file} of group spec '{spec}' has no column {missing[0]!r} "
                    f"(it has {', '.join(columns) or 'none'}); name one of its columns."
                )
            table = {
                PurePosixPath(row[path_column].replace("\\", "/")).as_posix(): row[group_column]
                for row in reader
                if row[path_column] and row[group_column]
            }
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the CSV {file} of group spec '{spec}' ({exc.strerror}); check the path."
        ) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(
            f"CSV {file} of group spec '{spec}' is not readable UTF-8 CSV ({exc}); re-save it as CSV."
        ) from exc
    ids: list[str] = []
    unmatched: list[str] = []
    for path in paths:
        parts_of_path = PurePosixPath(path.replace("\\", "/")).parts
        key = next(
            (
                table[suffix]
                for suffix in ("/".join(parts_of_path[i:]) for i in range(len(parts_of_path)))
                if suffix in table
            ),
            None,
        )
        if key is None:
            unmatched.append(path)
        else:
            ids.append(key)
    if unmatched:
        raise _no_match(spec, unmatched, len(paths))
    return ids


def _near_duplicate_ids(paths: Sequence[str], phashes: Sequence[int] | None) -> list[str]:
    from visionline.data._phash import groups_from_pairs, near_duplicate_pairs, phash

    if phashes is None:
        from PIL import Image, UnidentifiedImageError

        hashes = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    hashes.append(phash(image))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(
                    f"Cannot read image {path} to find its near-duplicates ({exc}); fix or remove it."
                ) from exc
    else:
        hashes = list(phashes)
    groups = groups_from_pairs(len(hashes), near_duplicate_pairs(hashes))
    return [f"near-duplicates/{paths[g]}" for g in groups]


def _similar_ids(paths: Sequence[str]) -> list[str]:
    from PIL import Image, UnidentifiedImageError

    from visionline.data._dedupe import find_groups
    from visionline.data._dedupe_features import concat, image_features

    tables = []
    for path in paths:
        try:
            with Image.open(path) as image:
                tables.append(image_features(image, path))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(
                f"Cannot read image {path} to find its near-duplicates ({exc}); fix or remove it."
            ) from exc
    groups = find_groups(concat(tables)).group
    return [f"near-duplicates/{paths[g]}" for g in groups]


def _check_share(ids: list[str], spec: str, max_group_share: float) -> None:
    if len(ids) < _MIN_IMAGES_FOR_SHARE_CHECK:
        return
    sizes: dict[str, int] = defaultdict(int)
    for key in ids:
        sizes[key] += 1
    largest, size = max(sizes.items(), key=lambda item: item[1])
    if size > max_group_share * len(ids):
        raise DataError(
            f"Group spec '{spec}' puts {size} of {len(ids)} images into one group ('{largest}'), "
            f"more than {max_group_share:.0%}; a key that chains unrelated images (e.g. a MAXGAP "
            "too large) cannot give a stratified split, so tighten the spec."
        )
