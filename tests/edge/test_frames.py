"""Frame sources: the hot folder never reads a half-written file, synth:// is the seeded line
with drift, a video file decodes frame by frame, and unknown sources get a clear error."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from edge_support import png

from visionline.edge import Frame, HotFolderSource, SynthSource, VideoSource, open_source
from visionline.errors import ConfigError, NotFoundError


def _collect(source, n: int, timeout: float = 10.0) -> list[Frame]:
    """The first `n` frames of `source`, read on a thread (the source blocks while waiting)."""
    frames: list[Frame] = []

    def read() -> None:
        for frame in source:
            frames.append(frame)
            if len(frames) >= n:
                return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout)
    return frames


def test_hot_folder_waits_for_a_partly_written_file(tmp_path: Path) -> None:
    full = png((200, 30, 30), size=64)
    source = HotFolderSource(tmp_path, settle_s=5.0)
    frames: list[Frame] = []
    reader = threading.Thread(target=lambda: frames.extend(_collect(source, 2, 15)), daemon=True)
    reader.start()
    with (tmp_path / "item-0001.png").open("wb") as handle:
        handle.write(full[: len(full) // 2])
        handle.flush()
        time.sleep(0.5)
        assert frames == []  # half a file, still open: not read
        handle.write(full[len(full) // 2 :])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "item-0002.png").write_bytes(png((10, 10, 10)))
    reader.join(15)
    source.close()
    assert [f.item_id for f in frames] == ["item-0001", "item-0002"]
    assert frames[0].data == full


def test_hot_folder_takes_files_present_at_start_and_needs_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png((1, 2, 3)))
    source = HotFolderSource(tmp_path, settle_s=0.05)
    frames = _collect(source, 1)
    source.close()
    assert [f.item_id for f in frames] == ["a"]
    with pytest.raises(NotFoundError, match="create it"):
        HotFolderSource(tmp_path / "missing")


def test_synth_source_is_the_seeded_line_with_drift() -> None:
    plain = list(SynthSource(rate=1000, count=4, size=64, start=10))
    again = list(SynthSource(rate=1000, count=4, size=64, start=10))
    drifted = list(SynthSource(rate=1000, count=4, size=64, start=10, drift="lighting",
                               drift_ramp=1))
    assert [f.item_id for f in plain] == [f"synth-{i:06d}" for i in range(10, 14)]
    assert plain[0].array.shape == (64, 64, 3) and plain[0].array.dtype == np.uint8
    assert all(np.array_equal(a.array, b.array) for a, b in zip(plain, again))
    assert not np.array_equal(plain[3].array, drifted[3].array)
    assert {f.meta["subtype"] for f in plain} <= {"good", "bruise", "rot", "scab", "cut",
                                                   "insect_hole"}


def test_synth_source_from_a_url_and_its_errors() -> None:
    source = open_source("synth://?rate=500&count=2&size=64&seed=3")
    assert isinstance(source, SynthSource) and len(list(source)) == 2
    with pytest.raises(ConfigError, match="numbers"):
        open_source("synth://?rate=fast")
    with pytest.raises(ConfigError, match="drift"):
        open_source("synth://?drift=earthquake")


def test_video_file_frames(tmp_path: Path) -> None:
    import av

    path = tmp_path / "belt.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            pixels = np.full((32, 32, 3), 40 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    source = open_source(str(path))
    frames = list(source)
    source.close()
    assert isinstance(source, VideoSource)
    assert [f.item_id for f in frames] == [f"belt-{i:06d}" for i in range(5)]
    assert frames[4].array.shape == (32, 32, 3) and frames[4].array.mean() > frames[0].array.mean()


def test_unknown_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown frame source gige://"):
        open_source("gige://camera1")
    with pytest.raises(NotFoundError, match="No folder or video"):
        open_source(str(tmp_path / "nothing-here"))


def test_a_usb_camera_that_is_not_plugged_in_is_one_sentence() -> None:
    with pytest.raises(NotFoundError, match=r"Cannot open video /dev/video97 .*check the path"):
        open_source("/dev/video97")  # V4L2 through PyAV; no camera on this machine
