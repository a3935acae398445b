"""Builders for training tests: a tiny project with a split dataset of 32×32 PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import yaml
from mlflow_support import seed_tracking_db
from PIL import Image

from visionline.config import Project, init_project

CLASSES = [
    {"name": "good"},
    {"name": "defect", "subtypes": ["scratch", "dent"]},
]


def tiny_image(kind: str, rng: np.random.Generator, size: int = 32) -> bytes:
    """A grey tile with noise; scratches get a dark diagonal line, dents a dark blob."""
    pixels = rng.normal(170, 12, (size, size, 3)).clip(0, 255)
    if kind == "scratch":
        offset = int(rng.integers(-6, 6))
        for i in range(size):
            j = min(size - 1, max(0, i + offset))
            pixels[i, max(0, j - 1) : j + 1] = 40
    elif kind == "dent":
        cy, cx = rng.integers(8, size - 8, 2)
        yy, xx = np.ogrid[:size, :size]
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < 20] = 60
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_project(root: Path, per_class: dict[str, tuple[int, int]] | None = None):
    """A project at `root` and a dataset version with train/val splits; returns (project, version)."""
    from visionline.data import DatasetRepo, ImageRecord

    init_project(root, name="tiny-tiles")
    path = root / "visionline.yaml"
    data = yaml.safe_load(path.read_text())
    data["classes"] = CLASSES
    data["goals"]["image_size"] = 32
    data["goals"]["max_false_reject_rate"] = 0.1
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    project = Project.load(root)
    seed_tracking_db(project)
    repo = DatasetRepo(project)
    rng = np.random.default_rng(0)
    per_class = per_class or {"good": (8, 4), "scratch": (5, 3), "dent": (5, 3)}
    records = []
    for kind, (n_train, n_val) in per_class.items():
        for i in range(n_train + n_val):
            data_bytes = tiny_image(kind, rng)
            sha = repo.blobs.put(data_bytes)
            records.append(
                ImageRecord(
                    sha256=sha,
                    path=f"{kind}/{i:03d}.png",
                    bytes=len(data_bytes),
                    width=32,
                    height=32,
                    mode="RGB",
                    label="good" if kind == "good" else "defect",
                    subtype=None if kind == "good" else kind,
                    source="test",
                    split="train" if i < n_train else "val",
                )
            )
    version = repo.create_version(records, name="tiny", parent=None, metadata={})
    return project, version


def tiny_config(**overrides):
    """Settings that train mobilenetv3_small_100 from scratch at 32 px for two epochs."""
    from visionline.train import TrainConfig

    values = {
        "backbone": "mobilenetv3_small_100",
        "pretrained": "none",
        "epochs": 2,
        "batch_size": 8,
        "lr": 3e-3,
        "freeze_epochs": 0,
        "augment": 0.3,
        "patience": 5,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig(**values)
