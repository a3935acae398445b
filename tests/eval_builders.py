"""Builders shared by the evaluate, registry and eval-CLI tests: a tiny project with a split
dataset version of coloured PNGs, a model whose head is fitted on it, and MLflow runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow_support import seed_tracking_db
from PIL import Image
from records_support import stored_record

from visionline.config import Project, init_project
from visionline.data import DatasetRepo
from visionline.preprocessing import Preprocessing

CLASSES = ["good", "bruise", "rot"]
COUNTS = {"train": (16, 8, 8), "val": (40, 10, 10), "calib": (50, 10, 10), "test": (40, 10, 10)}
SIZE = 32


def make_project(root: Path, goals: dict | None = None) -> Project:
    """A project with classes good + defect/{bruise, rot} and lenient goals."""
    path = init_project(root, name="eval-test")
    config = yaml.safe_load(path.read_text())
    config["classes"] = [{"name": "good"}, {"name": "defect", "subtypes": ["bruise", "rot"]}]
    config["goals"].update(
        {"max_false_reject_rate": 0.1, "min_defect_recall": 0.5, **(goals or {})}
    )
    path.write_text(yaml.safe_dump(config))
    project = Project.load(root)
    seed_tracking_db(project)
    return project


def _image(kind: str, rng: np.random.Generator) -> Image.Image:
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[...] = (60, 170, 60)
    if kind == "bruise":
        pixels[8:24, 8:24] = (70, 40, 90)
    elif kind == "rot":
        pixels[...] = (120, 70, 20)
    noise = rng.integers(-10, 11, pixels.shape)
    return Image.fromarray(np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8))


def make_dataset(
    project: Project, seed: int = 0, splits: tuple[str, ...] = ("train", "val", "test")
) -> str:
    """A dataset version with the given splits; returns its id."""
    rng = np.random.default_rng(seed)
    repo = DatasetRepo(project)
    records = []
    for split in splits:
        for kind, count in zip(CLASSES, COUNTS[split]):
            for index in range(count):
                subtype = None if kind == "good" else kind
                path = f"{split}/{kind}/{index}.png"
                records.append(stored_record(repo, _image(kind, rng), path, split, subtype))
    return repo.create_version(records, name=f"eval-{seed}-{'-'.join(splits)}").id


def make_model(project: Project, dataset: str, path: Path, useless: bool = False) -> Path:
    """A mobilenet whose head is fitted on the train split (or zeroed when `useless`)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from visionline.evaluate import predict_records
    from visionline.train import ModelSpec, build_model, save_model

    torch.manual_seed(0)
    spec = ModelSpec("mobilenetv3_small_100", list(CLASSES), Preprocessing(size=SIZE))
    model = build_model(spec).eval()
    with torch.no_grad():
        if useless:
            model.head.weight.zero_()
            model.head.bias.zero_()
        else:
            repo = DatasetRepo(project)
            train = repo.get(dataset).split_records("train")
            found = predict_records(model, spec, train, repo.blobs)
            classifier = LogisticRegression(C=10.0, max_iter=2000).fit(
                found.embeddings, found.labels
            )
            model.head.weight.copy_(torch.from_numpy(classifier.coef_).float())
            model.head.bias.copy_(torch.from_numpy(classifier.intercept_).float())
    return save_model(path, model, spec)


def log_run(project: Project, model_path: Path, dataset: str, with_model: bool = True) -> str:
    """An MLflow run laid out like `visionline.train.fit` logs it; returns the run id."""
    import mlflow

    from visionline.train import load_model

    model, spec = load_model(model_path)
    from visionline.train._tracking import Tracker, ensure_experiment

    mlflow.set_tracking_uri(project.tracking_uri)
    experiment_id = ensure_experiment(project.tracking_uri, "eval-tests")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tag("dataset_version", dataset)
        mlflow.log_metric("val_accuracy", 0.9)
        mlflow.log_dict(spec.preprocessing.to_dict(), "preprocessing.json")
        if with_model:  # the checkpoint and the MLflow model, by fit's own code
            example = np.zeros((2, 3, SIZE, SIZE), dtype=np.float32)
            tracker = Tracker(project.tracking_uri, "eval-tests")
            tracker.log_outputs({"checkpoint": model_path}, model.eval(), example)
        else:
            mlflow.log_artifact(str(model_path), artifact_path="checkpoint")
    return run.info.run_id


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


@dataclass
class EvalEnv:
    project: Project
    dataset: str
    model: Path
    useless_model: Path


@pytest.fixture(scope="session")
def eval_env(tmp_path_factory: pytest.TempPathFactory) -> EvalEnv:
    """One project, dataset version and two models for all evaluation, registry and eval-CLI
    tests (built once a session; each test registers under its own model name). Registered as a
    fixture by tests/conftest.py alone: pytest keeps one session value per place a fixture is
    imported into."""
    root = tmp_path_factory.mktemp("eval-project")
    project = make_project(root)
    dataset = make_dataset(project)
    model = make_model(project, dataset, root / "models" / "good" / "model.pt")
    useless = make_model(project, dataset, root / "models" / "useless" / "model.pt", useless=True)
    return EvalEnv(project, dataset, model, useless)
