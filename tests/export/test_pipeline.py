"""End to end on an easy dataset: INT8 + gate, signed bundle, tamper refusal, runtime parity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from visionline.errors import GateFailedError, IntegrityError
from visionline.export import (
    Calibration,
    ExportConfig,
    export_model,
    generate_keys,
    load_bundle,
    verify_bundle,
)
from visionline.export._onnx import onnx_predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(export_workspace, tmp_path_factory):
    keys = generate_keys(tmp_path_factory.mktemp("keys"))
    out = tmp_path_factory.mktemp("out")
    result = export_model(
        export_workspace["model"],
        out / "bundle",
        ExportConfig(
            data=export_workspace["version"].id,
            fp16=True,
            calibration_images=32,
            calibration=Calibration.PERCENTILE,  # `auto` measures all three: test_quantize
        ),
        export_workspace["project"],
        signing_key=keys[0],
        triton_repo=out / "triton",
        progress=False,
    )
    return result, keys


@pytest.fixture
def copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle[0].bundle_dir, target)
    return target


def test_int8_is_smaller_and_passes_the_gate(bundle, export_workspace) -> None:
    manifest = bundle[0].manifest
    assert manifest["deployed"] == "int8"
    assert manifest["models"]["int8"]["bytes"] < 0.5 * manifest["models"]["fp32"]["bytes"]
    gate = manifest["gates"]["int8_accuracy"]
    assert gate["passed"] and gate["message"].startswith("INT8 passed on 40 val-split images")
    assert manifest["gates"]["parity_fp32"]["passed"]
    assert manifest["lineage"]["dataset_version"] == export_workspace["version"].id
    assert manifest["lineage"]["mlflow_run_id"] == "run-123"
    assert manifest["reference"]["embedding"]["sample_rows"] == 40
    emb = np.load(bundle[0].bundle_dir / manifest["reference"]["files"]["embeddings"])
    assert emb.dtype == np.float16 and emb.shape[0] == 40


def test_the_bundle_threshold_is_the_one_evaluation_certifies(
    export_workspace, tmp_path, monkeypatch
) -> None:
    """The line must run at the split-conformal threshold that `evaluate` certifies, not at the
    empirical quantile (a lower threshold: more false rejects than the report promised). A 25%
    budget on the 24 held-out goods is where the two rules part (rank 19 against rank 20)."""
    from visionline.data import DatasetRepo
    from visionline.evaluate import (
        conformal_threshold,
        threshold_for_false_reject_rate,
        threshold_split,
    )
    from visionline.export._data import load_split

    project, version = export_workspace["project"], export_workspace["version"]
    monkeypatch.setattr(project.config.goals, "max_false_reject_rate", 0.25)
    monkeypatch.setattr(project.config.goals, "threshold_false_reject_rate", 0.25)
    result = export_model(
        export_workspace["model"], tmp_path / "bundle",
        ExportConfig(data=version.id, int8=False), project, progress=False,
    )
    prep = load_bundle(result.archive).preprocessing
    held_out = load_split(version, DatasetRepo(project).blobs, threshold_split(version), prep)
    probs, _ = onnx_predict(result.bundle_dir / "model.onnx", prep.normalize(held_out.pixels))
    good_scores = (1.0 - probs[:, 0])[~held_out.is_defect]
    certified = conformal_threshold(good_scores, 0.25)
    assert certified > threshold_for_false_reject_rate(good_scores, 0.25)
    assert result.manifest["threshold"] == pytest.approx(certified)
    assert "split-conformal" in result.manifest["threshold_source"]


def test_fp16_model_keeps_float32_io(bundle) -> None:
    model = onnx.load(str(bundle[0].bundle_dir / "model.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def test_runtime_predictions_equal_onnx_session(bundle, export_workspace) -> None:
    from visionline.data import DatasetRepo
    from visionline.export._data import load_split

    result, keys = bundle
    edge = load_bundle(result.archive, pubkey=keys[1])
    repo = DatasetRepo(export_workspace["project"])
    records = export_workspace["version"].split_records("val")[:6]
    images = [repo.blobs.get(r.sha256) for r in records]
    predicted = edge.predict(images)
    val = load_split(export_workspace["version"], repo.blobs, "val", edge.preprocessing)
    probs, emb = onnx_predict(
        result.bundle_dir / "model.int8.onnx", edge.preprocessing.normalize(val.pixels[:6])
    )
    np.testing.assert_array_equal(predicted.probabilities, probs)
    np.testing.assert_array_equal(predicted.embeddings, emb)
    assert predicted.decisions == [
        "defect" if s > edge.threshold else "good" for s in 1 - probs[:, 0]
    ]
    assert len(list(predicted)) == 6


def test_verify_accepts_the_signed_bundle(bundle) -> None:
    result, keys = bundle
    manifest = verify_bundle(result.bundle_dir, keys[1])
    assert "model.int8.onnx" in manifest["files"] and manifest["_signed_by"] is not None
    assert not any(name.endswith(".py") for name in manifest["files"])  # the bundle carries no code
    assert (
        "runtime" not in manifest and manifest["edge_runtime"]["distribution"] == "visionline-edge"
    )


def test_tampered_model_file_is_refused(copy, bundle) -> None:
    with (copy / "model.int8.onnx").open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01")
    with pytest.raises(IntegrityError, match="changed after export"):
        verify_bundle(copy, bundle[1][1])
    with pytest.raises(IntegrityError):
        load_bundle(copy)


def test_tampered_manifest_is_refused(copy, bundle) -> None:
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["threshold"] = 0.99
    (copy / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    with pytest.raises(IntegrityError, match="signature"):
        load_bundle(copy, pubkey=bundle[1][1])


def test_wrong_key_and_unsigned_are_refused(copy, bundle, tmp_path) -> None:
    _, other_pub = generate_keys(tmp_path / "other")
    with pytest.raises(IntegrityError, match="does not trust"):
        verify_bundle(copy, other_pub)
    (copy / "bundle.sig").unlink()
    with pytest.raises(IntegrityError, match="not signed"):
        verify_bundle(copy, bundle[1][1])


def test_extra_file_is_refused(copy) -> None:
    (copy / "model.evil.onnx").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="model.evil.onnx, which bundle.json does not list"):
        verify_bundle(copy)


def test_triton_repo_written_next_to_bundle(bundle) -> None:
    triton = bundle[0].triton_dir
    assert (triton / "1" / "model.onnx").read_bytes() == (
        bundle[0].bundle_dir / "model.onnx"
    ).read_bytes()


def test_failed_gate_leaves_no_bundle(export_workspace, tmp_path) -> None:
    with pytest.raises(GateFailedError):
        export_model(
            export_workspace["untrained"],
            tmp_path / "bundle",
            ExportConfig(
                data=export_workspace["version"].id,
                calibration_images=8,
                tolerance=0.0,
                parity_atol=1e-12,
            ),
            export_workspace["project"],
            progress=False,
        )
    assert not (tmp_path / "bundle").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_the_bundle_records_how_int8_was_chosen_and_the_paired_evidence(bundle) -> None:
    manifest = bundle[0].manifest
    gate, int8 = manifest["gates"]["int8_accuracy"], manifest["models"]["int8"]
    assert gate["split"] == "val" and gate["recall"]["images"] == 16
    assert gate["false_rejects"]["images"] == 24
    low, high = gate["false_rejects"]["change_ci95"]
    assert low <= gate["false_rejects"]["change"] <= high
    assert 0 <= gate["recall"]["mcnemar_p_value"] <= 1
    choice = gate["quantisation"]
    assert set(choice["methods"]) == {"percentile"} and choice["flip_budget"] == 1
    assert int8["calibration"] == choice["method"] and int8["float_nodes"] == choice["float_nodes"]
    assert sum(choice["calibration_classes"].values()) == 32
    assert set(choice["calibration_classes"]) == {"good", "bruise", "rot"}


def test_a_refused_int8_model_leaves_the_fp32_bundle_and_says_why(
    export_workspace, tmp_path, monkeypatch
) -> None:
    from visionline.export import _quantize

    def broken_int8(fp32, out, calibration, classes, threshold, *args, **kwargs):
        # ranges from blank images clip every real activation: the INT8 model is useless
        _quantize.quantize_int8(fp32, out, np.zeros_like(calibration[:4]))
        return _quantize.Int8Choice("minmax", [], [], 4, {}, threshold, 0)

    monkeypatch.setattr(_quantize, "search_int8", broken_int8)
    result = export_model(
        export_workspace["model"],
        tmp_path / "bundle",
        ExportConfig(data=export_workspace["version"].id, int8=True, calibration_images=8),
        export_workspace["project"],
        progress=False,
    )
    manifest = result.manifest
    assert manifest["deployed"] == "fp32" and set(manifest["models"]) == {"fp32"}
    assert "model.int8.onnx" not in manifest["files"]
    assert not (result.bundle_dir / "model.int8.onnx").exists()
    assert manifest["gates"]["int8_accuracy"]["passed"] is False
    assert any(
        "INT8 refused on val-split images" in note and "deploys FP32" in note
        for note in result.notes
    )
    verify_bundle(result.bundle_dir)
