"""Turning an ingest source (ImageFolder tree, CSV, Label Studio export) into labelled candidates.

Label rules: a folder (or CSV label) is looked up in `label_map` first; otherwise `good` maps to
good, a defect subtype name to (its defect class, subtype) and a defect class name to
(class, None). Anything else is an error that names `--map FOLDER=label[/subtype]`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from visionline.config import GOOD_CLASS, ProjectConfig
from visionline.data._store import BlobStore
from visionline.errors import ConfigError, DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
_SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "calib": "calib",
               "test": "test"}
MASK_SUFFIX = "_mask.png"


@dataclass(frozen=True)
class Candidate:
    """One image to ingest: where its bytes are, its label and split, and an optional mask."""

    rel: str
    label: str
    subtype: str | None
    split: str | None
    file: Path | None = None
    blob: str | None = None
    mask: Path | None = None


@dataclass
class Scan:
    kind: str
    candidates: list[Candidate]
    skipped: list[tuple[str, str]]
    notes: list[str]


class LabelResolver:
    """Maps folder names / label strings onto (label, subtype) of the project config."""

    def __init__(self, config: ProjectConfig, label_map: dict[str, str] | None) -> None:
        self._defects = config.defect_labels()
        self._subtypes = {s: c for c, subs in self._defects.items() for s in subs}
        self._choices = config.model_classes() + [c for c in self._defects if self._defects[c]]
        self._map = {
            key: self._parse_target(key, value) for key, value in (label_map or {}).items()
        }

    def _parse_target(self, key: str, value: str) -> tuple[str, str | None]:
        label, _, subtype = value.partition("/")
        if label == GOOD_CLASS and not subtype:
            return GOOD_CLASS, None
        if label in self._defects and (not subtype or subtype in self._defects[label]):
            return label, subtype or None
        if not subtype and label in self._subtypes:
            return self._subtypes[label], label
        raise ConfigError(
            f"--map {key}={value}: '{value}' is not a class of the project; use one of "
            f"{self._targets()}."
        )

    def _targets(self) -> str:
        targets = [GOOD_CLASS]
        for label, subs in self._defects.items():
            targets.append(label)
            targets.extend(f"{label}/{s}" for s in subs)
        return ", ".join(targets)

    def resolve(self, name: str, what: str = "Folder") -> tuple[str, str | None]:
        if name in self._map:
            return self._map[name]
        if name == GOOD_CLASS:
            return GOOD_CLASS, None
        if name in self._subtypes:
            return self._subtypes[name], name
        if name in self._defects:
            return name, None
        raise ConfigError(
            f"{what} '{name}' is not a class of the project; map it with "
            f"--map {name}=TARGET, where TARGET is one of {self._targets()}."
        )

    def resolve_pair(self, label: str, subtype: str | None) -> tuple[str, str | None]:
        """A CSV (label, subtype) pair: either may be mapped; both must fit the config."""
        if not subtype:
            return self.resolve(label, "Label")
        label, _ = self.resolve(label, "Label")
        if label == GOOD_CLASS or subtype not in self._defects.get(label, []):
            raise ConfigError(
                f"Subtype '{subtype}' does not belong to label '{label}' in the project; "
                f"use one of {self._targets()}."
            )
        return label, subtype


def scan_source(
    source: Path,
    config: ProjectConfig,
    label_map: dict[str, str] | None,
    masks: bool,
    store: BlobStore | None = None,
) -> Scan:
    """Candidates from a folder tree, a CSV file or a Label Studio JSON export.

    Label Studio tasks whose image is not a local file are taken from `store` when the task
    carries the image's sha256 and the blob is there.
    """
    resolver = LabelResolver(config, label_map)
    if not source.exists():
        raise DataError(
            f"Source {source} does not exist; pass an image folder, a CSV or a JSON export."
        )
    if source.is_dir():
        return _scan_folder(source, resolver, masks)
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return _scan_csv(source, resolver, masks)
    if suffix == ".json":
        return _scan_labelstudio(source, config, masks, store)
    raise DataError(
        f"Source {source} is neither a folder, a .csv nor a Label Studio .json export; pass one of those."
    )


def _mask_for(image: Path, files: set[Path]) -> Path | None:
    named = image.with_name(image.stem + MASK_SUFFIX)
    if named in files:
        return named
    sibling = image.with_suffix(".png")
    if image.suffix.lower() != ".png" and sibling in files:
        return sibling
    return None


def _split_images_and_masks(
    files: list[Path], masks: bool
) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """Pair images with masks (rule: `X_mask.png`, or `X.png` beside a non-PNG `X.*`)."""
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    present = set(images)
    notes: list[str] = []
    if not masks:
        pairs = sum(
            1 for f in images if f.suffix.lower() != ".png" and f.with_suffix(".png") in present
        )
        if pairs:
            notes.append(
                f"{pairs} images have a same-name .png beside them; if those are masks, add with --masks."
            )
        return [(f, None) for f in images], notes
    mask_files = {m for f in images if (m := _mask_for(f, present)) is not None}
    return [(f, _mask_for(f, present)) for f in images if f not in mask_files], notes


def _walk(root: Path) -> list[tuple[str, ...]]:
    """Relative parts of every non-hidden file under `root` (hidden folders skipped), sorted."""
    found: list[tuple[str, ...]] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        prefix = () if rel == "." else tuple(rel.split(os.sep))
        found.extend((*prefix, name) for name in names if not name.startswith("."))
    return sorted(found)


def _scan_folder(root: Path, resolver: LabelResolver, masks: bool) -> Scan:
    relative = {root.joinpath(*parts): parts for parts in _walk(root)}
    pairs, notes = _split_images_and_masks(list(relative), masks)
    top = {relative[p][0] for p, _ in pairs if len(relative[p]) > 1}
    has_splits = bool(top) and top <= set(_SPLIT_DIRS)
    candidates: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    resolved: dict[str, tuple[str, str | None]] = {}
    for image, mask in pairs:
        parts = relative[image]
        rel = "/".join(parts)
        split = _SPLIT_DIRS[parts[0]] if has_splits else None
        rest = parts[1:] if has_splits else parts
        if len(rest) < 2:
            skipped.append((rel, "not inside a class folder"))
            continue
        folder = rest[0]
        if folder not in resolved:
            resolved[folder] = resolver.resolve(folder)
        label, subtype = resolved[folder]
        candidates.append(Candidate(rel, label, subtype, split, file=image, mask=mask))
    if not candidates and not skipped:
        raise DataError(
            f"Folder {root} holds no images; put them in class folders such as good/ and defect/."
        )
    return Scan("imagefolder", candidates, skipped, notes)


def _scan_csv(path: Path, resolver: LabelResolver, masks: bool) -> Scan:
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"CSV {path} cannot be read ({exc}); save it as UTF-8 text.") from exc
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    columns = ["path", "label", "subtype"]
    if rows and [c.strip().lower() for c in rows[0]][:2] == ["path", "label"]:
        columns = [c.strip().lower() for c in rows[0]]
        rows = rows[1:]
    if not rows:
        raise DataError(
            f"CSV {path} has no rows; write one 'path,label' or 'path,label,subtype' line per image."
        )
    base = path.parent
    listed = {(base / row[0].strip()).resolve() for row in rows if row and row[0].strip()}
    candidates: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    for number, row in enumerate(rows, start=2 if columns[0] == "path" else 1):
        cells = dict(zip(columns, (cell.strip() for cell in row)))
        if not cells.get("path") or not cells.get("label"):
            raise DataError(f"CSV {path} line {number} needs a path and a label; fix that line.")
        file = (base / cells["path"]).resolve()
        label, subtype = resolver.resolve_pair(cells["label"], cells.get("subtype") or None)
        split = cells.get("split") or None
        if split is not None and split not in _SPLIT_DIRS:
            raise DataError(f"CSV {path} line {number}: split '{split}' is not train, val or test.")
        if not file.is_file():
            skipped.append((cells["path"], "file not found"))
            continue
        mask = (
            _mask_for(file, {m for m in _mask_candidates(file) if m.is_file()}) if masks else None
        )
        if mask is not None and mask in listed:
            mask = None
        candidates.append(
            Candidate(
                cells["path"],
                label,
                subtype,
                _SPLIT_DIRS.get(split or "", None),
                file=file,
                mask=mask,
            )
        )
    return Scan("csv", candidates, skipped, [])


def _mask_candidates(file: Path) -> list[Path]:
    return [file.with_name(file.stem + MASK_SUFFIX), file.with_suffix(".png")]


def _scan_labelstudio(
    path: Path, config: ProjectConfig, masks: bool, store: BlobStore | None
) -> Scan:
    from visionline.data._labelstudio import image_ref_to_path, parse_export

    decisions, issues = parse_export(path, config)
    candidates: list[Candidate] = []
    skipped: list[tuple[str, str]] = [(path.name, issue) for issue in issues]
    for decision in decisions:
        if decision.image.startswith("blob:"):
            candidates.append(
                Candidate(
                    decision.image, decision.label, decision.subtype, None, blob=decision.image[5:]
                )
            )
            continue
        file = image_ref_to_path(decision.image, path.parent)
        if file is None or not file.is_file():
            known = getattr(decision, "sha256", None)  # tasks exported by `visionline label`
            if known and store is not None and store.exists(known):
                candidates.append(
                    Candidate(decision.image, decision.label, decision.subtype, None, blob=known)
                )
                continue
            skipped.append(
                (decision.image, "not a local file (download it or use a local-files URL)")
            )
            continue
        mask = (
            _mask_for(file, {m for m in _mask_candidates(file) if m.is_file()}) if masks else None
        )
        candidates.append(
            Candidate(decision.image, decision.label, decision.subtype, None, file=file, mask=mask)
        )
    return Scan("labelstudio", candidates, skipped, [])
