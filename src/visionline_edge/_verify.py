"""Bundle verification: every file listed with its sha256 in a signed bundle.json, and nothing else.

The verifier is part of the installed edge runtime and never comes from the bundle it checks.
It refuses a bundle that holds anything its manifest does not list (a planted module, a `.pyc`,
an empty folder, a symlink), lacks a listed file, or holds a file whose bytes changed; with
trusted keys it also refuses a bundle.json that no trusted key signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from visionline_edge._keys import resolve_trust, signed_message, verify_signature
from visionline_edge.errors import IntegrityError, NotFoundError

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "SIGNATURE",
    "SIGNATURE_FORMAT",
    "open_bundle",
    "sha256_file",
    "verify_bundle",
]

MANIFEST = "bundle.json"
SIGNATURE = "bundle.sig"
BUNDLE_FORMAT = "visionline.bundle/2"
SIGNATURE_FORMAT = "visionline.bundle.sig/2"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REEXPORT = "export and sign the bundle again"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_bundle(path: Path) -> tuple[Path, Path | None]:
    """The bundle directory, and the private temporary folder a .tar.gz was unpacked into (or
    None for a directory)."""
    if path.is_dir():
        return path, None
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        target = Path(tempfile.mkdtemp(prefix="visionline-bundle-"))
        try:
            with tarfile.open(path, "r:gz") as archive:
                archive.extractall(target, filter="data")
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise IntegrityError(
                f"{path} is not a readable bundle archive ({exc}); export it again."
            ) from exc
        entries = list(target.iterdir())
        return (entries[0] if len(entries) == 1 and entries[0].is_dir() else target), target
    raise NotFoundError(f"No bundle at {path}; pass a bundle directory or its .tar.gz.")


def _scan(root: Path, label: str) -> tuple[set[str], set[str]]:
    """Every regular file and folder under `root` (relative POSIX names); refuses anything else."""
    files: set[str] = set()
    folders: set[str] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                name = Path(entry.path).relative_to(root).as_posix()
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISREG(mode):
                    files.add(name)
                elif stat.S_ISDIR(mode):
                    folders.add(name)
                    pending.append(Path(entry.path))
                else:
                    kind = "a symlink" if stat.S_ISLNK(mode) else "a special file"
                    raise IntegrityError(
                        f"{label} holds {name}, which is {kind}; a bundle holds only regular "
                        f"files, so do not deploy it and {_REEXPORT}."
                    )
    return files, folders


def _read_signature(path: Path, label: str) -> tuple[bytes, str]:
    try:
        record = json.loads(path.read_text())
        signature = base64.b64decode(record["signature"], validate=True)
        claimed = str(record.get("key_id", "?"))
        if record.get("algorithm") != "ed25519" or len(signature) != 64:
            raise ValueError("not an Ed25519 signature")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{SIGNATURE} of {label} is unreadable; {_REEXPORT}.") from exc
    return signature, claimed


def _check_signature(root: Path, manifest_bytes: bytes, keys: dict[str, bytes], label: str) -> str:
    """The id of the trusted key that signed bundle.json; raises naming the file or the key."""
    signature_path = root / SIGNATURE
    if not signature_path.is_file():
        raise IntegrityError(
            f"{label} is not signed and this device accepts only signed bundles; {_REEXPORT} "
            "with --sign KEY."
        )
    signature, claimed = _read_signature(signature_path, label)
    message = signed_message(manifest_bytes)
    for kid, public in keys.items():
        if verify_signature(public, message, signature):
            return kid
    if claimed in keys:
        raise IntegrityError(
            f"{MANIFEST} of {label} was changed after key {claimed} signed it (signature mismatch); "
            f"do not deploy it, {_REEXPORT}."
        )
    raise IntegrityError(
        f"{label} is signed by key {claimed}, which this device does not trust; do not deploy it, "
        "or add that key's .pub to the trust store only if you trust its signer."
    )


def _listed(manifest: Any, label: str) -> dict[str, dict[str, Any]]:
    """The manifest's file list after checking every name and digest is well formed."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise IntegrityError(f"{MANIFEST} of {label} lists no files; {_REEXPORT}.")
    for name, entry in files.items():
        parts = PurePosixPath(name).parts
        if (
            not name
            or "\\" in name
            or name.startswith("/")
            or PurePosixPath(name).as_posix() != name
            or any(part in ("", ".", "..") for part in parts)
            or name in (MANIFEST, SIGNATURE)
        ):
            raise IntegrityError(
                f"{MANIFEST} of {label} lists an unsafe path {name!r}; do not deploy this bundle."
            )
        if not isinstance(entry, dict) or not _SHA256.fullmatch(str(entry.get("sha256", ""))):
            raise IntegrityError(
                f"{MANIFEST} of {label} has no valid sha256 for {name}; {_REEXPORT}."
            )
    return files


def _check_files(root: Path, listed: dict[str, dict[str, Any]], present: set[str],
                 folders: set[str], label: str) -> None:
    allowed_folders = {p.as_posix() for name in listed for p in PurePosixPath(name).parents}
    extra = sorted(present - set(listed) - {MANIFEST, SIGNATURE}) or [
        f"{name}/" for name in sorted(folders - allowed_folders)
    ]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise IntegrityError(
            f"{label} holds {extra[0]}{more}, which {MANIFEST} does not list; do not deploy it, "
            f"{_REEXPORT}."
        )
    for name in sorted(listed):
        if name not in present:
            raise IntegrityError(f"{label} is missing {name}; {_REEXPORT}.")
        entry = listed[name]
        size = entry.get("bytes")
        if (size is not None and (root / name).stat().st_size != size) or sha256_file(
            root / name
        ) != entry["sha256"]:
            raise IntegrityError(
                f"{name} in {label} was changed after export (sha256 mismatch); do not deploy it."
            )


def verify_bundle(
    path: str | os.PathLike[str],
    pubkey: str | os.PathLike[str] | bytes | None = None,
    *,
    trust_store: str | os.PathLike[str] | None = None,
    require_signature: bool = False,
) -> dict[str, Any]:
    """Check a bundle (directory or .tar.gz) and return its manifest.

    With trusted keys (`pubkey`, `trust_store`) bundle.json must carry a signature by one of
    them; `require_signature` refuses to run without such keys. Every file except bundle.json and
    bundle.sig must be listed with its sha256, and every listed file must be present and match.
    The manifest comes back with `_root` (the directory checked), `_signed_by` (a key id or
    None) and `_unpacked` (the temporary folder an archive was unpacked into, else None; the
    caller removes it with `release_unpacked` when done). Raises `IntegrityError` with one sentence naming the
    offending file or key; a refused archive leaves no unpacked files behind.
    """
    keys = resolve_trust(pubkey, trust_store, require_signature)
    label = str(path)
    root, unpacked = open_bundle(Path(path))
    try:
        manifest = _verified_manifest(root, keys, label)
    except BaseException:
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)
        raise
    manifest["_root"] = str(root)
    manifest["_unpacked"] = str(unpacked) if unpacked else None
    return manifest


def release_unpacked(manifest: dict[str, Any]) -> None:
    """Remove the temporary copy `verify_bundle` unpacked an archive into (nothing for a
    folder); `manifest["_unpacked"]` becomes None, so a second call does nothing."""
    if manifest.get("_unpacked"):
        shutil.rmtree(manifest["_unpacked"], ignore_errors=True)
        manifest["_unpacked"] = None


def _verified_manifest(root: Path, keys: dict[str, bytes], label: str) -> dict[str, Any]:
    """The checks of `verify_bundle`, in order: what is on disk, the signature, the manifest,
    then every listed file."""
    present, folders = _scan(root, label)
    if MANIFEST not in present:
        raise NotFoundError(
            f"{label} has no {MANIFEST}; pass a bundle directory made by 'visionline export'."
        )
    manifest_bytes = (root / MANIFEST).read_bytes()
    signed_by = _check_signature(root, manifest_bytes, keys, label) if keys else None
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        raise IntegrityError(f"{MANIFEST} of {label} is not valid JSON; {_REEXPORT}.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IntegrityError(
            f"{label} is a {found or 'unknown'} bundle and this runtime reads {BUNDLE_FORMAT}; "
            "export it again with the current visionline."
        )
    listed = _listed(manifest, label)
    _check_files(root, listed, present, folders, label)
    models = manifest.get("models")
    for entry in models.values() if isinstance(models, dict) else []:
        if not isinstance(entry, dict) or entry.get("file") not in listed:
            raise IntegrityError(
                f"{MANIFEST} of {label} names a model file that it does not list; {_REEXPORT}."
            )
    manifest["_signed_by"] = signed_by
    return manifest

