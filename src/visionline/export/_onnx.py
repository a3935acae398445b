"""ONNX export of an `InspectionModel`, offline graph optimisation, and the PyTorch parity check."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionline.errors import GateFailedError

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "embedding")


def _wrapper(model: Any, temperature: float) -> Any:
    """The exported graph: image → (softmax(logits / T), pooled embedding)."""
    import torch

    class _Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            embedding, logits = self.model.predict(image)
            return torch.softmax(logits / temperature, dim=1), embedding

    return _Exported().eval()


def torch_predict(
    model: Any, batch: np.ndarray, temperature: float, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) from PyTorch eager, in batches."""
    import torch

    wrapped = _wrapper(model, temperature)
    probs, embs = [], []
    with torch.inference_mode():
        for start in range(0, len(batch), batch_size):
            p, e = wrapped(
                torch.from_numpy(np.ascontiguousarray(batch[start : start + batch_size]))
            )
            probs.append(p.numpy())
            embs.append(e.numpy())
    return np.concatenate(probs), np.concatenate(embs)


def export_onnx(
    model: Any, image_size: int, path: Path, temperature: float = 1.0, opset: int = OPSET
) -> Path:
    """Export to ONNX with a dynamic batch axis, then optimise the graph offline (portable ops only)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw.onnx")
    dummy = torch.zeros(2, 3, image_size, image_size)
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _wrapper(model, temperature),
            (dummy,),
            str(raw),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            dynamo=False,
        )
    model.eval()
    optimize_onnx(raw, path)
    raw.unlink()
    return path


def optimize_onnx(source: Path, target: Path) -> Path:
    """ONNX Runtime's basic offline optimisation (constant folding, Conv+BN fusion, dead nodes)
    plus ONNX shape inference: the result holds standard ONNX ops only, so any runtime loads it."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(target)))
    onnx.checker.check_model(inferred)
    onnx.save(inferred, str(target))
    return target


def onnx_session(path: Path, threads: int | None = None, spinning: bool = True) -> Any:
    """A CPU session; `spinning=False` stops idle worker threads from busy-waiting, which matters
    when other work (another backend in a benchmark) shares the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batch1_latencies_ms(session: Any, size: int, runs: int, warmup: int = 5) -> list[float]:
    """Wall milliseconds of `runs` batch-1 inferences on a blank image, after `warmup` runs."""
    one = np.zeros((1, 3, size, size), dtype=np.float32)
    for _ in range(warmup):
        session.run(None, {"image": one})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"image": one})
        times.append((time.perf_counter() - start) * 1000)
    return times


def onnx_predict(
    path_or_session: Any, batch: np.ndarray, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) from an ONNX model, in batches."""
    session = (
        onnx_session(path_or_session)
        if isinstance(path_or_session, (str, Path))
        else path_or_session
    )
    probs, embs = [], []
    for start in range(0, len(batch), batch_size):
        p, e = session.run(
            list(OUTPUT_NAMES),
            {INPUT_NAME: np.ascontiguousarray(batch[start : start + batch_size])},
        )
        probs.append(p)
        embs.append(e)
    return np.concatenate(probs), np.concatenate(embs)


@dataclass(frozen=True)
class ParityReport:
    """How far the ONNX model's probabilities are from PyTorch's on the same images."""

    images: int
    max_abs_diff: float
    argmax_agreement: float
    atol: float
    source: str

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.argmax_agreement == 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def check_parity(
    model: Any,
    onnx_path: Path,
    batch: np.ndarray,
    temperature: float = 1.0,
    atol: float = 1e-4,
    source: str = "validation",
) -> ParityReport:
    """Compare PyTorch and ONNX on `batch`; raise `GateFailedError` with the numbers if they differ."""
    torch_probs, _ = torch_predict(model, batch, temperature)
    onnx_probs, _ = onnx_predict(onnx_path, batch)
    report = ParityReport(
        images=len(batch),
        max_abs_diff=float(np.max(np.abs(torch_probs - onnx_probs))),
        argmax_agreement=float(np.mean(torch_probs.argmax(1) == onnx_probs.argmax(1))),
        atol=atol,
        source=source,
    )
    if not report.passed:
        raise GateFailedError(
            f"ONNX parity failed on {report.images} {source} images: max |Δp| = {report.max_abs_diff:.2e} "
            f"(limit {atol:.0e}), argmax agreement {report.argmax_agreement:.1%} (need 100%); "
            "check for ops that export differently, or raise the tolerance knowingly."
        )
    return report
