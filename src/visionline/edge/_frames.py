"""Frame sources: a hot folder that cameras write into, the synthetic apple line, a video stream.

Every source yields `Frame`s (an item id, the capture time, and encoded bytes or a decoded RGB
array) until it is closed; `open_source(url)` picks one from a URL.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import numpy as np

from visionline.errors import ConfigError, NotFoundError

__all__ = [
    "IMAGE_SUFFIXES",
    "Frame",
    "FrameSource",
    "HotFolderSource",
    "SynthSource",
    "VideoSource",
    "group_views",
    "open_source",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


@dataclass
class Frame:
    """One camera frame of one item: encoded `data` (a file) or a decoded RGB `array`."""

    item_id: str
    captured_at: float
    data: bytes | None = None
    array: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class FrameSource(Protocol):
    """An iterator of frames that ends when the source runs dry or `close` is called."""

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class HotFolderSource:
    """Images that cameras write into a folder (FTP/SMB drops), watched with `watchdog`.

    A file counts as complete when the writer closed it (inotify reports the close at once) or,
    where closes are not reported (network mounts), when its size and mtime held still for
    `settle_s`; a partly written file is never read. The item id is the file name's stem, and a
    name is taken once per run. Files already in the folder at start come first, oldest first.
    """

    def __init__(self, folder: Path, settle_s: float = 1.0, poll_s: float = 0.01) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotFoundError(f"No folder {self.folder}; create it or pass the camera's folder.")
        self.settle_s = settle_s
        self.poll_s = poll_s
        self._pending: dict[Path, tuple[int, int, float]] = {}
        self._closed_files: set[Path] = set()
        self._done: set[Path] = set()
        self._prune_at = 1000
        self._lock = threading.Lock()
        self._stop = threading.Event()
        source = self

        class _Handler(FileSystemEventHandler):
            def on_created(self, event: Any) -> None:
                source._touch(event.src_path, event.is_directory)

            def on_modified(self, event: Any) -> None:
                source._touch(event.src_path, event.is_directory)

            def on_moved(self, event: Any) -> None:
                source._touch(event.dest_path, event.is_directory)

            def on_closed(self, event: Any) -> None:
                source._touch(event.src_path, event.is_directory, closed=True)

        self._observer = Observer()
        self._observer.schedule(_Handler(), str(self.folder), recursive=False)
        self._observer.start()
        for path in sorted(self.folder.iterdir(), key=lambda p: p.stat().st_mtime):
            self._touch(str(path), path.is_dir())

    def _touch(self, name: str | bytes, is_dir: bool, closed: bool = False) -> None:
        path = Path(os.fsdecode(name))
        if is_dir or path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            return
        with self._lock:
            if path in self._done:
                return
            self._pending.setdefault(path, (-1, -1, time.monotonic()))
            if closed:
                self._closed_files.add(path)

    def _ready(self) -> list[Path]:
        """Pending files that are complete, oldest first."""
        now = time.monotonic()
        ready = []
        with self._lock:
            for path, (size, mtime, since) in list(self._pending.items()):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    del self._pending[path]
                    continue
                if (st.st_size, st.st_mtime_ns) != (size, mtime):
                    self._pending[path] = (st.st_size, st.st_mtime_ns, now)
                    if path not in self._closed_files:
                        continue
                if st.st_size > 0 and (path in self._closed_files or now - since >= self.settle_s):
                    ready.append((st.st_mtime_ns, path))
            for _, path in ready:
                del self._pending[path]
                self._closed_files.discard(path)
                self._done.add(path)
            if len(self._done) > self._prune_at:  # forget names the plant has cleaned away
                self._done = {p for p in self._done if p.exists()}
                self._prune_at = 2 * len(self._done) + 1000
        return [path for _, path in sorted(ready)]

    def __iter__(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            ready = self._ready()
            if not ready:
                self._stop.wait(self.poll_s)
                continue
            for path in ready:
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                yield Frame(path.stem, time.time(), data=data, meta={"path": str(path)})

    def close(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout=5)


class SynthSource:
    """The synthetic apple line as a live camera: `rate` items per second, optionally drifting.

    Item `i` is image `start + i` of a seeded stream, good or defective with `defect_rate`, so a
    run is reproducible; `count` ends the stream (None: run until closed). A frame's capture time
    is when the line was due to shoot it, so an agent that falls behind sees its items arrive
    late, as it would with a real camera.
    """

    def __init__(
        self,
        rate: float = 20.0,
        count: int | None = None,
        start: int = 0,
        seed: int = 0,
        size: int = 128,
        defect_rate: float = 0.3,
        drift: str | None = None,
        drift_start: int = 0,
        drift_ramp: int = 200,
    ) -> None:
        from visionline.synth import SynthConfig, SynthLine, build_config

        if rate <= 0:
            raise ConfigError("synth:// rate must be positive; pass e.g. rate=20.")
        drift_cfg = (
            {"kind": drift, "start": drift_start, "ramp": drift_ramp} if drift else None
        )
        config = build_config(
            SynthConfig, "synth:// source", seed=seed, size=size, defect_rate=defect_rate,
            drift=drift_cfg,
        )
        self.line = SynthLine(config, stream=7)
        self.config = config
        self.rate, self.count, self.start = rate, count, start
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        begin = time.monotonic()
        i = 0
        while not self._stop.is_set() and (self.count is None or i < self.count):
            index = self.start + i
            rng = np.random.default_rng([self.config.seed, 7, 2**31 + 3, index])
            subtype = None
            if rng.random() < self.config.defect_rate:
                subtype = self.config.subtypes[int(rng.integers(len(self.config.subtypes)))]
            result = self.line.render(index, subtype)
            due = begin + i / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            late = max(0.0, time.monotonic() - due)  # a camera shoots on time; a late loop
            yield Frame(  # makes the item wait, which must count against its deadline
                f"synth-{index:06d}",
                time.time() - late,
                array=result.pixels,
                meta={"subtype": subtype.value if subtype else "good"},
            )
            i += 1

    def close(self) -> None:
        self._stop.set()


class VideoSource:
    """A video file, an RTSP stream or a USB camera (`/dev/videoN`, V4L2) decoded with PyAV;
    item ids count frames."""

    def __init__(self, url: str, prefix: str = "frame", format: str | None = None) -> None:
        import av

        try:
            self._container = av.open(url, format=format, options={"rtsp_transport": "tcp"}
                                      if url.startswith("rtsp://") else None)
        except (OSError, av.FFmpegError) as exc:
            raise NotFoundError(f"Cannot open video {url} ({exc}); check the path or URL.") from exc
        self.prefix = prefix
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        for n, frame in enumerate(self._container.decode(video=0)):
            if self._stop.is_set():
                return
            yield Frame(f"{self.prefix}-{n:06d}", time.time(), array=frame.to_ndarray(format="rgb24"))

    def close(self) -> None:
        self._stop.set()
        self._container.close()


def group_views(source: Iterable[Frame], views: int, separator: str = "_") -> Iterator[list[Frame]]:
    """Frames grouped per item for multi-view aggregation: with `views` > 1 a frame's item is
    its id up to the last `separator` (`apple0042_top`, `apple0042_side` → `apple0042`, noted in
    `meta["item"]`). A group is complete with `views` frames; a frame of another item closes the
    group before it early (a camera that missed its shot), which is decided on the views it has.
    """
    if views <= 1:
        for frame in source:
            yield [frame]
        return
    group: list[Frame] = []
    for frame in source:
        item = frame.item_id.rsplit(separator, 1)[0]
        frame.meta["item"] = item
        if group and group[0].meta["item"] != item:
            yield group
            group = []
        group.append(frame)
        if len(group) == views:
            yield group
            group = []
    if group:
        yield group


def _query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def open_source(url: str) -> FrameSource:
    """`synth://?rate=20&count=N&drift=lighting`, `folder:///PATH` or a folder path, a video file,
    `rtsp://...`, a USB camera `/dev/videoN` or `genicam:///PATH/producer.cti?serial=…`; anything
    else is refused with the forms that work."""
    parts = urlsplit(url)
    if parts.scheme == "synth":
        q = _query(url)
        try:
            return SynthSource(
                rate=float(q.get("rate", 20)),
                count=int(q["count"]) if "count" in q else None,
                start=int(q.get("start", 0)),
                seed=int(q.get("seed", 0)),
                size=int(q.get("size", 128)),
                defect_rate=float(q.get("defect_rate", 0.3)),
                drift=q.get("drift"),
                drift_start=int(q.get("drift_start", 0)),
                drift_ramp=int(q.get("drift_ramp", 200)),
            )
        except ValueError as exc:
            raise ConfigError(f"Bad synth:// parameter in {url!r} ({exc}); use numbers.") from exc
    if parts.scheme in ("rtsp", "rtsps"):
        return VideoSource(url)
    if parts.scheme == "genicam":
        from visionline.edge._genicam import GenICamSource

        return GenICamSource(url)
    if parts.scheme in ("folder", "file"):
        return HotFolderSource(Path(parts.path))
    if not parts.scheme:
        path = Path(url)
        if url.startswith("/dev/video"):  # a USB (UVC) camera through Video4Linux
            return VideoSource(url, prefix=path.name, format="v4l2")
        if path.is_dir():
            return HotFolderSource(path)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            if not path.is_file():
                raise NotFoundError(f"No video file {path}; check the path.")
            return VideoSource(str(path), prefix=path.stem)
        raise NotFoundError(
            f"No folder or video file at {url}; pass a camera folder, a video file, rtsp://... "
            "or synth://."
        )
    raise ConfigError(
        f"Unknown frame source {parts.scheme}://; use a folder path, folder:///PATH, a video "
        "file, rtsp://HOST/PATH, genicam:///PATH/producer.cti or synth://?rate=20."
    )
