"""GenICam cameras: what can be checked without a camera or a GenTL producer (none exists here):
the one-sentence errors, and camera buffers of each supported pixel format becoming RGB frames."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from visionline.edge import open_source
from visionline.edge._config import validate_edge_config
from visionline.edge._genicam import to_rgb
from visionline.errors import ConfigError, NotFoundError

RNG = np.random.default_rng(4)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def test_a_missing_producer_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"No GenTL producer at .*missing\.cti; install the "
                       r"camera vendor's GenTL producer"):
        open_source(f"genicam://{tmp_path}/missing.cti?serial=1")
    (tmp_path / "producer.so").write_bytes(b"\x7fELF")
    with pytest.raises(NotFoundError, match="pass its .cti file"):
        open_source(f"genicam://{tmp_path}/producer.so")


def test_missing_harvesters_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    producer = tmp_path / "vendor.cti"
    producer.write_bytes(b"\x7fELF")
    monkeypatch.setitem(sys.modules, "harvesters", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "harvesters.core", None)
    with pytest.raises(ConfigError) as err:
        open_source(f"genicam://{producer}?serial=22301234")
    assert str(err.value) == ("GenICam cameras need the harvesters package; install it with "
                              "pip install 'visionline[genicam]'.")


def test_the_scheme_passes_the_config_and_a_bad_timeout_is_one_sentence(tmp_path: Path) -> None:
    settings = validate_edge_config({"source": "genicam:///opt/vendor/producer.cti?serial=7",
                                     "bundle": "b", "pubkey": "k.pub"})
    assert settings.source.startswith("genicam://")
    with pytest.raises(ConfigError, match="timeout=1"):
        open_source(f"genicam://{tmp_path}/p.cti?timeout=soon")


def test_mono_and_rgb_buffers_become_rgb_frames() -> None:
    gray = RGB[:, :, 0]
    assert np.array_equal(to_rgb(gray.ravel(), 8, 6, "Mono8"), np.stack([gray] * 3, axis=2))
    twelve = gray.astype(np.uint16) << 4 | 0xF  # 12-bit samples: the top 8 bits are kept
    assert np.array_equal(to_rgb(twelve.ravel(), 8, 6, "Mono12p")[:, :, 1], gray)
    assert np.array_equal(to_rgb(RGB.ravel(), 8, 6, "RGB8"), RGB)
    assert np.array_equal(to_rgb(RGB[:, :, ::-1].ravel(), 8, 6, "BGR8"), RGB)
    rgba = np.concatenate([RGB, np.full((6, 8, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(to_rgb(rgba.ravel(), 8, 6, "RGBa8"), RGB)
    out = to_rgb(RGB.ravel(), 8, 6, "RGB8")
    assert out.dtype == np.uint8 and out.flags.c_contiguous


@pytest.mark.parametrize("pattern", ["RG", "GR", "GB", "BG"])
def test_bayer_mosaics_are_demosaiced_per_cell(pattern: str) -> None:
    # A mosaic of a known half-resolution image: each 2x2 cell holds its R, G, G, B samples.
    small = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    where = {"RG": "RGGB", "GR": "GRBG", "GB": "GBRG", "BG": "BGGR"}[pattern]
    mosaic = np.zeros((6, 8), np.uint8)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        mosaic[dy::2, dx::2] = small[:, :, "RGB".index(where[k])]
    out = to_rgb(mosaic.ravel(), 8, 6, f"Bayer{pattern}8")
    assert out.shape == (3, 4, 3) and np.array_equal(out, small)
    sixteen = mosaic.astype(np.uint16) << 8
    assert np.array_equal(to_rgb(sixteen.ravel(), 8, 6, f"Bayer{pattern}16"), small)


def test_unconvertible_buffers_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="PixelFormat YCbCr422_8.*set the camera's PixelFormat"):
        to_rgb(np.zeros(96, np.uint8), 8, 6, "YCbCr422_8")
    with pytest.raises(ConfigError, match="holds 40 values, not 8x6x3 for RGB8; check the camera"):
        to_rgb(np.zeros(40, np.uint8), 8, 6, "RGB8")
