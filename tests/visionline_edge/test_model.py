"""The edge model: runs the verified model with the bundle's preprocessing and threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from edge_support import png

from visionline.errors import DataError, IntegrityError
from visionline_edge import EdgeModel, load_bundle, verify_bundle


def test_predictions_follow_the_bundle_threshold_and_labels(bundle, trust_store):
    model = load_bundle(bundle, trust_store=trust_store, require_signature=True)
    result = model.predict([png((250, 250, 250)), png((20, 20, 20))])
    assert result.decisions == ["good", "defect"]
    assert result.predicted_classes[0] == "good" and result.predicted_classes[1] == "bruise"
    assert result.probabilities.shape == (2, 3) and result.embeddings.shape == (2, 3)
    assert np.allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [one.decision for one in result] == ["good", "defect"]
    assert model.signed_by is not None and model.threshold == 0.5


def test_a_model_swapped_after_verification_is_not_run(bundle):
    manifest = verify_bundle(bundle)
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"\x00")
    with pytest.raises(IntegrityError, match="changed after the bundle was verified"):
        EdgeModel(manifest)


def test_a_model_file_outside_the_list_is_not_run(bundle):
    manifest = verify_bundle(bundle)
    manifest["models"]["fp32"]["file"] = "reference/scores.npy"
    manifest["files"].pop("reference/scores.npy")
    with pytest.raises(IntegrityError, match="does not list the model file"):
        EdgeModel(manifest)


def test_a_manifest_naming_an_unlisted_model_is_refused_at_verification(bundle):
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["models"]["int8"] = {"file": "model.int8.onnx"}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="names a model file that it does not list"):
        verify_bundle(bundle)


def test_an_unloadable_graph_is_one_sentence(tmp_path):
    from edge_support import make_bundle

    from visionline.export._bundle import finalize_bundle

    bundle = make_bundle(tmp_path / "b")
    (bundle / "model.onnx").write_bytes(b"not an onnx graph")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest.pop("files")
    finalize_bundle(bundle, manifest)
    with pytest.raises(IntegrityError, match="ONNX Runtime cannot load model.onnx"):
        load_bundle(bundle)


def test_an_empty_batch_is_refused(bundle):
    with pytest.raises(DataError, match="at least one image"):
        load_bundle(bundle).predict([])


def test_a_loaded_archive_runs_from_memory_and_leaves_no_unpacked_copy(
    bundle, trust_store, tmp_path, private_tempdir
):
    from visionline.export._bundle import archive_bundle

    archive = archive_bundle(bundle, tmp_path / "apples.tar.gz")
    model = load_bundle(archive, trust_store=trust_store, require_signature=True)
    assert list(private_tempdir.iterdir()) == [] and model.manifest["_unpacked"] is None
    assert model.predict([png((250, 250, 250)), png((20, 20, 20))]).decisions == ["good", "defect"]
    (bundle / "planted.py").write_text("x = 1\n")
    with pytest.raises(IntegrityError, match="planted.py"):
        load_bundle(archive_bundle(bundle, tmp_path / "bad.tar.gz"))
    assert list(private_tempdir.iterdir()) == []
