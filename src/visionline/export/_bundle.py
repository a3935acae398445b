"""Edge bundles: model files + reference statistics, a sha256 manifest, a signature, a tarball.

A bundle carries no code: the device verifies and runs it with its installed `visionline-edge`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visionline.errors import ConfigError
from visionline_edge import BUNDLE_FORMAT, MANIFEST, SIGNATURE


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A fresh folder beside `target` that replaces it only when the block succeeds, so a reader
    (a polling server) never sees half a bundle and a failure leaves the old one in place.
    Only an earlier bundle or an empty folder is replaced, never a file or someone's folder."""
    if target.exists() and not (target.is_dir() and _replaceable(target)):
        raise ConfigError(
            f"{target} exists and is not an edge bundle, so it would be replaced; pass a new "
            "or empty folder as --out."
        )
    if target.parent.exists() and not target.parent.is_dir():
        raise ConfigError(f"{target.parent} is a file; pass an --out path inside a folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield stage
        if target.exists():
            shutil.rmtree(target)
        stage.replace(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _replaceable(folder: Path) -> bool:
    """An empty folder or an earlier bundle (it holds the manifest)."""
    return (folder / MANIFEST).is_file() or not any(folder.iterdir())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_safe(value: Any) -> Any:
    """NaN/inf become null so the manifest is strict JSON that every reader accepts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


EDGE_RUNTIME = {
    "distribution": "visionline-edge",
    "verify": "visionline-edge verify BUNDLE --trust-store DIR",
}
"""What `bundle.json` says about the runtime that verifies and runs it on the device."""


def bundle_lineage(
    version: Any, extras: dict[str, Any], lineage: dict[str, Any] | None, **more: Any
) -> dict[str, Any]:
    """The `lineage` block of `bundle.json`: dataset version and MLflow run, then `more`, then
    the caller's own `lineage` entries (which win)."""
    return {
        "dataset_version": version.id if version else extras.get("dataset_version"),
        "mlflow_run_id": extras.get("run_id"),
        **more,
        **(lineage or {}),
    }


def finalize_bundle(
    bundle_dir: Path, manifest: dict[str, Any], signing_key: Path | None = None
) -> Path:
    """Hash every file, write `bundle.json` (+ `bundle.sig` when a key is given); return the manifest path."""
    files = {}
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        name = path.relative_to(bundle_dir).as_posix()
        if name not in (MANIFEST, SIGNATURE):
            files[name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    manifest = json_safe({"format": BUNDLE_FORMAT, **manifest, "files": files})
    manifest_path = bundle_dir / MANIFEST
    manifest_path.write_text(
        json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n"
    )
    (bundle_dir / SIGNATURE).unlink(missing_ok=True)
    if signing_key is not None:
        from visionline.export._signing import sign_file

        sign_file(manifest_path, signing_key)
    return manifest_path


def archive_bundle(bundle_dir: Path, archive: Path) -> Path:
    """A reproducible-enough .tar.gz of the bundle directory (one top-level folder)."""
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(bundle_dir.rglob("*")):
            info = tar.gettarinfo(
                str(path), arcname=f"{bundle_dir.name}/{path.relative_to(bundle_dir).as_posix()}"
            )
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_file():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    tmp.replace(archive)
    return archive
