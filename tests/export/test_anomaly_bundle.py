"""A fitted anomaly detector as a signed edge bundle: what the manifest promises, and that the
trusted edge runtime, `visionline-edge score` and `visionline score` run it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly_lifecycle_support import IMAGE_SIZE, export_bundle

from visionline.errors import ConfigError


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_fitted_apples):
    from visionline.export import generate_keys

    root = tmp_path_factory.mktemp("anomaly-bundle")
    fitted = shared_fitted_apples
    key, public = generate_keys(root / "keys")
    result = export_bundle(fitted, root / "bundle", key)
    return fitted, result, public


@pytest.mark.slow
def test_the_manifest_describes_an_anomaly_bundle_with_its_reference(exported):
    from visionline.anomaly import load_anomaly_model
    from visionline.monitor import Reference

    fitted, result, _ = exported
    m = result.manifest
    _, spec = load_anomaly_model(fitted.model)
    assert m["kind"] == "anomaly" and m["classes"] == ["good", "anomaly"]
    assert m["threshold"] == 0.5 and m["anomaly"]["threshold"] == pytest.approx(spec.threshold)
    assert m["lineage"]["dataset_version"] == fitted.dataset
    parity = m["gates"]["parity_fp32"]
    assert parity["source"] == "validation" and parity["decisions_differ"] == 0
    assert parity["max_score_diff"] < 1e-3 and parity["max_map_diff"] < 1e-3
    n_val = m["metrics"]["fp32"]["n_good"] + m["metrics"]["fp32"]["n_defect"]
    assert m["metrics"]["fp32"]["false_reject_rate"] <= 0.25
    reference = Reference.from_bundle(result.bundle_dir)
    assert reference.classes == ("good", "anomaly") and len(reference.scores) == n_val
    assert ((reference.scores > 0) & (reference.scores < 1)).all()
    assert reference.embeddings.shape[1] == 64
    assert (result.bundle_dir / "bundle.sig").is_file() and result.archive.is_file()


@pytest.mark.slow
def test_the_edge_runtime_runs_the_signed_archive_like_the_detector(exported):
    from visionline.anomaly import load_anomaly_model, score_images
    from visionline_edge import load_bundle

    fitted, result, public = exported
    model = load_bundle(result.archive, trust_store=public, require_signature=True)
    paths = sorted(fitted.raw.rglob("*.jpg"))[:6]
    prediction = model.predict([p.read_bytes() for p in paths])
    detector, spec = load_anomaly_model(fitted.model)
    from visionline.preprocessing import decode_image

    torch_scores, _ = score_images(
        detector, spec.preprocessing, (decode_image(p.read_bytes()) for p in paths), 8
    )
    np.testing.assert_allclose(prediction.anomaly_scores, torch_scores, rtol=1e-3)
    assert prediction.anomaly_maps.shape == (6, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_array_equal(prediction.flagged, torch_scores > spec.threshold)
    np.testing.assert_allclose(
        prediction.defect_scores, torch_scores / (torch_scores + spec.threshold), rtol=1e-3
    )
    assert set(prediction.decisions) <= {"good", "defect"}


@pytest.mark.slow
def test_visionline_edge_score_prints_anomaly_scores(exported, capsys):
    from visionline_edge.cli import main

    fitted, result, public = exported
    folder = fitted.raw / "good"
    code = main(
        ["score", str(result.bundle_dir), str(folder), "--trust-store", str(public), "--json"]
    )
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == len(list(folder.glob("*.jpg")))
    assert all(0 < r["defect_score"] < 1 and r["anomaly_score"] > 0 for r in rows)
    assert all((r["decision"] != "good") == (r["defect_score"] > 0.5) for r in rows)
    assert "anomaly threshold" in err


@pytest.mark.slow
def test_visionline_score_writes_the_anomaly_score_column(exported, tmp_path):
    from visionline.pipeline._score import score

    fitted, result, public = exported
    scored = score(
        fitted.dataset,
        result.bundle_dir,
        project=fitted.project,
        split="test",
        out=tmp_path / "rows.csv",
        executor="local",
        workers=1,
        trust_store=public,
        require_signature=True,
    )
    rows = scored.rows
    assert rows["anomaly_score"].gt(0).all() and rows["defect_score"].between(0, 1).all()
    assert (rows["flagged"] == (rows["defect_score"] > 0.5)).all()
    # The summary counts what the rows flag; whether the validated rates can correct the estimate
    # depends on this tiny model's validation recall, so correction is tested on fixed rates in
    # tests/pipeline/test_score.py, not here.
    assert scored.summary.flagged == int(rows["flagged"].sum()) and scored.summary.images == len(rows)


@pytest.mark.slow
def test_synthetic_apples_with_masks_get_pixel_metrics(exported, tmp_path):
    from visionline.anomaly import evaluate_anomaly

    fitted, *_ = exported
    result = evaluate_anomaly(
        fitted.project, str(fitted.model), fitted.dataset, "test", tmp_path, bootstrap=0, log=False
    )
    m = result.metrics
    assert m["pixel_images"] == m["n_good"] + m["n_defect"] and m["n_defect"] > 0
    # Quality on this 40-apple, 64 px fixture is noise (the detector also sees stems and the
    # rollers); what must hold is that every test image's mask was read and scored.
    assert 0.0 <= m["pixel_auroc"] <= 1.0 and 0.0 <= m["aupro"] <= 1.0


def test_an_anomaly_model_without_a_threshold_is_refused_in_one_sentence(tmp_path):
    from tests.anomaly.conftest import tile
    from visionline.anomaly import AnomalyConfig, fit_detector, save_anomaly_model
    from visionline.export import ExportConfig, export_model

    config = AnomalyConfig(image_size=64, max_bank=32, coreset_ratio=0.1)
    model, spec, _ = fit_detector([tile(seed)[0] for seed in range(2)], 2, config)
    path = save_anomaly_model(tmp_path / "model.pt", model, spec)
    with pytest.raises(ConfigError, match="has no positive threshold"):
        export_model(path, tmp_path / "bundle", ExportConfig(), progress=False)
    spec.threshold = 1.0
    save_anomaly_model(path, model, spec)
    with pytest.raises(ConfigError, match="FP32 only"):
        export_model(path, tmp_path / "bundle", ExportConfig(int8=True, data="x"), object())
    assert not (tmp_path / "bundle").exists()
