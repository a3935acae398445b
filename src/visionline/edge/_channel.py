"""Where a line finds the bundle assigned to it: a folder, an object-store prefix (fsspec: s3://,
gs://, …) or the central server over HTTP (`visionline monitor serve --channel DIR`).

Each channel lists candidates, newest last, with a key that changes when the bundle behind a name
changes; `fetch` brings one to a local path that `visionline_edge.load_bundle` verifies. Nothing
from a channel is trusted before that verification.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from visionline.errors import ConfigError

__all__ = ["Candidate", "open_channel"]

ARCHIVES = (".tar.gz", ".tgz")


@dataclass(frozen=True)
class Candidate:
    """A bundle on the channel: its name, a key that identifies this content, and how to get a
    local copy (a folder or a .tar.gz)."""

    name: str
    key: tuple[Any, ...]
    fetch: Callable[[], Path]


class FolderChannel:
    """A folder (or its sub-folder named for the line) of bundle folders and archives."""

    def __init__(self, root: Path, line: str | None) -> None:
        self.root = root / line if line and (root / line).is_dir() else root

    def candidates(self) -> list[Candidate]:
        if not self.root.is_dir():
            return []
        found = [
            p for p in self.root.iterdir()
            if not p.name.startswith(".")
            and ((p.is_dir() and (p / "bundle.json").is_file()) or p.name.endswith(ARCHIVES))
        ]
        found.sort(key=lambda p: p.stat().st_mtime_ns)
        return [Candidate(p.name, (str(p), p.stat().st_mtime_ns), lambda p=p: p) for p in found]


class FsspecChannel:
    """An object-store prefix through fsspec (credentials from the environment, as for the blob
    store). Uploads to an object store are not atomic per folder, so `.tar.gz` archives are the
    unit; bundle folders are taken once their bundle.json exists (upload it last)."""

    def __init__(self, url: str, line: str | None, cache: Path) -> None:
        import fsspec

        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"Cannot open the channel {url} ({exc}); install the filesystem's package "
                "(e.g. pip install 'visionline[s3]') or fix the URL."
            ) from exc
        root = root.rstrip("/")
        self.url, self.line, self.cache = url, line, cache
        self._roots = [f"{root}/{line}", root] if line else [root]

    def candidates(self) -> list[Candidate]:
        for root in self._roots:
            try:
                entries = self.fs.ls(root, detail=True, refresh=True)
            except FileNotFoundError:
                continue
            if entries:
                return self._bundles(entries)
        return []

    def _bundles(self, entries: list[dict[str, Any]]) -> list[Candidate]:
        found = []
        for entry in entries:
            path = entry["name"].rstrip("/")
            name = path.rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            if entry["type"] == "file" and name.endswith(ARCHIVES):
                info = entry
            elif entry["type"] == "directory" and self.fs.exists(f"{path}/bundle.json"):
                info = self.fs.info(f"{path}/bundle.json")
            else:
                continue
            stamp = info.get("LastModified") or info.get("mtime") or info.get("created") or ""
            key = (name, str(stamp), info.get("ETag") or info.get("size"))
            found.append((str(stamp), name, Candidate(name, key, lambda p=path, n=name: self._get(p, n))))
        found.sort(key=lambda item: (item[0], item[1]))
        return [candidate for _, _, candidate in found]

    def _get(self, path: str, name: str) -> Path:
        target = Path(tempfile.mkdtemp(prefix="fetch-", dir=self.cache)) / name
        if name.endswith(ARCHIVES):
            self.fs.get(path, str(target))
        else:
            self.fs.get(path + "/", str(target), recursive=True)
        return target


class HttpChannel:
    """The central server's `GET /api/channel/{line}`: the bundle assigned to the line as a
    .tar.gz, with an ETag, so an unchanged bundle costs one 304."""

    def __init__(self, base: str, line: str | None, cache: Path, timeout_s: float = 30.0) -> None:
        if not line:
            raise ConfigError("An HTTP channel serves a bundle per line; pass --line NAME.")
        self.url = f"{base.rstrip('/')}/api/channel/{quote(line, safe='')}"
        self.cache, self.timeout_s = cache, timeout_s
        self._last: Candidate | None = None

    def candidates(self) -> list[Candidate]:
        import httpx

        headers = {"If-None-Match": self._last.key[0]} if self._last else {}
        try:
            response = httpx.get(self.url, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError:
            return [self._last] if self._last else []  # offline: the line keeps its model
        if response.status_code == 304 and self._last is not None:
            return [self._last]
        if response.status_code != 200:
            return [self._last] if self._last else []
        etag = response.headers.get("ETag", "")
        folder = Path(tempfile.mkdtemp(prefix="fetch-", dir=self.cache))
        name = response.headers.get("X-Bundle-Name", "bundle") + ".tar.gz"
        (folder / name).write_bytes(response.content)
        self._last = Candidate(name, (etag,), lambda p=folder / name: p)
        return [self._last]


def _download_cache(cache: Path | None) -> Path:
    """`cache`, created; without one, a temporary folder removed when the process exits (the CLI
    passes a folder beside the outbox, so a restarted agent finds the bundle it switched to)."""
    if cache is None:
        cache = Path(tempfile.mkdtemp(prefix="visionline-channel-"))
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def open_channel(url: str | Path, line: str | None, cache: Path | None = None) -> Any:
    """The channel at `url`: a folder path, `s3://…` (any fsspec URL) or `http(s)://central`.
    Bundles fetched from a server or object store go to `cache` (a folder needs none)."""
    text = str(url)
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        return HttpChannel(text, line, _download_cache(cache))
    if len(scheme) > 1 and scheme != "file":
        return FsspecChannel(text, line, _download_cache(cache))
    root = Path(urlsplit(text).path if scheme == "file" else text)
    if not root.is_dir():
        raise ConfigError(f"No channel folder {root}; create it or fix --channel.")
    return FolderChannel(root, line)

