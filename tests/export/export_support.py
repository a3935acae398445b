"""The export tests' data and trained model: a project with an easy dataset of apple images and a
mobilenetv3_small_100 trained briefly on it, built once per test session.

tests/cli/test_export.py, tests/monitor and tests/pipeline load conftest.py as modules of their
own; their copies of the fixture all come to the one cached `build_workspace` here (a module is
imported once), so the model is trained once per test run, not once per copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

SIZE = 64
CLASSES = ["good", "bruise", "rot"]


def _apple(rng: np.random.Generator, kind: str) -> Image.Image:
    """A 96×96 'apple': green/red disk on a conveyor grey; defects are dark blobs of two shapes."""
    image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(90, 140, size=3)))
    draw = ImageDraw.Draw(image)
    cx, cy, r = (int(v) for v in (rng.integers(40, 56), rng.integers(40, 56), rng.integers(28, 36)))
    colour = (int(rng.integers(150, 230)), int(rng.integers(120, 220)), int(rng.integers(20, 70)))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    if kind == "bruise":
        s = int(rng.integers(10, 16))
        draw.ellipse((cx - s, cy - s, cx + s, cy + s), fill=(60, 35, 20))
    elif kind == "rot":
        s = int(rng.integers(12, 18))
        draw.rectangle((cx - s, cy - s // 2, cx + s, cy + s // 2), fill=(25, 25, 10))
    noise = rng.normal(0, 6, size=(96, 96, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def make_image_folder(root: Path, counts: dict[str, dict[str, int]], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for kind, count in per_class.items():
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _apple(rng, kind).save(folder / f"{kind}_{i}.png")
    return root


_WORKSPACES: dict[int, dict] = {}
"""Built workspaces by id of the session's TempPathFactory (a dataclass, so not hashable)."""


def build_workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Project + split dataset version + a mobilenetv3_small_100 trained briefly on it."""
    key = id(tmp_path_factory)
    if key not in _WORKSPACES:
        _WORKSPACES[key] = _train_workspace(tmp_path_factory)
    return _WORKSPACES[key]


def _train_workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch

    from visionline.config import Project, init_project
    from visionline.data import DatasetRepo
    from visionline.export._data import load_split
    from visionline.export._prune import finetune
    from visionline.preprocessing import Preprocessing
    from visionline.train import ModelSpec, build_model, save_model

    root = tmp_path_factory.mktemp("export-project")
    init_project(root)
    project = Project.load(root)
    images = make_image_folder(
        tmp_path_factory.mktemp("images"),
        {
            "train": {"good": 24, "bruise": 12, "rot": 12},
            "val": {"good": 24, "bruise": 8, "rot": 8},
        },
    )
    repo = DatasetRepo(project)
    version = repo.add(images, name="easy").version
    spec = ModelSpec(
        backbone="mobilenetv3_small_100",
        class_names=CLASSES,
        preprocessing=Preprocessing(size=SIZE),
    )
    torch.manual_seed(0)
    model = build_model(spec)
    train = load_split(version, repo.blobs, "train", spec.preprocessing)
    finetune(model, spec.class_names, spec.preprocessing, train, epochs=10, lr=3e-3, batch_size=16)
    model_path = save_model(
        root / "model.pt", model, spec, run_id="run-123", dataset_version=version.id
    )
    untrained = save_model(root / "untrained.pt", build_model(spec).eval(), spec)
    return {
        "project": project,
        "version": version,
        "model": model_path,
        "untrained": untrained,
        "root": root,
    }
