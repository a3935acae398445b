"""INT8 quantisation: the image's channels are padded to 4 so ONNX Runtime's fast int8
convolution runs the stem; padding must not change what the model computes."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from visionline.export._onnx import export_onnx, onnx_predict
from visionline.export._quantize import _pad_input_channels, quantize_int8
from visionline.preprocessing import Preprocessing
from visionline.train import ModelSpec, build_model

SIZE = 32


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    spec = ModelSpec("mobilenetv3_small_100", ["good", "bruise", "rot"], Preprocessing(size=SIZE))
    return export_onnx(build_model(spec).eval(), SIZE, tmp_path_factory.mktemp("onnx") / "model.onnx")


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
