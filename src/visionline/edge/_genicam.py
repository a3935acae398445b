"""GenICam cameras (GigE Vision, USB3 Vision) through `harvesters` and the vendor's GenTL producer.

`genicam:///opt/vendor/lib/producer.cti?serial=22301234&PixelFormat=BayerRG8&ExposureTime=800`
opens the camera with that serial number (the first one without `serial=`); every other query
key is written to the camera's GenICam node of that name before acquisition starts. Frames become
RGB arrays here (`to_rgb`): mono, RGB/BGR and Bayer formats of 8 to 16 bits.

Untested on hardware here: no camera or GenTL producer exists on the development machines, so
the tests cover the one-sentence errors and the pixel conversion; the acquisition calls follow
the harvesters 1.4 API (`Harvester.create`, `ImageAcquirer.fetch`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from visionline.edge._frames import Frame
from visionline.errors import ConfigError, NotFoundError

__all__ = ["GenICamSource", "to_rgb"]

_BAYER = {"RG": (0, 1, 1, 2), "GR": (1, 0, 2, 1), "GB": (1, 2, 0, 1), "BG": (2, 1, 1, 0)}
"""Channel (0 R, 1 G, 2 B) at the top-left, top-right, bottom-left and bottom-right of a 2x2 cell."""

_FORMAT = re.compile(r"^(Mono|RGBa|BGRa|RGB|BGR|Bayer(RG|GR|GB|BG))(\d+)(p|Packed)?$")
SUPPORTED = "Mono8-16, RGB8/BGR8 (and their 10-16 bit and alpha forms), Bayer RG/GR/GB/BG 8-16"


def to_rgb(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """A camera buffer (harvesters' 1-D `component.data`, packed formats already expanded) as an
    (H, W, 3) uint8 RGB array. Bayer mosaics are demosaiced by 2x2 cells, so they come out at
    half the width and height (the model resizes far below either anyway)."""
    match = _FORMAT.match(pixel_format)
    if match is None:
        raise ConfigError(
            f"The camera sends PixelFormat {pixel_format}, which the line agent cannot convert; "
            f"set the camera's PixelFormat to one of {SUPPORTED} (e.g. genicam://…&PixelFormat=Mono8)."
        )
    kind, bayer, bits = match.group(1), match.group(2), int(match.group(3))
    pixels = np.asarray(data)
    channels = {"Mono": 1, "RGB": 3, "BGR": 3, "RGBa": 4, "BGRa": 4}.get(kind, 1)
    if pixels.size != width * height * channels:
        raise ConfigError(
            f"The camera buffer holds {pixels.size} values, not {width}x{height}x{channels} for "
            f"{pixel_format}; check the camera's Width, Height and PixelFormat."
        )
    if bits > 8:  # 10-16 bit samples arrive in uint16: keep the top 8 bits
        pixels = (pixels.astype(np.uint16) >> (bits - 8)).astype(np.uint8)
    else:
        pixels = pixels.astype(np.uint8, copy=False)
    if kind == "Mono":
        return np.repeat(pixels.reshape(height, width, 1), 3, axis=2)
    if bayer:
        return _demosaic(pixels.reshape(height, width), _BAYER[bayer])
    image = pixels.reshape(height, width, channels)[:, :, :3]
    return np.ascontiguousarray(image[:, :, ::-1] if kind.startswith("BGR") else image)


def _demosaic(mosaic: np.ndarray, layout: tuple[int, int, int, int]) -> np.ndarray:
    """Each 2x2 cell of the mosaic → one RGB pixel (the two greens averaged)."""
    h, w = mosaic.shape[0] // 2 * 2, mosaic.shape[1] // 2 * 2
    cells = mosaic[:h, :w].astype(np.uint16)
    corners = [cells[0::2, 0::2], cells[0::2, 1::2], cells[1::2, 0::2], cells[1::2, 1::2]]
    out = np.zeros((h // 2, w // 2, 3), np.uint16)
    counts = np.bincount(layout, minlength=3)
    for channel, corner in zip(layout, corners):
        out[:, :, channel] += corner
    return (out // counts).astype(np.uint8)


def _value(text: str) -> Any:
    """A GenICam node value from the URL: an integer, a number, true/false, or the text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


class GenICamSource:
    """Frames from a GenICam camera; the item id counts frames (`<serial>-000042`)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        producer = Path(parts.netloc + parts.path)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.serial = options.pop("serial", None)
        try:
            self.timeout_s = float(options.pop("timeout", 1.0))
        except ValueError:
            raise ConfigError(f"genicam:// timeout in {url!r} must be seconds, e.g. timeout=1.") \
                from None
        if producer.suffix.lower() != ".cti" or not producer.is_file():
            raise NotFoundError(
                f"No GenTL producer at {producer}; install the camera vendor's GenTL producer and "
                "pass its .cti file as genicam:///PATH/TO/producer.cti."
            )
        try:
            from harvesters.core import Harvester
        except ImportError:
            raise ConfigError(
                "GenICam cameras need the harvesters package; install it with "
                "pip install 'visionline[genicam]'."
            ) from None
        self.prefix = self.serial or "genicam"
        self._stop = threading.Event()
        self._acquirer: Any = None
        self._harvester = Harvester()
        self._harvester.add_file(str(producer))
        self._harvester.update()
        self._acquirer = self._open(producer)
        node_map = self._acquirer.remote_device.node_map
        for name, text in options.items():
            try:
                getattr(node_map, name).value = _value(text)
            except Exception as exc:  # GenApi raises its own types for a bad node
                self.close()
                raise ConfigError(
                    f"The camera refused the setting {name}={text} ({exc}); check the node name "
                    "and value in the camera's GenICam documentation."
                ) from exc
        self._acquirer.start()

    def _open(self, producer: Path) -> Any:
        found = [info.property_dict.get("serial_number", "?")
                 for info in self._harvester.device_info_list]
        if not found:
            self._harvester.reset()
            raise NotFoundError(
                f"The GenTL producer {producer} finds no camera; check the camera's power, cable "
                "and network (GigE cameras must be in the line computer's subnet)."
            )
        if self.serial is not None and self.serial not in found:
            self._harvester.reset()
            raise NotFoundError(
                f"No camera with serial {self.serial} (found {', '.join(map(str, found))}); fix "
                "serial= in the genicam:// URL."
            )
        key = {"serial_number": self.serial} if self.serial else 0
        return self._harvester.create(key)

    def __iter__(self) -> Iterator[Frame]:
        from genicam.gentl import TimeoutException

        n = 0
        while not self._stop.is_set():
            try:
                with self._acquirer.fetch(timeout=self.timeout_s) as buffer:
                    captured = time.time()
                    image = buffer.payload.components[0]
                    array = to_rgb(image.data, image.width, image.height, image.data_format)
            except TimeoutException:
                continue  # no trigger yet; the agent's camera timeout raises the alarm
            yield Frame(f"{self.prefix}-{n:06d}", captured, array=array,
                        meta={"camera": self.prefix})
            n += 1

    def close(self) -> None:
        self._stop.set()
        acquirer, self._acquirer = self._acquirer, None
        if acquirer is not None:
            acquirer.stop()
            acquirer.destroy()
        self._harvester.reset()
