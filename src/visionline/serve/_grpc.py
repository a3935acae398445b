"""The gRPC front end: `inference.GRPCInferenceService` from the v2 stubs shipped in tritonclient.

A synchronous `grpc.server` with a pool of handler threads, not grpc.aio: each handler decodes its
own request and waits for the batcher (which runs a lone request right there), so a request costs
no event-loop round trips. Measured against grpc.aio on this machine, that took about 0.85 ms off
the c=1 p50 (benchmarks/serving.py). The handlers never touch the REST event loop.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from visionline.errors import DataError, IntegrityError, VisionlineError
from visionline.serve._middleware import log_request
from visionline.serve._protocol import DTYPES, Tensor, datatype_of, serialize_bytes, tensor_from_raw
from visionline.serve._rest import EXTENSIONS, SERVER_NAME, status_for
from visionline.serve._security import KeyGuard, grpc_auth_interceptor
from visionline.serve._service import ROUTE_HEADER, InferenceService

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CONTENT_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _tensor_from_contents(item: Any) -> Tensor:
    shape = list(item.shape)
    field = _CONTENT_FIELDS.get(item.datatype)
    if field is None:
        raise DataError(f"Input {item.name!r} has unsupported datatype {item.datatype!r}; use FP32 or BYTES.")
    values = list(getattr(item.contents, field))
    count = int(np.prod(shape)) if shape else 1
    if len(values) != count or any(d < 0 for d in shape):
        raise DataError(f"Input {item.name!r} has {len(values)} elements but shape {shape} needs {count}.")
    if item.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = values
    else:
        array = np.asarray(values, dtype=DTYPES[item.datatype])
    return Tensor(item.name, item.datatype, shape, array.reshape(shape))


def _parameter_value(parameter: Any) -> Any:
    """The Python value of a v2 `InferParameter` (bool, int64, string, double or uint64)."""
    kind = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, kind) if kind else None


class _AccessLog(grpc.ServerInterceptor):
    """One structured log line per call, as REST writes one per request. An infer request without
    an id gets one here, so the log line, the response and the prediction log share it."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        behaviour, method = handler.unary_unary, details.method

        def logged(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            if isinstance(request, pb.ModelInferRequest) and not request.id:
                request.id = uuid.uuid4().hex
            try:
                return behaviour(request, context)
            finally:
                code = context.code() or grpc.StatusCode.OK
                log_request(getattr(request, "id", None) or None, "grpc", method, code.name, started)

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.repo = service.repository

    def _fail(self, context: Any, exc: VisionlineError) -> None:
        context.abort(_CODES.get(status_for(exc), grpc.StatusCode.INVALID_ARGUMENT), str(exc))

    def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.repo.server_ready())

    def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.repo.is_ready(request.name, request.version or None))

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        from visionline import __version__

        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            served = self.repo.get(request.name, request.version or None)
        except VisionlineError as exc:
            self._fail(context, exc)
        runner = served.runner
        versions = self.repo.served_versions(request.name)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=versions,
            platform="onnxruntime_onnx",
            inputs=[tensor(name="image", datatype="FP32", shape=[-1, *runner.input_shape])],
            outputs=[tensor(name=o["name"], datatype=o["datatype"], shape=o["shape"]) for o in runner.outputs_metadata()],
        )

    def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        metrics = self.service.metrics
        try:
            raw = list(request.raw_input_contents)
            if raw and len(raw) != len(request.inputs):
                raise DataError("raw_input_contents must hold one entry per input.")
            tensors = [
                tensor_from_raw(item.name, item.datatype, list(item.shape), raw[i]) if raw else _tensor_from_contents(item)
                for i, item in enumerate(request.inputs)
            ]
            metadata = dict(context.invocation_metadata() or ())
            result = self.service.infer_blocking(
                request.model_name, request.model_version or None, tensors,
                request_id=request.id,
                forced_route=metadata.get(ROUTE_HEADER),
                parameters={key: _parameter_value(value) for key, value in request.parameters.items()},
            )
            wanted = [o.name for o in request.outputs] or result.default_outputs
            unknown = [n for n in wanted if n not in result.outputs]
            if unknown:
                raise DataError(f"Model {request.model_name} has no output {unknown[0]!r}.")
        except VisionlineError as exc:
            metrics.requests.labels(request.model_name, request.model_version, "grpc", str(status_for(exc))).inc()
            self._fail(context, exc)
        post = time.perf_counter()
        response = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=request.id)
        for name in wanted:
            array = result.outputs[name]
            datatype = datatype_of(array)
            response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
            response.raw_output_contents.append(
                serialize_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
            )
        done = time.perf_counter()
        metrics.step_latency.labels(result.model, result.version, "postprocess").observe(
            result.timings["postprocess"] + done - post
        )
        metrics.request_latency.labels(result.model, result.version, "grpc").observe(done - started)
        metrics.requests.labels(result.model, result.version, "grpc", "200").inc()
        return response

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        entry = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[entry(**row) for row in self.repo.index()])

    def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        try:
            self.repo.load(request.model_name)
        except IntegrityError as exc:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Load of {request.model_name} failed and the previous version keeps serving: {exc}",
            )
        except VisionlineError as exc:
            self._fail(context, exc)
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        try:
            self.repo.unload(request.model_name)
        except VisionlineError as exc:
            self._fail(context, exc)
        return pb.RepositoryModelUnloadResponse()


def create_grpc_server(service: InferenceService, address: str) -> tuple[grpc.Server, int]:
    """A gRPC server on `address` (port 0 picks a free one) with `grpc_threads` handlers; calls
    beyond those wait, up to `max_queue_size` in all, then get RESOURCE_EXHAUSTED. Keys are
    checked before a handler runs; with `tls_cert`/`tls_key` the port speaks TLS only."""
    config = service.config
    auth = grpc_auth_interceptor(KeyGuard.for_config(config), service.metrics.rejected)
    server = grpc.server(
        ThreadPoolExecutor(config.grpc_threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", config.max_body_bytes),
            ("grpc.max_send_message_length", config.max_body_bytes),
        ],
        maximum_concurrent_rpcs=config.grpc_threads + config.max_queue_size,
        interceptors=[_AccessLog(), auth],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(service), server)
    if config.tls_cert is None or config.tls_key is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
        port = server.add_secure_port(address, credentials)
    return server, port
