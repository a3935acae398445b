"""A tiny project for leaderboard tests: striped tiles, good or with a dark square or a bright
scratch, split into train / val / calib / test."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from mlflow_support import seed_tracking_db
from PIL import Image, ImageDraw
from records_support import stored_record

from visionline.config import Project, init_project
from visionline.data import DatasetRepo

SIZE = 48
LAYOUT = {"train": (10, 3), "val": (5, 1), "calib": (8, 2), "test": (8, 2)}
"""split: (good images, defect images per subtype)."""
SUBTYPES = ("square", "scratch")


def tile(seed: int, subtype: str | None) -> Image.Image:
    rng = np.random.default_rng(seed)
    x = np.arange(SIZE)[None, :]
    y = np.arange(SIZE)[:, None]
    pixels = 128 + 40 * np.sin(2 * np.pi * (x + 0.2 * y + rng.uniform(0, 8)) / 8.0)
    pixels = pixels + rng.normal(0, 3, (SIZE, SIZE))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    left, top = int(rng.integers(4, SIZE - 20)), int(rng.integers(4, SIZE - 20))
    if subtype == "square":
        draw.rectangle((left, top, left + 14, top + 14), fill=(15, 15, 15))
    elif subtype == "scratch":
        draw.line((left, top, left + 16, top + 16), fill=(250, 250, 250), width=3)
    return image


def make_project(root, **goals) -> Project:
    path = init_project(root, name="tiles")
    config = yaml.safe_load(path.read_text())
    config["classes"] = [{"name": "good"}, {"name": "defect", "subtypes": list(SUBTYPES)}]
    config["goals"].update(
        {"max_false_reject_rate": 0.2, "min_defect_recall": 0.5, "image_size": 64, **goals}
    )
    path.write_text(yaml.safe_dump(config))
    project = Project.load(root)
    seed_tracking_db(project)
    return project


def make_dataset(project: Project, layout=LAYOUT) -> str:
    repo = DatasetRepo(project)
    records, seed = [], 0
    for split, (n_good, n_per_subtype) in layout.items():
        kinds = [None] * n_good + [s for s in SUBTYPES for _ in range(n_per_subtype)]
        for index, subtype in enumerate(kinds):
            seed += 1
            records.append(
                stored_record(repo, tile(seed, subtype), f"{split}/{index}.png", split, subtype)
            )
    return repo.create_version(records, name="tiles").id


@pytest.fixture
def tiles(tmp_path) -> tuple[Project, str]:
    project = make_project(tmp_path / "project")
    return project, make_dataset(project)
