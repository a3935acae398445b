"""Immutable dataset versions: Parquet manifests named by their content hash, plus an index.

A version's id is the sha256 of its sorted records and its parent, so the same content always
gets the same id and adding it twice returns the existing version. Manifests are written to a
temporary file and renamed; the index is rewritten the same way under a file lock, so parallel
writers (two `data add` runs) cannot lose each other's versions.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionline.config import GOOD_CLASS, Project
from visionline.data._manifest import (
    SPLITS,
    ImageRecord,
    read_header,
    read_records,
    version_id,
    write_manifest,
)
from visionline.data._store import BlobStore
from visionline.errors import AmbiguousIdError, DataError, NotFoundError

if TYPE_CHECKING:
    from visionline.data._ingest import IngestReport
    from visionline.data._ops import VerifyReport, VersionDiff

_INDEX = "index.json"
_PHASHES = "phash.json"


class DatasetVersion:
    """One immutable dataset version; its records are read from the manifest on first use."""

    def __init__(
        self,
        id: str,
        name: str,
        parent: str | None,
        created_at: str,
        metadata: dict[str, Any],
        n_images: int,
        load: Callable[[], list[ImageRecord]],
    ) -> None:
        self.id = id
        self.name = name
        self.parent = parent
        self.created_at = created_at
        self.metadata = metadata
        self.n_images = n_images
        self._load = load
        self._records: list[ImageRecord] | None = None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def records(self) -> list[ImageRecord]:
        if self._records is None:
            self._records = self._load()
        return self._records

    def split_records(self, split: str) -> list[ImageRecord]:
        """Records of one split ('train', 'val', 'calib' or 'test')."""
        if split not in SPLITS:
            raise DataError(f"Split '{split}' does not exist; use one of {', '.join(SPLITS)}.")
        return [r for r in self.records if r.split == split]

    def class_counts(self) -> Counter[str]:
        """Images per model class (subtype, else label)."""
        return Counter(r.model_class for r in self.records)

    def split_counts(self) -> Counter[str]:
        return Counter(r.split or "unsplit" for r in self.records)

    def __repr__(self) -> str:
        return f"DatasetVersion({self.short_id} {self.name!r}, {self.n_images} images)"


class DatasetRepo:
    """The datasets of one project: blob store, versions, ingest, splits."""

    def __init__(self, project: Project, storage_options: dict[str, Any] | None = None) -> None:
        self.project = project
        self.config = project.config
        self.root = project.datasets_dir
        self.blobs = BlobStore(project.blob_store_uri, storage_options)

    # -- versions ---------------------------------------------------------------------------

    def _manifest(self, vid: str) -> Path:
        return self.root / f"{vid}.parquet"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_index(self) -> list[dict[str, Any]]:
        path = self.root / _INDEX
        if path.is_file():
            try:
                return json.loads(path.read_text())["versions"]
            except (ValueError, KeyError) as exc:
                raise DataError(
                    f"Dataset index {path} is damaged ({type(exc).__name__}); delete it and it is rebuilt from the manifests."
                ) from exc
        entries = []
        for manifest in sorted(self.root.glob("*.parquet")) if self.root.is_dir() else []:
            header = read_header(manifest)
            entries.append(_entry(header))
        return sorted(entries, key=lambda e: e["created_at"])

    def _write_json(self, name: str, data: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, self.root / name)

    def _version(
        self, entry: dict[str, Any], header: dict[str, Any] | None = None
    ) -> DatasetVersion:
        vid = entry["id"]
        path = self._manifest(vid)
        if header is None:
            if not path.is_file():
                raise NotFoundError(
                    f"Manifest of dataset version {vid[:12]} is missing from {self.root}; restore it from a backup."
                )
            header = read_header(path)
        return DatasetVersion(
            vid,
            header["name"],
            header["parent"],
            header["created_at"],
            header.get("metadata", {}),
            header["n_images"],
            lambda: read_records(path),
        )

    def list(self) -> list[DatasetVersion]:
        """All versions, oldest first."""
        return [self._version(entry) for entry in self._read_index()]

    def resolve(self, id_or_prefix: str) -> str:
        """The full id for an id, a unique prefix of one, or a version name (its newest version).

        Ids win over names, so a name that happens to look like an id prefix never hides a version.
        """
        key = id_or_prefix.strip().lower()
        index = self._read_index()
        matches = [e["id"] for e in index if e["id"].startswith(key)] if len(key) >= 4 else []
        if not matches:
            named = [e for e in index if e["name"] == id_or_prefix.strip()]
            if named:
                return named[-1]["id"]  # the index lists versions oldest first
        if len(key) < 4:
            raise NotFoundError(
                f"Dataset version id '{id_or_prefix}' is too short and names no version; give at least 4 characters of an id or a version name (see 'visionline data list')."
            )
        if not matches:
            raise NotFoundError(
                f"No dataset version '{id_or_prefix}' (by id or name); run 'visionline data list' to see the ids and names."
            )
        if len(matches) > 1:
            raise AmbiguousIdError(
                f"Dataset version prefix '{id_or_prefix}' matches {len(matches)} versions; give more characters."
            )
        return matches[0]

    def get(self, id_or_prefix: str) -> DatasetVersion:
        """A version by id, unique id prefix or name (the newest of that name)."""
        vid = self.resolve(id_or_prefix)
        return self._version({"id": vid})

    def create_version(
        self,
        records: list[ImageRecord],
        name: str,
        parent: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        """The one way to make a version; identical content returns the existing version."""
        return self._create(records, name, parent, metadata or {})[0]

    def _create(
        self, records: list[ImageRecord], name: str, parent: str | None, metadata: dict[str, Any]
    ) -> tuple[DatasetVersion, bool]:
        parent_id = self.resolve(parent) if parent else None
        records = self._checked(records)
        vid = version_id(records, parent_id)
        header = {
            "id": vid,
            "name": name,
            "parent": parent_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_images": len(records),
            "metadata": _jsonable(metadata),
        }
        with self._locked():
            entries = self._read_index()
            if any(e["id"] == vid for e in entries) and self._manifest(vid).is_file():
                return self._version({"id": vid}), False
            write_manifest(self._manifest(vid), records, header)
            entries = [e for e in entries if e["id"] != vid] + [_entry(header)]
            self._write_json(_INDEX, {"versions": entries})
        version = self._version({"id": vid}, header)
        version._records = sorted(records, key=lambda r: (r.path, r.sha256))
        return version, True

    def _checked(self, records: list[ImageRecord]) -> list[ImageRecord]:
        """Validate labels against the config and drop exact repeats of a record."""
        defects = self.config.defect_labels()
        seen: dict[str, ImageRecord] = {}
        for record in sorted(records, key=lambda r: (r.path, r.sha256)):
            if record.label == GOOD_CLASS:
                if record.subtype:
                    raise DataError(
                        f"Image {record.path} is 'good' but has subtype '{record.subtype}'; drop the subtype."
                    )
            elif record.label not in defects:
                raise DataError(
                    f"Image {record.path} has label '{record.label}', which is not a class of the project; "
                    "add the class to visionline.yaml or relabel it."
                )
            elif record.subtype and record.subtype not in defects[record.label]:
                raise DataError(
                    f"Image {record.path} has subtype '{record.subtype}', which is not a subtype of "
                    f"'{record.label}'; add it to visionline.yaml or relabel it."
                )
            if record.split is not None and record.split not in SPLITS:
                raise DataError(
                    f"Image {record.path} has split '{record.split}'; use train, val, test or None."
                )
            previous = seen.get(record.sha256)
            if previous is None:
                seen[record.sha256] = record
            elif (previous.label, previous.subtype) != (record.label, record.subtype):
                raise DataError(
                    f"Image {record.sha256[:12]} appears as both {previous.model_class} ({previous.path}) "
                    f"and {record.model_class} ({record.path}); keep one label."
                )
        return list(seen.values())

    # -- pHash cache ------------------------------------------------------------------------

    def phashes(self) -> dict[str, int]:
        """Known perceptual hashes by blob sha256 (filled at ingest)."""
        path = self.root / _PHASHES
        if not path.is_file():
            return {}
        try:
            return {k: int(v, 16) for k, v in json.loads(path.read_text()).items()}
        except ValueError:
            return {}

    def remember_phashes(self, hashes: dict[str, int]) -> None:
        if not hashes:
            return
        with self._locked():
            known = self.phashes()
            known.update(hashes)
            self._write_json(_PHASHES, {k: f"{v:016x}" for k, v in known.items()})

    # -- operations, implemented in their own modules ------------------------------------------

    def add(
        self,
        source: Path,
        name: str | None = None,
        parent: str | None = None,
        label_map: dict[str, str] | None = None,
        masks: bool = False,
        show_progress: bool = False,
    ) -> IngestReport:
        """Ingest a folder tree, CSV or Label Studio export as a new version (see `ingest`)."""
        from visionline.data._ingest import ingest

        return ingest(self, Path(source), name, parent, label_map, masks, show_progress)

    def split(
        self,
        version_id: str,
        val: float = 0.15,
        test: float = 0.15,
        seed: int = 0,
        group_by: str | None = None,
        calib: float = 0.0,
    ) -> DatasetVersion:
        """A new version (child of the input) with stratified, leak-free train/val/test splits
        (and a calib split for the threshold when `calib` > 0); `group_by` is a group spec (see
        `group_ids`), else near-duplicates form the groups."""
        from visionline.data._split import split_version

        return split_version(self, version_id, val, test, seed, group_by, calib)

    def diff(self, a: str, b: str) -> VersionDiff:
        from visionline.data._ops import diff_versions

        return diff_versions(self.get(a), self.get(b))

    def export(self, version_id: str, directory: Path, masks: bool = False) -> int:
        from visionline.data._ops import export_version

        return export_version(self, self.get(version_id), Path(directory), masks)

    def verify(self, version_id: str, show_progress: bool = False) -> VerifyReport:
        from visionline.data._ops import verify_version

        return verify_version(self, self.get(version_id), show_progress)


def _entry(header: dict[str, Any]) -> dict[str, Any]:
    return {k: header[k] for k in ("id", "name", "parent", "created_at", "n_images")}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
