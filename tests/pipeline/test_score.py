"""Batch scoring with the local executor: rows match the edge runtime, bad images become rows."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from score_support import CLASSES, RATES, make_image_folder, write_score_bundle

from visionline.errors import ConfigError, DataError, IntegrityError, NotFoundError
from visionline.evaluate import ValidatedRates, clopper_pearson, estimate_prevalence
from visionline.pipeline._score import bundle_rates, resolve_bundle, score, summarise


def test_folder_rows_match_the_edge_runtime_and_bad_images_become_error_rows(
    score_bundle, score_images, tmp_path
):
    from visionline_edge import load_bundle

    result = score(
        score_images, score_bundle, out=tmp_path / "rows.parquet", workers=2, batch_size=4
    )
    rows = result.rows

    expected_paths = sorted(
        p.relative_to(score_images).as_posix()
        for p in score_images.rglob("*")
        if p.suffix in (".png", ".jpg")
    )
    assert rows["path"].tolist() == expected_paths
    assert "notes.txt" not in rows["path"].tolist()
    errors = rows.set_index("path")["error"]
    assert "cannot be decoded" in errors["broken.jpg"]
    assert "above the limit" in errors["huge.png"]
    good = rows[rows["error"].isna()]
    assert len(good) == len(rows) - 2

    model = load_bundle(score_bundle)
    data = [(score_images / p).read_bytes() for p in good["path"]]
    found = model.predict(data)
    probabilities = good[[f"p_{c}" for c in CLASSES]].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(probabilities, found.probabilities)
    np.testing.assert_array_equal(good["defect_score"].to_numpy(np.float32), found.defect_scores)
    assert good["flagged"].tolist() == found.flagged.tolist()
    assert good["predicted_class"].tolist() == found.predicted_classes
    assert good["decision"].tolist() == found.decisions
    assert good["sha256"].tolist() == [hashlib.sha256(d).hexdigest() for d in data]
    assert rows["label"].isna().all()

    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "rows.parquet"), rows)
    one_worker = score(score_images, score_bundle, out=tmp_path / "one.parquet", workers=1)
    pd.testing.assert_frame_equal(one_worker.rows, rows)


def test_csv_output_and_summary_sidecar(score_bundle, score_images, tmp_path):
    out = tmp_path / "out" / "rows.csv"
    result = score(score_images, score_bundle, out=out, workers=1)

    written = pd.read_csv(out)
    assert written["path"].tolist() == result.rows["path"].tolist()
    np.testing.assert_allclose(written["defect_score"], result.rows["defect_score"], rtol=1e-12)
    assert written["error"].notna().sum() == 2
    sidecar = json.loads((tmp_path / "out" / "rows.summary.json").read_text())
    assert sidecar["bundle"]["name"] == "apples" and sidecar["bundle"]["version"] == "1"
    assert sidecar["summary"]["images"] == len(written)
    assert sidecar["summary"]["failed"] == 2
    assert sidecar["executor"] == "local"


def test_dataset_version_split_is_scored_with_labels_and_the_project_bundle(onnx_model, tmp_path):
    from visionline.config import Project, init_project
    from visionline.data import DatasetRepo

    init_project(tmp_path / "plant")
    project = Project.load(tmp_path / "plant")
    images = make_image_folder(
        tmp_path / "images",
        {"train": {"good": 4, "bruise": 2}, "val": {"good": 3, "bruise": 2, "rot": 2}},
    )
    version = DatasetRepo(project).add(images, name="scored").version
    repository = tmp_path / "plant" / "model-repository" / "apples"
    write_score_bundle(onnx_model, repository / "2", version="2")
    write_score_bundle(onnx_model, repository / "10", version="10")

    result = score(version.short_id, project=project, split="val", workers=1)

    val = version.split_records("val")
    assert result.bundle == "apples v10"
    assert result.output == project.reports_dir / f"score-{version.short_id}-val.parquet"
    assert result.output.is_file()
    rows = result.rows
    assert sorted(rows["sha256"]) == sorted(r.sha256 for r in val)
    assert sorted(rows["label"]) == sorted(r.model_class for r in val)
    assert set(rows["split"]) == {"val"} and rows["error"].isna().all()
    summary = result.summary
    is_defect = rows["label"] != "good"
    assert summary.labelled == 7 and summary.n_defect == 4 and summary.n_good == 3
    assert summary.detected == int((rows["flagged"] & is_defect).sum())
    assert summary.false_rejects == int((rows["flagged"] & ~is_defect).sum())
    assert summary.recall == summary.detected / 4
    assert summary.corrected


def test_summary_numbers_on_a_constructed_case():
    rows = pd.DataFrame(
        {
            "label": ["good"] * 5 + ["rot"] * 3 + [None, "good"],
            "flagged": [True, False, False, False, False, True, True, False, True, False],
            "error": [None] * 9 + ["Image cannot be decoded"],
        }
    )
    rates = ValidatedRates(tp=40, n_defect=50, fp=5, n_good=100)

    corrected = summarise(rows, rates)
    assert (corrected.images, corrected.failed, corrected.flagged) == (10, 1, 4)
    assert corrected.flagged_rate == pytest.approx(4 / 9)
    assert corrected.estimate == pytest.approx((4 / 9 - 0.05) / (0.8 - 0.05))
    reference = estimate_prevalence(4, 9, rates, 0.90)
    assert (corrected.low, corrected.high) == (reference.low, reference.high)
    assert corrected.corrected
    assert (corrected.labelled, corrected.n_defect, corrected.n_good) == (8, 3, 5)
    assert (corrected.detected, corrected.false_rejects) == (2, 1)
    assert corrected.recall == pytest.approx(2 / 3)
    assert corrected.false_reject_rate == pytest.approx(1 / 5)

    raw = summarise(rows)
    assert raw.estimate == pytest.approx(4 / 9) and not raw.corrected
    assert (raw.low, raw.high) == clopper_pearson(4, 9, 0.90)

    failed = summarise(rows.assign(error="unreadable"))
    assert failed.failed == 10 and failed.estimate is None and failed.recall is None


def test_bundle_rates_come_from_the_deployed_model_metrics():
    manifest = {"deployed": "int8", "threshold": 0.3, "metrics": {"int8": RATES}}
    rates = bundle_rates(manifest)
    assert (rates.tp, rates.n_defect, rates.fp, rates.n_good) == (40, 50, 5, 100)
    assert rates.threshold == 0.3
    assert bundle_rates({**manifest, "deployed": "fp32"}) is None
    assert bundle_rates({**manifest, "metrics": {"int8": {**RATES, "defect_recall": None}}}) is None


def test_resolve_bundle_picks_the_highest_version(tmp_path):
    for version in ("1", "2", "10", "20250101.120000"):
        (tmp_path / "repo" / "apples" / version).mkdir(parents=True)
        (tmp_path / "repo" / "apples" / version / "bundle.json").write_text("{}")
    assert resolve_bundle(tmp_path / "repo" / "apples").name == "20250101.120000"
    assert resolve_bundle(tmp_path / "repo").name == "20250101.120000"
    assert resolve_bundle(tmp_path / "repo" / "apples" / "2").name == "2"
    (tmp_path / "repo" / "pears" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "pears" / "1" / "bundle.json").write_text("{}")
    with pytest.raises(ConfigError, match="2 models"):
        resolve_bundle(tmp_path / "repo")
    with pytest.raises(NotFoundError, match="No bundle at"):
        resolve_bundle(tmp_path / "missing")
    with pytest.raises(ConfigError, match="--bundle"):
        resolve_bundle(None)


def test_bad_requests_fail_with_one_sentence_before_scoring(score_bundle, score_images, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="--split"):
        score(score_images, score_bundle, split="val")
    with pytest.raises(ConfigError, match="Unknown executor 'spark'"):
        score(score_images, score_bundle, executor="spark")
    with pytest.raises(DataError, match="No images"):
        score(tmp_path / "empty", score_bundle)
    with pytest.raises(ConfigError, match=".parquet or .csv"):
        score(score_images, score_bundle, out=tmp_path / "rows.xlsx")
    with pytest.raises(NotFoundError, match="No image folder"):
        score(tmp_path / "nowhere", score_bundle)
    with pytest.raises(ConfigError, match="--workers"):
        score(score_images, score_bundle, workers=0)


def test_pubkey_refuses_an_unsigned_bundle(score_bundle, score_images, tmp_path):
    from visionline.export import generate_keys

    _, public = generate_keys(tmp_path / "keys")
    with pytest.raises(IntegrityError, match="not signed"):
        score(score_images, score_bundle, pubkey=public, out=tmp_path / "rows.parquet")
    assert not (tmp_path / "rows.parquet").exists()


def test_require_signature_needs_trusted_keys_and_a_signed_bundle(score_bundle, score_images, tmp_path):
    from visionline.export import generate_keys

    out = tmp_path / "rows.parquet"
    with pytest.raises(ConfigError, match="no key is trusted"):
        score(score_images, score_bundle, require_signature=True, out=out)
    _, public = generate_keys(tmp_path / "trusted-keys")
    with pytest.raises(IntegrityError, match="not signed"):
        score(score_images, score_bundle, trust_store=public.parent, require_signature=True, out=out)
    assert not out.exists()


def test_an_archived_bundle_scores_and_leaves_no_unpacked_copy(
    score_bundle, score_images, tmp_path, private_tempdir
):
    from visionline.export._bundle import archive_bundle

    archive = archive_bundle(score_bundle, tmp_path / "bundle.tar.gz")
    result = score(score_images, archive, out=tmp_path / "rows.parquet", workers=1)
    assert result.summary.images > 0 and result.summary.failed < result.summary.images
    assert list(private_tempdir.iterdir()) == []
