"""Fixtures for the data stage: a small project and generated images (no network, tiny files)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visionline.config import Project, dump_config, parse_config

PROJECT_YAML = """
name: tiles
classes:
- name: good
- name: defect
  subtypes: [blowhole, crack]
"""


def jpeg_bytes(seed: int, size: int = 48, quality: int = 90) -> bytes:
    """A small JPEG with random smooth content and shapes: distinct seeds → distinct pHashes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = x0 + int(rng.integers(4, size // 2)), y0 + int(rng.integers(4, size // 2))
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_image(path: Path, seed: int, **kwargs: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(seed, **kwargs))
    return path


def write_mask(path: Path, size: int = 48) -> Path:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((5, 5, 20, 20), fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask.save(path, "PNG")
    return path


class ImageFactory:
    """The image helpers above as a fixture (test modules cannot import conftest directly)."""

    jpeg_bytes = staticmethod(jpeg_bytes)
    write_image = staticmethod(write_image)
    write_mask = staticmethod(write_mask)


@pytest.fixture
def imgs() -> ImageFactory:
    return ImageFactory()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    (root / "visionline.yaml").write_text(dump_config(parse_config(PROJECT_YAML)))
    return Project.load(root)


@pytest.fixture
def repo(project: Project):
    from visionline.data import DatasetRepo

    return DatasetRepo(project)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """good/ (6), blowhole/ (4), crack/ (3): 13 distinct images."""
    root = tmp_path / "images"
    seed = 0
    for folder, count in (("good", 6), ("blowhole", 4), ("crack", 3)):
        for i in range(count):
            write_image(root / folder / f"{folder}_{i}.jpg", seed)
            seed += 1
    return root
