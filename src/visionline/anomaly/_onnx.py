"""ONNX export of a detector with the memory bank and the nearest-neighbour search inside the
graph, its INT8 variant, and the parity gate against PyTorch on the same images.

The graph's contract (kept stable: bundles, the server and the edge runtime rely on it):

- input ``image``: float32 (N, 3, S, S), the output of the model's `Preprocessing` (S = its
  size; resize mode, autocontrast, mean/std as recorded there); any batch size N.
- output ``score``: float32 (N,), the image anomaly score, a patch-feature distance (higher =
  more anomalous, unbounded, not a probability).
- output ``decision``: bool (N,), ``score > threshold``, the threshold fixed at export (set on
  validation good images at the false-reject budget).
- output ``anomaly_map``: float32 (N, 1, S, S), per-pixel distance in the model-input frame
  (same units as the score, smoothed); map it back to the image with the `Preprocessing`'s
  resize mode (letterbox padding carries no meaning).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionline.anomaly._model import AnomalySpec, PatchCore
from visionline.errors import ConfigError, GateFailedError

INPUT_NAME = "image"
OUTPUT_NAMES = ("score", "decision", "anomaly_map")
SCORE_TOLERANCE = 1e-3
"""Relative: scores are distances of order 1-100, compared against the largest test score."""
MAP_TOLERANCE = 1e-3


class _Exported(nn.Module):
    def __init__(self, model: PatchCore, threshold: float):
        super().__init__()
        self.model = model
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        score, anomaly_map = self.model(image)
        return score, score > self.threshold, anomaly_map


def export_anomaly_onnx(model: PatchCore, spec: AnomalySpec, path: Path, opset: int = 17) -> Path:
    """Write the detector (bank, search, reweighting, smoothing) as one ONNX graph."""
    from visionline.export._onnx import optimize_onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw.onnx")
    size = spec.preprocessing.size
    dummy = torch.zeros(2, 3, size, size)
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Exported(model.eval(), spec.threshold).eval(),
            (dummy,),
            str(raw),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            dynamo=False,
        )
    optimize_onnx(raw, path)
    raw.unlink()
    return path


def quantize_anomaly_onnx(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> Path:
    """Static INT8 (QDQ, per-channel weights) of the backbone's convolutions only.

    The memory bank, the nearest-neighbour search (MatMul), the reweighting and the smoothing
    stay float: quantised distances would move every score by the quantisation step of the bank.
    `calibration` is a normalised batch of good images (N, 3, S, S).
    """
    import contextlib
    import io
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ConfigError("INT8 calibration needs at least one good image; supply some.")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            parts = [calibration[i : i + 8] for i in range(0, len(calibration), 8)]
            self._batches = iter([{INPUT_NAME: np.ascontiguousarray(p)} for p in parts])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="visionline-anomaly-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration progress
            quantize_static(
                str(prepared),
                str(int8_path),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
    return int8_path


def onnx_anomaly_predict(
    session: Any, batch: np.ndarray, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, decisions, maps (N, S, S)) from an ONNX Runtime session on a normalised batch."""
    scores, decisions, maps = [], [], []
    for start in range(0, len(batch), batch_size):
        part = np.ascontiguousarray(batch[start : start + batch_size], dtype=np.float32)
        score, decision, amap = session.run(list(OUTPUT_NAMES), {INPUT_NAME: part})
        scores.append(score)
        decisions.append(decision)
        maps.append(amap[:, 0])
    return np.concatenate(scores), np.concatenate(decisions), np.concatenate(maps)


def check_anomaly_parity(
    model: PatchCore, spec: AnomalySpec, path: Path, batch: np.ndarray
) -> dict[str, float]:
    """Max relative score and map differences of ONNX vs PyTorch; fails the gate beyond tolerance
    or when a decision not within rounding of the threshold differs."""
    from visionline.export._onnx import onnx_session

    with torch.inference_mode():
        score, amap = model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    score, amap = score.numpy(), amap[:, 0].numpy()
    onnx_scores, onnx_decisions, onnx_maps = onnx_anomaly_predict(onnx_session(path), batch)
    scale = max(float(np.abs(score).max()), 1e-6)
    map_scale = max(float(np.abs(amap).max()), 1e-6)
    report = {
        "max_score_diff": float(np.abs(onnx_scores - score).max() / scale),
        "max_map_diff": float(np.abs(onnx_maps - amap).max() / map_scale),
        # a score within rounding of the threshold may fall either side in either runtime
        "decisions_differ": int(
            np.sum(
                (onnx_decisions != (score > spec.threshold))
                & (np.abs(score - spec.threshold) > SCORE_TOLERANCE * scale)
            )
        ),
    }
    if (
        report["max_score_diff"] > SCORE_TOLERANCE
        or report["max_map_diff"] > MAP_TOLERANCE
        or report["decisions_differ"]
    ):
        raise GateFailedError(
            f"ONNX and PyTorch disagree (score {report['max_score_diff']:.2e}, map "
            f"{report['max_map_diff']:.2e} relative, {report['decisions_differ']} decisions); "
            "re-export with another opset or report the model."
        )
    return report
