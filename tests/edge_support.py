"""A tiny but real edge bundle, made in milliseconds: an ONNX graph built with `onnx.helper`
(mean colour → embedding → linear → softmax), written by the export stage's `finalize_bundle`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["good", "bruise", "rot"]
SIZE = 32


def tiny_onnx(path: Path) -> Path:
    """image [N,3,S,S] → embedding [N,3] (mean colour) → probabilities [N,3]: a darker image is a
    defect, so decisions depend on the pixels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[4.0, -2.0, -2.0], [4.0, -2.0, -2.0], [4.0, -2.0, -2.0]], np.float32)
    bias = np.array([-6.0, 3.0, 2.0], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["embedding"]),
            helper.make_node("Gemm", ["embedding", "W", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3]),
        ],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_bundle(
    target: Path, key: Path | None = None, threshold: float = 0.5, version: str = "1"
) -> Path:
    """A bundle directory in the export stage's format, signed when `key` is given."""
    from visionline.export._bundle import finalize_bundle
    from visionline.preprocessing import Preprocessing

    target.mkdir(parents=True)
    tiny_onnx(target / "model.onnx")
    (target / "reference").mkdir()
    np.save(target / "reference" / "scores.npy", np.linspace(0, 1, 8, dtype=np.float32))
    manifest = {
        "name": "apples",
        "version": version,
        "classes": CLASSES,
        "class_labels": {"good": "good", "bruise": "defect", "rot": "defect"},
        "threshold": threshold,
        "preprocessing": Preprocessing(size=SIZE).to_dict(),
        "models": {"fp32": {"file": "model.onnx", "precision": "fp32"}},
        "deployed": "fp32",
    }
    finalize_bundle(target, manifest, signing_key=key)
    return target


def make_anomaly_bundle(target: Path, key: Path, threshold: float = 1.0) -> Path:
    """A signed anomaly bundle in the anomaly exporter's contract (`score`, `decision`,
    `anomaly_map`): the score is how dark the normalised image is, so a dark item is anomalous."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from visionline.export._bundle import finalize_bundle
    from visionline.preprocessing import Preprocessing

    target.mkdir(parents=True)
    graph = helper.make_graph(
        [
            helper.make_node("Neg", ["image"], ["dark"]),
            helper.make_node("ReduceMean", ["dark"], ["score"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Greater", ["score", "T"], ["decision"]),
            helper.make_node("ReduceMean", ["dark"], ["anomaly_map"], axes=[1], keepdims=1),
        ],
        "tiny-anomaly",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("decision", TensorProto.BOOL, ["N"]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, SIZE, SIZE]),
        ],
        [numpy_helper.from_array(np.array(threshold, np.float32), "T")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(target / "model.onnx"))
    manifest = {
        "name": "apples-anomaly", "version": "1", "kind": "anomaly",
        "classes": ["good", "anomaly"], "class_labels": {"good": "good", "anomaly": "defect"},
        "threshold": 0.5, "anomaly": {"threshold": threshold},
        "preprocessing": Preprocessing(size=SIZE).to_dict(),
        "models": {"fp32": {"file": "model.onnx", "precision": "fp32"}}, "deployed": "fp32",
    }
    finalize_bundle(target, manifest, signing_key=key)
    return target


def png(colour: tuple[int, int, int], size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()
