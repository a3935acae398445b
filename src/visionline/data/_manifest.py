"""Image records, the Parquet manifest that holds them, and the content hash that names a version."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from visionline.errors import DataError

SPLITS = ("train", "val", "calib", "test")
"""train fits weights, val picks the epoch and the hyperparameters, calib sets the threshold (when
present; else val does), test is measured once at the end."""
_META_KEY = b"visionline"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset version: its blob, geometry, label and split (one manifest row)."""

    sha256: str
    path: str
    bytes: int
    width: int
    height: int
    mode: str
    label: str
    subtype: str | None
    source: str
    split: str | None
    mask_sha256: str | None = None

    @property
    def model_class(self) -> str:
        """The class a model predicts for this image: the subtype, else the label."""
        return self.subtype or self.label


RECORD_FIELDS = tuple(f.name for f in fields(ImageRecord))


def _row(record: ImageRecord) -> tuple:
    return tuple(getattr(record, name) for name in RECORD_FIELDS)


def _sort_key(record: ImageRecord) -> tuple:
    return tuple("" if value is None else value for value in _row(record))


def version_id(records: list[ImageRecord], parent: str | None) -> str:
    """sha256 of the canonical manifest: sorted records plus the parent, nothing time-dependent."""
    rows = [_row(r) for r in sorted(records, key=_sort_key)]
    canonical = json.dumps(
        {"fields": RECORD_FIELDS, "parent": parent, "records": rows},
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("sha256", pa.string()),
            ("path", pa.string()),
            ("bytes", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("mode", pa.string()),
            ("label", pa.string()),
            ("subtype", pa.string()),
            ("source", pa.string()),
            ("split", pa.string()),
            ("mask_sha256", pa.string()),
        ]
    )


def write_manifest(path: Path, records: list[ImageRecord], header: dict[str, Any]) -> None:
    """Write records (sorted) and the version header atomically as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ordered = sorted(records, key=_sort_key)
    columns = {name: [getattr(r, name) for r in ordered] for name in RECORD_FIELDS}
    schema = _schema().with_metadata({_META_KEY: json.dumps(header, sort_keys=True).encode()})
    table = pa.Table.from_pydict(columns, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_header(path: Path) -> dict[str, Any]:
    """The version header (id, name, parent, created_at, metadata) without reading the rows."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata[_META_KEY])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"Manifest {path} is unreadable ({type(exc).__name__}); restore it or delete it and re-add the data."
        ) from exc


def read_records(path: Path) -> list[ImageRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except OSError as exc:
        raise DataError(
            f"Manifest {path} is unreadable ({exc}); restore it or delete it and re-add the data."
        ) from exc
    columns = table.to_pydict()
    return [
        ImageRecord(**{name: columns[name][i] for name in RECORD_FIELDS})
        for i in range(table.num_rows)
    ]
