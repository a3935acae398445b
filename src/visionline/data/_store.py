"""Content-addressed blob store: bytes live under their sha256, on local disk or S3 (fsspec).

Addresses are sharded by their first two hex digits (`ab/abcd…`, as git and DVC do): at ten
million blobs each of the 256 folders holds ~40,000 files, which ext4 and XFS handle well, while
a deeper `ab/cd/` tree costs one extra directory per blob at typical dataset sizes (measured:
mkdir dominated the ingest of 5,000 small images). Local writes go to a temporary file in the
target directory and are renamed into place, so a reader never sees half a blob; S3 writes are a single PUT of the complete bytes to the final key. A blob that
already exists is never written again, which makes `put` idempotent and safe to repeat.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from visionline.errors import ConfigError, IntegrityError, NotFoundError, ServiceUnavailableError

_HEX = frozenset("0123456789abcdef")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shard(sha: str) -> str:
    return f"{sha[:2]}/{sha}"


def _check_sha(sha: str) -> str:
    if len(sha) != 64 or not set(sha) <= _HEX:
        raise NotFoundError(f"'{sha}' is not a sha256 blob address; pass the 64-hex-digit hash.")
    return sha


class BlobStore:
    """Bytes addressed by their sha256 in a local directory, `file://` URI or `s3://bucket/prefix`.

    `storage_options` go to fsspec for remote stores (for S3, e.g.
    `{"client_kwargs": {"endpoint_url": ...}}`; the `AWS_ENDPOINT_URL` environment variable works
    too).
    """

    def __init__(self, uri: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        text = str(uri)
        self.uri = text
        self._fs = None
        self._root: Path | None = None
        if "://" not in text or text.startswith("file://"):
            self._root = Path(text.removeprefix("file://")).expanduser().resolve()
            return
        protocol, _, rest = text.partition("://")
        if protocol not in ("s3", "s3a"):
            raise ConfigError(
                f"Blob store URI '{text}' has an unsupported scheme; use a local path or s3://bucket/prefix."
            )
        if not rest.strip("/"):
            raise ConfigError(f"Blob store URI '{text}' names no bucket; use s3://bucket/prefix.")
        self._prefix = rest.strip("/")
        self._fs = _s3_filesystem(storage_options or {})

    @property
    def is_local(self) -> bool:
        return self._root is not None

    def local_path(self, sha: str) -> Path | None:
        """Where a blob lives on disk for a local store (it may not exist yet); None for S3."""
        if self._root is None:
            return None
        return self._root / _shard(_check_sha(sha))

    def _remote(self, sha: str) -> str:
        return f"{self._prefix}/{_shard(_check_sha(sha))}"

    def exists(self, sha: str) -> bool:
        if self._root is not None:
            return (self._root / _shard(_check_sha(sha))).is_file()
        return bool(self._call(self._fs.exists, self._remote(sha)))

    def put(self, data: bytes) -> str:
        """Store bytes once under their sha256 and return the hash."""
        sha = sha256_hex(data)
        self._put_known(sha, data)
        return sha

    def put_many(self, blobs: Iterable[bytes], workers: int = 8) -> list[str]:
        """Store many blobs in bulk; the writes run in parallel threads."""
        items = [(sha256_hex(data), data) for data in blobs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda item: self._put_known(*item), items))
        return [sha for sha, _ in items]

    def _put_known(self, sha: str, data: bytes) -> None:
        if self._root is None:
            key = self._remote(sha)
            if not self._call(self._fs.exists, key):
                self._call(self._fs.pipe_file, key, data)
            return
        parent = f"{self._root}/{sha[:2]}"
        target = f"{parent}/{sha}"
        if os.path.exists(target):
            return
        tmp = f"{parent}/.tmp-{sha[:16]}-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            os.makedirs(parent, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, sha: str, verify: bool = True) -> bytes:
        """The bytes of a blob; with `verify`, re-hash them and refuse a mismatch."""
        if self._root is not None:
            path = self._root / _shard(_check_sha(sha))
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise NotFoundError(
                    f"Blob {sha[:12]} is not in {self.uri}; re-add the dataset that contains it."
                ) from None
        else:
            key = self._remote(sha)
            try:
                data = self._call(self._fs.cat_file, key)
            except FileNotFoundError:
                raise NotFoundError(
                    f"Blob {sha[:12]} is not in {self.uri}; re-add the dataset that contains it."
                ) from None
        if verify and sha256_hex(data) != sha:
            raise IntegrityError(
                f"Blob {sha[:12]} in {self.uri} does not match its hash; it was corrupted, re-add its source image."
            )
        return data

    def _call(self, func: Any, *args: Any) -> Any:
        """Run a remote call, turning connection and permission failures into one sentence."""
        try:
            return func(*args)
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise _remote_error(exc, self.uri) from exc
            raise
        except _remote_failures() as exc:
            raise _remote_error(exc, self.uri) from exc


def _s3_filesystem(storage_options: dict[str, Any]) -> Any:
    try:
        import s3fs
    except ImportError:
        raise ConfigError(
            "S3 blob stores need s3fs; install it with: pip install 'visionline[s3]'."
        ) from None
    options = dict(storage_options)
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    client_kwargs = dict(options.pop("client_kwargs", {}) or {})
    if endpoint and "endpoint_url" not in client_kwargs:
        client_kwargs["endpoint_url"] = endpoint
    config_kwargs = {"connect_timeout": 5, "read_timeout": 30, "retries": {"max_attempts": 2}}
    config_kwargs.update(options.pop("config_kwargs", {}) or {})
    return s3fs.S3FileSystem(
        client_kwargs=client_kwargs,
        config_kwargs=config_kwargs,
        skip_instance_cache=True,
        **options,
    )


def _remote_failures() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the remote store failed (not a bug in the caller)."""
    from botocore.exceptions import BotoCoreError, ClientError

    failures: tuple[type[BaseException], ...] = (OSError, BotoCoreError, ClientError, TimeoutError)
    try:
        from aiohttp import ClientError as HttpError
    except ImportError:
        return failures
    return (*failures, HttpError)


def _remote_error(exc: Exception, uri: str) -> Exception:
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return ConfigError(
            f"Access to {uri} was denied ({name}); check the S3 credentials and bucket policy."
        )
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return ConfigError(
            f"The bucket of {uri} does not exist; create it or fix storage.blob_store."
        )
    if "credential" in text.lower():
        return ConfigError(
            f"No S3 credentials for {uri}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
        )
    return ServiceUnavailableError(
        f"S3 store {uri} did not answer ({name}); check the endpoint (AWS_ENDPOINT_URL) and the network."
    )
