"""A tiny project whose pipeline runs end to end in about a minute on 2 cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mlflow_support import seed_tracking_db

from visionline.config import Project, init_project


def make_project(root: Path, images: int = 160, **pipeline: Any) -> Project:
    """Synthetic apples in `raw/`, a 1-epoch mobilenet, and `pipeline` overrides per step."""
    from visionline.synth import SynthConfig, generate_dataset

    init_project(root)
    generate_dataset(SynthConfig(size=48, seed=3, defect_rate=0.4), root / "raw", images)
    defaults: dict[str, Any] = {
        "ingest": {"source": "raw"},
        "validate": {"min_images_per_class": 2},
        "train": {"epochs": 1, "backbone": "mobilenetv3_small_100", "pretrained": "none",
                  "batch_size": 32},
        "evaluate": {"bootstrap": 20},
        "gate": {"enforce": False},
        # one calibration method and a flip budget the 1-epoch model's clustered scores stay in,
        # so no float-group sweep: tests/export/test_quantize.py covers the search itself
        "quantise": {"calibration_images": 24, "calibration": "minmax", "tolerance": 0.25},
        "benchmark": {"enabled": False, "runs": 5},
    }
    for step, settings in pipeline.items():
        defaults[step] = {**defaults.get(step, {}), **settings}
    project = configure(root, **defaults)
    seed_tracking_db(project)
    return project


def configure(root: Path, image_size: int = 48, **steps: Any) -> Project:
    """Merge step settings into visionline.yaml (None removes a key); returns the fresh project."""
    path = root / "visionline.yaml"
    config = yaml.safe_load(path.read_text())
    config["goals"]["image_size"] = image_size
    for step, settings in steps.items():
        if not isinstance(settings, dict):
            config["pipeline"][step] = settings
            continue
        target = config["pipeline"].setdefault(step, {})
        for key, value in settings.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return Project.load(root)


def statuses(run: Any) -> dict[str, str]:
    return {name: record.status for name, record in run.steps.items()}


def ids(run: Any) -> dict[str, dict[str, str]]:
    return {
        name: {key: artifact.id for key, artifact in record.outputs.items()}
        for name, record in run.steps.items()
    }
