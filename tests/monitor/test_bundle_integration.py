"""End to end with a real edge bundle: EdgeModel → PredictionLogger → drift against bundle.json."""

import time

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.export.conftest import make_image_folder
from visionline.monitor import (
    DriftConfig,
    MonitorDB,
    PredictionLogger,
    Reference,
    check_drift,
    from_edge_prediction,
    image_quality,
)


@pytest.mark.slow
def test_bundle_reference_logging_and_drift(tmp_path):
    from visionline.config import Project, init_project
    from visionline.data import DatasetRepo
    from visionline.export import ExportConfig, export_model, load_bundle
    from visionline.preprocessing import Preprocessing
    from visionline.train import ModelSpec, build_model, save_model

    init_project(tmp_path / "proj")
    project = Project.load(tmp_path / "proj")
    images = make_image_folder(
        tmp_path / "images",
        {"train": {"good": 8, "bruise": 4, "rot": 4}, "val": {"good": 40, "bruise": 10, "rot": 10}},
    )
    version = DatasetRepo(project).add(images, name="toy").version
    spec = ModelSpec("mobilenetv3_small_100", ["good", "bruise", "rot"], Preprocessing(size=32))
    model = save_model(tmp_path / "model.pt", build_model(spec).eval(), spec)
    result = export_model(
        model,
        tmp_path / "bundle",
        ExportConfig(data=version.id, int8=False, version="7"),
        project,
        progress=False,
    )
    reference = Reference.from_bundle(result.bundle_dir)
    assert reference.version == "7" and reference.classes == ("good", "bruise", "rot")
    assert len(reference.scores) == 60 and reference.quality.shape == (60, 4)

    edge = load_bundle(result.bundle_dir)
    val = sorted((images / "val").rglob("*.png")) or sorted((images / "val").rglob("*.jpg"))
    pil = [Image.open(p).convert("RGB") for p in val]
    blurred = [im.filter(ImageFilter.GaussianBlur(3)) for im in pil]
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    with PredictionLogger(db) as logger:
        for batch, ts in ((pil, 0.0), (pil, 100.0), (blurred, 200.0), (blurred, 300.0)):
            prediction = edge.predict(batch)
            quality = image_quality(np.stack([edge.preprocessing.to_uint8(im) for im in batch]))
            logger.log(
                from_edge_prediction(
                    prediction,
                    model=edge.name,
                    version=edge.version,
                    threshold=edge.threshold,
                    classes=edge.classes,
                    ts=time.time() + ts + np.arange(len(batch)) * 0.01,
                    quality=quality,
                    delivery_id="D1",
                )
            )
    assert db.count_predictions() == 4 * len(pil)
    windows = check_drift(db, reference, DriftConfig(size=len(pil), persistence=2))
    assert [bool(w.drifted) for w in windows] == [False, False, True, True]
    alarm = windows[3].alarm
    assert alarm is not None and "quality_ks" in alarm.detectors
    assert alarm.cause.startswith(("dirty lens", "blur"))
