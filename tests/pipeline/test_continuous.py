"""Continuous training: triggers from the prediction log, and the loop champion → production
images with verdicts → challenger on the same test set → promotion → hot swap on a live server."""

from __future__ import annotations

import csv
import hashlib
import time

import pytest
import yaml
from pipeline_support import configure, make_project

from visionline.errors import DataError
from visionline.monitor import LoggedPrediction, MonitorDB, PredictionLogger
from visionline.pipeline import check_triggers, retrain, run_pipeline
from visionline.pipeline._continuous import (
    build_holdout_version,
    build_retraining_version,
    split_holdout,
)


def _lenient_goals(project):
    """A 1-epoch model on 48 px apples must be able to become champion in these tests."""
    path = project.root / "visionline.yaml"
    config = yaml.safe_load(path.read_text())
    config["goals"].update(
        max_false_reject_rate=0.6, threshold_false_reject_rate=0.4, min_defect_recall=0.05
    )
    config["pipeline"]["retrain"] = {
        "min_new_labels": 10, "epochs": 1, "min_labelled_defects": 500, "min_holdout": 5,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return configure(project.root)


def _log(db_url, blobs, items):
    with PredictionLogger(db_url, blobs, sample_rate=1.0) as logger:
        logger.log(items)
        assert logger.flush()


def _prediction(name, image=None, flagged=False, ts=None, score=0.6, embedding=None):
    return LoggedPrediction(
        model=name, version="1", probabilities={"good": 1 - score, "bruise": score},
        defect_score=score, flagged=flagged, decision="defect" if flagged else "good",
        predicted_class="bruise", threshold=0.5, ts=ts or time.time(), image=image,
        embedding=embedding,
    )


def test_triggers_come_from_alarms_and_new_verdicts_after_the_last_retraining(tmp_path):
    from visionline.data import BlobStore

    project = _lenient_goals(make_project(tmp_path / "p", images=20))
    name = project.config.name
    db = MonitorDB(project.monitor_db_url)
    assert check_triggers(project, db) == []

    db.add_alarm({"ts": time.time(), "model": name, "version": "1", "window": 3,
                  "detectors": ["quality"], "statistics": {}, "p_values": {},
                  "cause": "lighting or product change: images darker", "details": {}})
    db.add_alarm({"ts": time.time() + 0.001, "model": name, "version": "1", "window": 7,
                  "detectors": ["quality"], "statistics": {}, "p_values": {},
                  "cause": "dirty lens: sharpness -1.1 SD", "details": {}})
    images = sorted((project.root / "raw").rglob("*.jpg"))[:12]
    items = [_prediction(name, path.read_bytes()) for path in images]
    _log(project.monitor_db_url, BlobStore(project.blob_store_uri), items)
    for item in items[:9]:
        db.add_feedback(item.id, "good", None, "cli")
    kinds = [t.kind for t in check_triggers(project, db)]
    assert kinds == ["drift"]
    for item in items[9:]:
        db.add_feedback(item.id, "good", None, "cli")
    triggers = check_triggers(project, db)
    assert [t.kind for t in triggers] == ["drift", "labels"]
    assert triggers[0].reason.startswith("2 drift alarm(s)")
    assert triggers[0].reason.endswith("latest: dirty lens: sharpness -1.1 SD")
    assert "12 new labelled" in triggers[1].reason
    assert check_triggers(project, db, since=time.time() + 1) == []


def test_a_retraining_version_keeps_the_test_split_and_adds_only_new_images(tmp_path):
    from visionline.data import BlobStore, DatasetRepo

    project = make_project(tmp_path / "p", images=40)
    run = run_pipeline(project, until="split", progress=False)
    base = DatasetRepo(project).get(run.steps["split"].outputs["dataset"].id)
    db = MonitorDB(project.monitor_db_url)
    with pytest.raises(DataError, match="No labelled production image"):
        build_retraining_version(project, base.id, db.feedback_frame(), 0.2)

    from visionline.synth import SynthConfig, generate_dataset

    generate_dataset(SynthConfig(size=48, seed=99), tmp_path / "line", 15)
    new_images = sorted((tmp_path / "line").rglob("*.jpg"))
    old_image = next((project.root / "raw").rglob("*.jpg"))
    items = [_prediction(project.config.name, p.read_bytes()) for p in [*new_images, old_image]]
    _log(project.monitor_db_url, BlobStore(project.blob_store_uri), items)
    for item in items:
        db.add_feedback(item.id, "defect", "rot", "labelstudio")

    version, added = build_retraining_version(project, base.id, db.feedback_frame(), 0.2)
    assert added == len({hashlib.sha256(p.read_bytes()).hexdigest() for p in new_images})
    assert version.parent == base.id
    test_images = sorted(r.sha256 for r in version.split_records("test"))
    assert test_images == sorted(r.sha256 for r in base.split_records("test"))
    production = [r for r in version.records if r.source.startswith("feedback")]
    assert {r.split for r in production} <= {"train", "val"}
    assert {r.subtype for r in production} == {"rot"}


@pytest.mark.slow
def test_the_loop_retrains_promotes_and_hot_swaps_the_live_server(tmp_path):
    import httpx

    from visionline.data import BlobStore
    from visionline.serve import InferenceServer, ServerConfig
    from visionline.synth import DriftConfig, SynthConfig, generate_deliveries

    project = _lenient_goals(make_project(tmp_path / "p", images=160))
    name = project.config.name
    repository = project.root / "model-repository"
    repository.mkdir()
    logger = PredictionLogger(project.monitor_db_url, BlobStore(project.blob_store_uri), sample_rate=1.0)
    server = InferenceServer(
        ServerConfig(repository=repository, http_port=0, grpc_port=None),
        hook=logger,
    )
    with server.running() as running:
        url = f"http://127.0.0.1:{running.http_port}"
        configure(project.root, deploy={"server": url})
        first = run_pipeline(project.__class__.load(project.root), progress=False)
        champion = first.steps["deploy"].outputs["deployment"]
        assert champion.meta["deployed"], first.steps["register"].outputs
        assert httpx.get(f"{url}/v2/models/{name}/versions/1/ready").status_code == 200

        line = generate_deliveries(
            SynthConfig(size=48, seed=11, drift=DriftConfig(kind="dirty_lens", start=0, ramp=10)),
            tmp_path / "line", 1, 1, 24,
        )
        truth = {}
        with open(line.out / "images.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                data = (line.out / row["file"]).read_bytes()
                truth[hashlib.sha256(data).hexdigest()] = (row["label"], row.get("subtype") or None)
                response = httpx.post(
                    f"{url}/v1/models/{name}:predict",
                    files=[("files", ("apple.jpg", data, "image/jpeg"))],
                )
                assert response.status_code == 200
        assert logger.flush()
        db = MonitorDB(project.monitor_db_url)
        logged = db.frame(model=name)
        for row in logged.itertuples():
            label, subtype = truth[row.image_sha256]
            db.add_feedback(row.id, label, subtype, "operator")

        result = retrain(project.__class__.load(project.root), progress=False)

        assert [t.kind for t in result.triggers] == ["labels"]
        assert result.ran and result.new_images + result.held_out == len(set(truth))
        assert result.held_out >= 5 and result.holdout["images"] == result.held_out
        judged = result.holdout
        assert judged["challenger"]["version"] == "2" and judged["champion"]["version"] == "1"
        assert {"only_a", "only_b", "p_value"} <= set(judged["mcnemar"])
        assert result.registered == f"{name}/2"
        steps = {n: r.status for n, r in result.run.steps.items()}
        # a promoted challenger is deployed by a second run of the same pipeline: train is cached
        assert steps["ingest"] == "given"
        assert steps["train"] == ("cached" if result.promoted else "done")
        if result.promoted:
            assert result.deployed == f"{name}/2"
            assert httpx.get(f"{url}/v2/models/{name}/versions/2/ready").status_code == 200
        else:
            assert result.deployed is None
            assert any("champion" in reason for reason in result.reasons)
        again = retrain(project.__class__.load(project.root), progress=False)
        assert not again.ran and again.triggers == []
    logger.close()


def test_held_out_images_are_the_new_ones_stable_and_judged_with_the_versions_threshold_split(
    tmp_path,
):
    import numpy as np

    from visionline.data import BlobStore, DatasetRepo
    from visionline.synth import SynthConfig, generate_dataset

    project = make_project(tmp_path / "p", images=40)
    configure(project.root, split={"val": 0.2, "calib": 0.2, "test": 0.2})
    project = project.__class__.load(project.root)
    run = run_pipeline(project, until="split", progress=False)
    base = DatasetRepo(project).get(run.steps["split"].outputs["dataset"].id)
    assert base.split_records("calib")
    generate_dataset(SynthConfig(size=48, seed=98), tmp_path / "line", 40)
    items = [_prediction(project.config.name, p.read_bytes(), embedding=np.ones(4))
             for p in sorted((tmp_path / "line").rglob("*.jpg"))]
    _log(project.monitor_db_url, BlobStore(project.blob_store_uri), items)
    db = MonitorDB(project.monitor_db_url)
    for item in items[:10]:
        db.add_feedback(item.id, "good", None, "operator")
    cut = time.time()
    time.sleep(0.01)
    for item in items[10:]:
        db.add_feedback(item.id, "defect", "rot", "operator")
    frame = db.feedback_frame()

    training, held = split_holdout(frame, cut, 0.5)
    assert len(training) + len(held) == len(frame) and 5 <= len(held) <= 25
    assert set(held["label"]) == {"defect"}  # only images labelled after the last retraining
    _, held_again = split_holdout(frame, cut, 0.5)
    assert list(held_again["image_sha256"]) == list(held["image_sha256"])
    assert split_holdout(frame, cut, 0.0)[1].empty

    version, _ = build_retraining_version(project, base.id, training, 0.2)
    assert not {r.sha256 for r in version.records} & set(held["image_sha256"])
    holdout = build_holdout_version(project, version, held)
    assert holdout.parent == version.id
    assert {r.sha256 for r in holdout.split_records("test")} == set(held["image_sha256"])
    calib = {r.sha256 for r in version.split_records("calib")}
    assert {r.sha256 for r in holdout.split_records("calib")} == calib
    assert not holdout.split_records("train") and not holdout.split_records("val")
    assert build_holdout_version(project, version, held.iloc[0:0]) is None


def test_a_trigger_without_enough_new_labels_requests_the_active_learning_selection(tmp_path):
    import json

    import numpy as np

    from visionline.data import BlobStore

    project = _lenient_goals(make_project(tmp_path / "p", images=20))
    configure(project.root, retrain={"min_new_labels": 10, "label_budget": 4})
    project = project.__class__.load(project.root)
    name = project.config.name
    db = MonitorDB(project.monitor_db_url)
    db.add_alarm({"ts": time.time(), "model": name, "version": "1", "window": 3,
                  "detectors": ["quality"], "statistics": {}, "p_values": {},
                  "cause": "dirty lens", "details": {}})
    rng = np.random.default_rng(0)
    images = sorted((project.root / "raw").rglob("*.jpg"))[:12]
    items = [
        _prediction(name, path.read_bytes(), score=score, embedding=rng.normal(size=8))
        for path, score in zip(images, np.linspace(0.05, 0.95, len(images)))
    ]
    _log(project.monitor_db_url, BlobStore(project.blob_store_uri), items)
    db.add_feedback(items[0].id, "good", None, "operator")

    result = retrain(project, progress=False)

    assert [t.kind for t in result.triggers] == ["drift"] and not result.ran
    request = json.loads(result.label_request.read_text())
    assert request["strategy"] == "mixed" and len(request["images"]) == 4
    assert request["pool"] == 11  # kept, not yet labelled
    assert items[0].id not in {pick["prediction_id"] for pick in request["images"]}
    nearest = min(items[1:], key=lambda item: abs(item.defect_score - 0.5))
    assert nearest.id in {pick["prediction_id"] for pick in request["images"]}
