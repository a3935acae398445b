"""The lifecycle on a tiny project: fit on good train images, threshold on val good images,
MLflow run with dataset input and artifacts, registry, evaluation with pixel metrics."""

from __future__ import annotations

import json

import pytest
import yaml
from records_support import stored_record

from visionline.anomaly import AnomalyConfig, evaluate_anomaly, fit_anomaly
from visionline.config import Project, init_project
from visionline.data import DatasetRepo
from visionline.errors import DataError
from visionline.preprocessing import ResizeMode

from .conftest import HEIGHT, WIDTH, tile

LAYOUT = {"train": (6, 1), "val": (6, 2), "test": (5, 4)}


def make_project(root) -> Project:
    path = init_project(root, name="tiles")
    config = yaml.safe_load(path.read_text())
    config["classes"] = [{"name": "good"}, {"name": "defect", "subtypes": ["square"]}]
    config["goals"].update({"max_false_reject_rate": 0.2, "min_defect_recall": 0.5})
    path.write_text(yaml.safe_dump(config))
    return Project.load(root)


def make_dataset(project: Project, layout=LAYOUT) -> str:
    """Good and square-defect tiles with masks; the last test defect's mask is empty."""
    repo = DatasetRepo(project)
    records = []
    seed = 0
    for split, (n_good, n_defect) in layout.items():
        for index in range(n_good + n_defect):
            seed += 1
            defect = index >= n_good
            image, mask = tile(seed, defect)
            if defect and split == "test" and index == n_good + n_defect - 1:
                mask = mask.point(lambda _: 0)
            subtype = "square" if defect else None
            records.append(stored_record(repo, image, f"{split}/{index}.png", split, subtype, mask))
    return repo.create_version(records, name="tiles").id


CONFIG = AnomalyConfig(
    image_size=128,
    batch_size=8,
    max_bank=128,
    coreset_ratio=0.1,
    stages=[2, 4],  # finer than the defaults' stride-16 stages: these tiles are only 96x72 px
    neighbourhood=3,
    resize_mode=ResizeMode.LETTERBOX,
)


@pytest.mark.slow
def test_fit_track_register_and_evaluate_with_pixel_metrics(tmp_path):
    from mlflow import MlflowClient

    from visionline.registry import CHALLENGER, register

    project = make_project(tmp_path)
    dataset = make_dataset(project)
    result = fit_anomaly(CONFIG, dataset, project, out_dir=tmp_path / "run", progress=False)
    assert result.stats.n_images == 6  # the train split's defect image is not fitted
    assert result.spec.threshold == result.operating_point.threshold
    assert result.val_metrics["roc_auc"] == 1.0

    run = MlflowClient(project.tracking_uri).get_run(result.run_id)
    assert run.data.params["method"] == "anomaly" and run.data.params["image_size"] == "128"
    assert run.data.tags["visionline.model_kind"] == "anomaly"
    assert run.inputs.dataset_inputs[0].dataset.digest == dataset[:36]
    assert run.data.metrics["bank_size"] == result.stats.bank_size
    artifacts = {a.path for a in MlflowClient(project.tracking_uri).list_artifacts(result.run_id)}
    assert {"checkpoint", "preprocessing.json", "fit.json", "config"} <= artifacts

    found = register(project, result.run_id, "tiles-anomaly", tags={"kind": "anomaly"})
    assert found["alias"] == CHALLENGER and found["tags"]["dataset_version"] == dataset

    evaluation = evaluate_anomaly(
        project,
        "models:/tiles-anomaly@challenger",
        dataset,
        output_dir=tmp_path / "eval",
        bootstrap=50,
    )
    metrics = json.loads(evaluation.metrics_path.read_text())
    assert metrics["roc_auc"] == 1.0 and metrics["subtype_recall"]["square"] == 1.0
    assert metrics["n_good"] == 5 and metrics["n_defect"] == 4
    assert metrics["pixel_images"] == 8 and metrics["pixel_images_without_mask"] == 1
    assert metrics["pixel_auroc"] > 0.9 and metrics["aupro"] > 0.5
    assert metrics["gates"]["passed"] is True
    assert "False rejects" in evaluation.report_path.read_text()
    version_tags = MlflowClient(project.tracking_uri).get_model_version("tiles-anomaly", "1").tags
    assert float(version_tags["metric.test_roc_auc"]) == 1.0


def test_a_train_split_of_defect_images_only_is_refused(tmp_path):
    project = make_project(tmp_path)
    dataset = make_dataset(project, {"train": (0, 2), "val": (2, 1), "test": (1, 1)})
    with pytest.raises(DataError, match="holds only defect images"):
        fit_anomaly(CONFIG, dataset, project, progress=False, track=False)


def test_a_val_split_without_good_images_is_refused(tmp_path):
    project = make_project(tmp_path)
    dataset = make_dataset(project, {"train": (2, 0), "val": (0, 2), "test": (1, 1)})
    with pytest.raises(DataError, match="val split .* has no good images"):
        fit_anomaly(CONFIG, dataset, project, progress=False, track=False)


def test_a_bank_beyond_the_memory_budget_is_refused_before_reading_images(tmp_path):
    from visionline.errors import TrainingError

    project = make_project(tmp_path)
    dataset = make_dataset(project, {"train": (3, 0), "val": (2, 1), "test": (1, 1)})
    config = CONFIG.model_copy(update={"max_memory_gb": 1e-6})
    with pytest.raises(TrainingError, match=r"would need .* GiB .* lower max_candidates"):
        fit_anomaly(config, dataset, project, progress=False, track=False)


def test_a_stored_mask_of_another_size_than_its_image_is_refused_in_pixel_metrics(tmp_path):
    import numpy as np
    from PIL import Image

    from visionline.anomaly import pixel_metrics
    from visionline.preprocessing import Preprocessing

    project = make_project(tmp_path)
    repo = DatasetRepo(project)
    image, _ = tile(1, defect=True)
    half_mask = Image.new("L", (WIDTH // 2, HEIGHT), 255)
    record = stored_record(repo, image, "test/0.png", "test", "square", half_mask)
    maps = np.zeros((1, 128, 128), np.float32)
    with pytest.raises(DataError, match="supply a mask of the image's size"):
        pixel_metrics([record], maps, repo.blobs, Preprocessing(size=128))
