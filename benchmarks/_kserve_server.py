"""The serving benchmark's KServe peer: a KServe `ModelServer` around the same ONNX model.

Run by the benchmark with KServe's own venv (KServe pins other library versions than visionline):
`python _kserve_server.py MODEL.onnx SIZE HTTP_PORT GRPC_PORT ORT_THREADS`. It takes BYTES
(encoded images, decoded with visionline's own preprocessing so every server sees the same
pixels) or FP32 (a tensor the client preprocessed). KServe has no dynamic batcher of its own.
"""

from __future__ import annotations

import base64
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from visionline.preprocessing import Preprocessing, decode_image


class OnnxImages(Model):
    """One ONNX Runtime session behind KServe's v2 REST and gRPC front ends."""

    def __init__(self, name: str, path: str, size: int, threads: int) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.prep = Preprocessing(size=size)
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        tensor = payload.inputs[0]
        if tensor.datatype == "FP32":
            batch = np.ascontiguousarray(tensor.as_numpy(), dtype=np.float32)
        else:  # JSON carries base64 text, gRPC raw bytes
            items = tensor.as_numpy().reshape(-1)
            raws = [base64.b64decode(i) if isinstance(i, str) else bytes(i) for i in items]
            batch = self.prep([decode_image(r) for r in raws])
        (probs,) = self.session.run(["probabilities"], {"image": batch})
        out = InferOutput(name="probabilities", shape=list(probs.shape), datatype="FP32")
        out.set_data_from_numpy(probs, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "0")


if __name__ == "__main__":
    model_path, size, http_port, grpc_port, threads = sys.argv[1], *map(int, sys.argv[2:6])
    ModelServer(http_port=http_port, grpc_port=grpc_port, enable_grpc=True, workers=1).start(
        [OnnxImages("apples", model_path, size, threads)]
    )
