"""The serving benchmark's model for Triton's Python backend (copied into the repository as model.py).

Triton's ONNX Runtime backend is not in the `nvidia-pytriton` wheel (it ships only the Python
backend), so this model runs the same ONNX file in an ONNX Runtime session inside the backend's
stub process. Triton's dynamic batcher hands `execute` several requests at once; they run as one
ONNX Runtime call. An image model decodes and preprocesses with visionline's own code first, so
all servers compare the same pixels. Imported only by Triton's stub, never by visionline.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from visionline.preprocessing import Preprocessing, decode_image


class TritonPythonModel:
    """One ONNX Runtime session; BYTES input = encoded images, FP32 input = preprocessed tensors."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params["ort_threads"])
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            params["onnx_path"], options, providers=["CPUExecutionProvider"]
        )
        self.prep = Preprocessing(size=int(params["size"]))
        self.images = config["input"][0]["data_type"] == "TYPE_STRING"

    def _batch(self, request) -> np.ndarray:
        array = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
        if self.images:
            return self.prep([decode_image(bytes(item)) for item in array.reshape(-1)])
        return np.ascontiguousarray(array, dtype=np.float32)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        batches, owners = [], []
        for k, request in enumerate(requests):
            try:
                batches.append(self._batch(request))
                owners.append(k)
            except Exception as exc:  # noqa: BLE001  (one bad image fails its own request only)
                responses[k] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        if batches:
            (probs,) = self.session.run(["probabilities"], {"image": np.concatenate(batches)})
            start = 0
            for k, batch in zip(owners, batches):
                rows = probs[start : start + len(batch)]
                start += len(batch)
                responses[k] = pb_utils.InferenceResponse([pb_utils.Tensor("probabilities", rows)])
        return responses
