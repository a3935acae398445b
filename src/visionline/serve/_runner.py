"""The one place where the server touches a model: a verified edge bundle run by ONNX Runtime.

Everything else in `visionline.serve` sees a `ModelRunner`: batches in, named arrays out. The
bundle is opened with the edge runtime (`visionline_edge.load_bundle`), so the server
checks the same checksums and signature and applies the same preprocessing as an edge box.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionline.errors import DataError, IntegrityError, VisionlineError
from visionline.preprocessing import decode_image

PROBABILITIES = "probabilities"
EMBEDDING = "embedding"
ANOMALY_SCORE = "score"
ANOMALY_MAP = "anomaly_map"
"""An anomaly bundle's map: sent only to a client that names it among the requested outputs."""
_DATATYPES = {"tensor(float)": "FP32", "tensor(bool)": "BOOL", "tensor(int64)": "INT64"}


class ModelRunner:
    """A loaded model version: image bytes or NCHW tensors in, probabilities and embeddings out."""

    def __init__(self, edge_model: Any, max_pixels: int | None = None) -> None:
        self.model = edge_model
        self.session = edge_model.session
        self.max_pixels = min(max_pixels or edge_model.max_pixels, edge_model.max_pixels)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.kind = str(getattr(edge_model, "kind", "classifier"))
        self.is_anomaly = self.kind == "anomaly"
        size = edge_model.preprocessing.size
        self.input_shape = [3, size, size]
        self.version = str(edge_model.version)
        self.ready = False

    name = property(lambda self: self.model.name)
    classes = property(lambda self: list(self.model.classes))
    threshold = property(lambda self: float(self.model.threshold))
    class_labels = property(lambda self: dict(self.model.class_labels))

    def outputs_metadata(self) -> list[dict[str, Any]]:
        """Output names, datatypes and shapes (batch dim -1) as the v2 metadata endpoint shows them."""
        result = []
        for output in self.session.get_outputs():
            dims = [-1] + [d if isinstance(d, int) else -1 for d in output.shape[1:]]
            datatype = _DATATYPES.get(output.type, "FP32")
            result.append({"name": output.name, "datatype": datatype, "shape": dims})
        if self.is_anomaly:  # derived by the edge runtime from the graph's outputs
            for entry in self.model.manifest["signature"].get("derived_outputs", []):
                result.append({"name": entry["name"], "datatype": "FP32", "shape": entry["shape"]})
        return result

    @property
    def default_outputs(self) -> list[str]:
        """The outputs a request that names none gets: all but an anomaly bundle's map."""
        if not self.is_anomaly:
            return list(self.output_names)
        names = [*self.output_names, PROBABILITIES, EMBEDDING]
        return [name for name in names if name != ANOMALY_MAP]

    def decode(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded JPEG/PNG bytes → NCHW float32 with the bundle's own preprocessing."""
        return self.model.preprocessing.normalize(self._pixels(images))

    def decode_with_quality(self, images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """The model batch plus each image's quality statistics (brightness, contrast, sharpness,
        colourfulness) on the same resized pixels the bundle's drift reference was computed on.
        Only the prediction log needs them, and they cost a tenth of a request's time."""
        from visionline_edge import image_quality

        preprocessing = self.model.preprocessing
        pixels = self._pixels(images)
        return preprocessing.normalize(pixels), image_quality(pixels, preprocessing.channel_order)

    def _pixels(self, images: Sequence[bytes]) -> np.ndarray:
        if not images:
            raise DataError("The request holds no images; send at least one.")
        preprocessing = self.model.preprocessing
        return np.stack([preprocessing.to_uint8(decode_image(bytes(b), self.max_pixels)) for b in images])

    def check_tensor(self, array: np.ndarray) -> np.ndarray:
        """Refuse a raw tensor whose shape or dtype this model cannot take."""
        if array.dtype != np.float32:
            raise DataError(f"Input tensor must be FP32, not {array.dtype}; convert it first.")
        if array.ndim != 4 or list(array.shape[1:]) != self.input_shape or array.shape[0] < 1:
            raise DataError(
                f"Input tensor has shape {list(array.shape)} but this model takes "
                f"[N, {', '.join(map(str, self.input_shape))}]; apply the bundle preprocessing."
            )
        return np.ascontiguousarray(array)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one NCHW float32 batch; every output keeps the batch dimension."""
        if self.is_anomaly:
            return self.model.outputs(batch)
        values = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, values))

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run the graph once per batch size so the first real request pays no allocation cost."""
        for n in batch_sizes:
            self.infer(np.zeros([n, *self.input_shape], dtype=np.float32))

    def self_test(self) -> None:
        """A grey image must give finite probabilities over the bundle's classes that sum to one."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
        probs = self.infer(self.decode([buffer.getvalue()])).get(PROBABILITIES)
        if probs is None or probs.shape != (1, len(self.classes)):
            raise IntegrityError(
                f"Model {self.name} v{self.version} gives no {PROBABILITIES} of shape "
                f"[1, {len(self.classes)}]; re-export it with the bundle's classes."
            )
        if not np.all(np.isfinite(probs)) or abs(float(probs.sum()) - 1.0) > 1e-3:
            raise IntegrityError(
                f"Model {self.name} v{self.version} gives invalid probabilities; re-export it."
            )
        self.ready = True


def load_runner(
    path: Path,
    *,
    pubkey: Path | None = None,
    trust_store: Path | None = None,
    require_signature: bool = False,
    threads: int = 0,
    max_pixels: int | None = None,
    warm_up_batch_sizes: Sequence[int] = (1,),
) -> ModelRunner:
    """Verify (with the edge runtime's checks) → load → warm up → self-test. Raises on any
    failure, so the caller keeps the old one."""
    from visionline_edge import load_bundle

    try:
        edge_model = load_bundle(
            path,
            pubkey=pubkey,
            threads=threads or None,
            trust_store=trust_store,
            require_signature=require_signature,
        )
    except VisionlineError:
        raise
    except Exception as exc:  # onnxruntime and json raise their own types for broken files
        raise IntegrityError(
            f"Bundle {path} cannot be loaded ({type(exc).__name__}: {exc}); re-export it."
        ) from exc
    runner = ModelRunner(edge_model, max_pixels=max_pixels)
    runner.warm_up(warm_up_batch_sizes)
    runner.self_test()
    return runner
