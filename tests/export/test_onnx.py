"""ONNX export: IO signature, dynamic batch, parity pass and a forced parity failure."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from visionline.errors import GateFailedError
from visionline.export import check_parity, export_onnx
from visionline.export._data import synthetic_pixels
from visionline.export._onnx import onnx_predict
from visionline.preprocessing import Preprocessing
from visionline.train import ModelSpec, build_model

SPEC = ModelSpec(
    backbone="mobilenetv3_small_100",
    class_names=["good", "bruise", "rot"],
    preprocessing=Preprocessing(size=64),
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    path = export_onnx(model, 64, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def test_export_has_named_io_dynamic_batch_and_opset(exported) -> None:
    model, path = exported
    graph = onnx.load(str(path))
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in graph.graph.input] == ["image"]
    assert [o.name for o in graph.graph.output] == ["probabilities", "embedding"]
    batch = SPEC.preprocessing.normalize(synthetic_pixels(64, 5))
    probs, emb = onnx_predict(path, batch)
    assert probs.shape == (5, 3) and emb.shape == (5, model.head.in_features)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_parity_passes_for_a_faithful_export(exported) -> None:
    model, path = exported
    report = check_parity(model, path, SPEC.preprocessing.normalize(synthetic_pixels(64, 8)))
    assert report.passed and report.max_abs_diff <= 1e-4 and report.argmax_agreement == 1.0


def test_parity_failure_stops_the_export_with_numbers(exported) -> None:
    model, path = exported
    changed = build_model(SPEC).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.head.bias += torch.tensor([3.0, 0.0, -3.0])
    with pytest.raises(GateFailedError, match=r"parity failed on 8 .*argmax agreement"):
        check_parity(changed, path, SPEC.preprocessing.normalize(synthetic_pixels(64, 8)))
