"""INT8 quantisation: the image's channels are padded to 4 so ONNX Runtime's fast int8
convolution runs the stem; padding must not change what the model computes."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from visionline.errors import ConfigError, DataError
from visionline.export._onnx import export_onnx, onnx_predict
from visionline.export._options import MEASURED_CALIBRATIONS, Calibration
from visionline.export._quantize import (
    _calibrate,
    _pad_input_channels,
    _prepare,
    _Reader,
    node_groups,
    quantize_int8,
    search_int8,
    stratified_indices,
)
from visionline.preprocessing import Preprocessing
from visionline.train import ModelSpec, build_model

SIZE = 32


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    spec = ModelSpec("mobilenetv3_small_100", ["good", "bruise", "rot"], Preprocessing(size=SIZE))
    return export_onnx(
        build_model(spec).eval(), SIZE, tmp_path_factory.mktemp("onnx") / "model.onnx"
    )


def _stem(model: onnx.ModelProto) -> tuple[onnx.NodeProto, np.ndarray]:
    from onnx import numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    first = next(n for n in model.graph.node if n.op_type == "Conv")
    return first, numpy_helper.to_array(weights[first.input[1]])


def test_padding_the_stem_to_four_channels_keeps_every_output(fp32_model, tmp_path):
    padded = shutil.copy(fp32_model, tmp_path / "padded.onnx")
    names = _pad_input_channels(padded)

    assert len(names) == 1
    model = onnx.load(str(padded))
    stem, weight = _stem(model)
    assert weight.shape[1] == 4
    assert not weight[:, 3].any()
    producer = next(n for n in model.graph.node if stem.input[0] in n.output)
    assert producer.op_type == "Pad" and producer.name in names

    images = np.random.default_rng(0).normal(size=(5, 3, SIZE, SIZE)).astype(np.float32)
    for before, after in zip(onnx_predict(fp32_model, images), onnx_predict(padded, images)):
        np.testing.assert_allclose(before, after, atol=1e-6)


def test_the_int8_model_quantises_the_padded_image_once(fp32_model, tmp_path):
    calibration = np.random.default_rng(1).normal(size=(8, 3, SIZE, SIZE)).astype(np.float32)
    int8 = onnx.load(str(quantize_int8(fp32_model, tmp_path / "int8.onnx", calibration)))

    pad = next(n for n in int8.graph.node if n.op_type == "Pad")
    assert pad.input[0] == int8.graph.input[0].name
    consumers = [n for n in int8.graph.node if pad.output[0] in n.input]
    assert [n.op_type for n in consumers] == ["QuantizeLinear"]
    probabilities, _ = onnx_predict(tmp_path / "int8.onnx", calibration)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)


def test_calibration_images_are_stratified_by_class() -> None:
    classes = ["good"] * 80 + ["bruise"] * 15 + ["rot"] * 5
    picked = stratified_indices(classes, 20, seed=0)
    chosen = [classes[i] for i in picked]
    assert len(picked) == 20 and len(set(picked.tolist())) == 20
    assert chosen.count("good") == 16 and chosen.count("bruise") == 3 and chosen.count("rot") == 1


def test_calibration_without_defect_images_is_one_sentence() -> None:
    with pytest.raises(DataError, match="needs good and defect images; add defect images"):
        stratified_indices(["good"] * 10, 5)


def test_a_model_without_convolutions_cannot_be_quantised(tmp_path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["image"], ["probabilities"], axis=1)],
        "softmax-only",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
    )
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ConfigError, match="cannot be quantised; export it with --no-int8"):
        quantize_int8(path, tmp_path / "int8.onnx", np.zeros((2, 3), np.float32))


def test_ranges_collected_batch_by_batch_are_onnxruntimes_own(fp32_model, tmp_path):
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        create_calibrator,
        load_tensors_data,
    )

    prepared, _ = _prepare(fp32_model, tmp_path / "prepared.onnx")
    images = np.random.default_rng(3).normal(size=(12, 3, SIZE, SIZE)).astype(np.float32)
    ours = {m: tmp_path / f"{m.value}.json" for m in MEASURED_CALIBRATIONS}
    with contextlib.redirect_stdout(io.StringIO()):
        _calibrate(prepared, images, ours, batch_size=8)  # two batches of 6
        for method, ort_method, options in (
            (Calibration.MINMAX, CalibrationMethod.MinMax, {}),
            (Calibration.ENTROPY, CalibrationMethod.Entropy, {"num_bins": 256}),
            (Calibration.PERCENTILE, CalibrationMethod.Percentile, {}),
        ):
            calibrator = create_calibrator(
                prepared, None, augmented_model_path=str(tmp_path / "augmented.onnx"),
                calibrate_method=ort_method, extra_options={"symmetric": False, **options},
            )
            calibrator.collect_data(_Reader(images, 12))  # every image at once
            reference, ranges = calibrator.compute_data(), load_tensors_data(ours[method])
            assert sorted(ranges.keys()) == sorted(reference.keys()) and len(ranges.keys()) > 50
            for name in reference:
                pairs = zip(ranges[name].range_value, reference[name].range_value)
                for ours_value, theirs in pairs:
                    np.testing.assert_array_equal(ours_value, theirs, err_msg=f"{method} {name}")
                if method is not Calibration.MINMAX:
                    np.testing.assert_array_equal(ranges[name].hist, reference[name].hist)


@pytest.mark.slow
def test_search_measures_every_method_and_keeps_sensitive_groups_float(fp32_model, tmp_path):
    rng = np.random.default_rng(2)
    images = rng.normal(size=(32, 3, SIZE, SIZE)).astype(np.float32)
    classes = ["good"] * 24 + ["bruise"] * 8
    scores = 1 - onnx_predict(fp32_model, images)[0][:, 0]
    threshold = float(np.median(scores))  # decisions on a knife edge: INT8 flips some
    choice = search_int8(
        fp32_model,
        tmp_path / "int8.onnx",
        images,
        classes,
        threshold,
        Calibration.AUTO,
        tolerance=0.0,
        max_float_groups=1,
    )
    assert set(choice.methods) == {"minmax", "entropy", "percentile"}
    assert choice.methods["entropy"] != choice.methods["minmax"]
    assert choice.calibration_classes == {"bruise": 8, "good": 24}
    assert choice.methods[choice.method]["decision_flips"] > 1  # over budget: the sweep ran
    swept = {row["group"] for row in choice.sensitivity}
    assert swept == set(node_groups(fp32_model)) - {"/head/Gemm"}  # the head is float anyway
    assert (
        choice.float_groups
        == [row["group"] for row in choice.sensitivity][: len(choice.float_groups)]
    )
    model = onnx.load(str(tmp_path / "int8.onnx"))
    producers = {out: n for n in model.graph.node for out in n.output}
    for node in model.graph.node:
        if node.name in choice.float_nodes and node.op_type == "Conv":
            source = producers.get(node.input[1])
            assert source is None or source.op_type != "DequantizeLinear"
    assert all(row["decision_flips"] >= 0 for row in choice.steps)


@pytest.mark.parametrize("features", ["pooled", "patches"])
def test_int8_quantises_the_backbone_and_keeps_only_the_head_float(features, tmp_path):
    import torch

    torch.manual_seed(0)
    spec = ModelSpec(
        "mobilenetv3_small_100", ["good", "bruise"], Preprocessing(size=SIZE), features=features
    )
    fp32 = export_onnx(build_model(spec).eval(), SIZE, tmp_path / "model.onnx")
    calibration = np.random.default_rng(2).normal(size=(8, 3, SIZE, SIZE)).astype(np.float32)
    int8 = onnx.load(str(quantize_int8(fp32, tmp_path / "int8.onnx", calibration)))

    quantised = {n.output[0] for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in int8.graph.node if n.op_type == "Conv"]
    float_convs = [n for n in convs if n.input[1] not in quantised]
    # the patch head's per-cell scorer is two 1x1 convolutions; everything else runs in INT8
    assert len(float_convs) == (2 if features == "patches" else 0)
    assert len(convs) - len(float_convs) > 30
