"""`pipeline.train.method: anomaly`: the detector goes through evaluate, export, bundle,
register (compared through the registry's gates) and deploy like a supervised model."""

from __future__ import annotations

import json

import pytest
from pipeline_support import make_project, statuses

from visionline.config import PipelineConfig
from visionline.pipeline._steps_model import train_config


def test_anomaly_is_a_train_method_whose_settings_never_reach_train_config():
    config = PipelineConfig.model_validate(
        {"train": {"method": "anomaly", "anomaly": {"image_size": 64}}}
    )
    assert config.train["method"] == "anomaly"
    assert train_config({**config.train, "epochs": 2}).epochs == 2


@pytest.mark.slow
def test_an_anomaly_pipeline_ships_a_registered_anomaly_bundle(tmp_path):
    from mlflow import MlflowClient

    from visionline.pipeline import run_pipeline

    anomaly = {"image_size": 64, "max_bank": 128, "coreset_ratio": 0.05, "autocontrast": False}
    project = make_project(tmp_path / "project", images=60, train={"method": "anomaly",
                                                                     "anomaly": anomaly})
    run = run_pipeline(project, progress=False)
    assert run.status == "succeeded", run
    assert statuses(run)["train"] == "done" and statuses(run)["deploy"] == "done"
    outputs = {name: record.outputs for name, record in run.steps.items()}
    model = outputs["train"]["model"]
    assert model.meta["kind"] == "anomaly" and model.meta["bank_size"] <= 128
    assert outputs["export"]["onnx"].meta["parity"]["decisions_differ"] == 0
    assert outputs["quantise"]["int8"].meta["accepted"] is False
    evaluation = json.loads(outputs["evaluate"]["evaluation"].resolve(project).read_text())
    assert evaluation["pixel_images"] == evaluation["n_good"]  # defects have no masks here
    assert 0.0 <= evaluation["roc_auc"] <= 1.0
    bundle = outputs["bundle"]["bundle"].resolve(project)
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["kind"] == "anomaly"
    assert manifest["lineage"]["mlflow_run_id"] == model.meta["run_id"]
    registered = outputs["register"]["registered_model"].meta
    version = MlflowClient(project.tracking_uri).get_model_version(
        registered["name"], registered["version"]
    )
    assert version.tags["kind"] == "anomaly" and registered["reasons"]
    deployment = outputs["deploy"]["deployment"].meta
    assert deployment["deployed"] == registered["promoted"]


@pytest.mark.slow
def test_both_routes_are_registered_and_judged_by_the_champion_comparison(tmp_path):
    import yaml
    from mlflow import MlflowClient

    from visionline.config import Project
    from visionline.pipeline import run_pipeline

    anomaly = {"image_size": 64, "max_bank": 128, "coreset_ratio": 0.05, "autocontrast": False}
    project = make_project(tmp_path / "project", images=60, train={"method": "both",
                                                                     "anomaly": anomaly})
    # Goals every model meets (the threshold at a 50% false-reject rate on val good images, a
    # test FRR up to 99.9%, any detected defect), so the anomaly model, registered first, is
    # certainly promoted and the supervised model is then judged against it by McNemar's test.
    config_path = project.root / "visionline.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["goals"].update(
        max_false_reject_rate=0.999, threshold_false_reject_rate=0.5, min_defect_recall=0.001
    )
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = run_pipeline(Project.load(project.root), progress=False)
    assert run.status == "succeeded", run
    train = run.steps["train"].outputs
    assert train["model"].meta["backbone"] == "mobilenetv3_small_100"
    assert train["anomaly_model"].meta["kind"] == "anomaly"
    registered = run.steps["register"].outputs["registered_model"].meta
    assert registered["anomaly"]["version"] == "1" and registered["version"] == "2"
    assert registered["anomaly"]["promoted"] is True
    assert "there is no champion yet" in registered["anomaly"]["reasons"]
    client = MlflowClient(project.tracking_uri)
    first, second = (client.get_model_version(registered["name"], v) for v in ("1", "2"))
    assert first.tags["kind"] == "anomaly" and first.run_id == train["anomaly_model"].meta["run_id"]
    assert second.run_id == train["model"].meta["run_id"]
    # the supervised model was judged against the anomaly champion on the same test images
    assert "McNemar" in " ".join(registered["reasons"])
    assert second.tags["promotion"].startswith(("promoted", "rejected"))
