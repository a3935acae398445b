"""The REST front end: KServe v2 endpoints, Triton's binary extension, and a multipart predict."""

from __future__ import annotations

import logging
import re
import time
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from visionline.errors import (
    ConfigError,
    DataError,
    IntegrityError,
    NotFoundError,
    ServiceUnavailableError,
    VisionlineError,
)
from visionline.serve._batcher import OverloadedError
from visionline.serve._middleware import BodyTooLargeError, RequestContextMiddleware
from visionline.serve._protocol import (
    InferenceRequest,
    Tensor,
    build_http_response,
    parse_http_request,
    wants_binary,
)
from visionline.serve._security import KeyGuard, RestAuthMiddleware
from visionline.serve._service import ROUTE_HEADER, InferenceService, RequestTimeoutError

log = logging.getLogger("visionline.serve")

SERVER_NAME = "visionline"
EXTENSIONS = ["binary_tensor_data", "model_repository", "image_bytes_input", "schedule_policy"]


_PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "binary_data", "binary_data_size"})
"""Request parameters of Triton's binary-data extension: transport settings, not metadata."""


def _user_parameters(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The request parameters a client meant as metadata (delivery, supplier, line ...)."""
    return {k: v for k, v in (parameters or {}).items() if k not in _PROTOCOL_PARAMETERS}


def status_for(exc: VisionlineError) -> int:
    """HTTP status for a domain error: client mistakes are 4xx, capacity problems 503/504."""
    if isinstance(exc, BodyTooLargeError):
        return 413
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, RequestTimeoutError):
        return 504
    if isinstance(exc, ServiceUnavailableError):
        return 503
    return 400


def _error(exc: VisionlineError) -> JSONResponse:
    status = status_for(exc)
    headers = {"Retry-After": str(OverloadedError.retry_after_s)} if status == 503 else None
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Pydantic's `$defs` inlined, so the schema can sit inside an OpenAPI operation."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline_refs(InferenceRequest.model_json_schema())}},
    }
}


_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class _InferShortcut:
    """Pure ASGI: v2 infer POSTs go straight to their handler, past FastAPI's router, dependency
    solving and exception middleware: that nearly halves the event loop's time per request in
    the app. The FastAPI routes stay for the OpenAPI schema and answer the same."""

    def __init__(self, app: Any, handler: Any) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _INFER_PATH.fullmatch(scope["path"])
            if match:
                await self.handler(scope, receive, send, match[1], match[2])
                return
        await self.app(scope, receive, send)


def _internal_error() -> JSONResponse:
    return JSONResponse({"error": "Internal server error; see the server log for the request id."}, 500)


def create_app(service: InferenceService) -> Any:
    """The FastAPI app for one `InferenceService`, wrapped in the request-context middleware."""
    config = service.config
    repo = service.repository
    metrics = service.metrics
    app = FastAPI(title="visionline inference server", version="2", docs_url="/docs", redoc_url=None)

    @app.exception_handler(VisionlineError)
    async def _domain_error(request: Request, exc: VisionlineError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error()

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ["body"], "msg": "invalid"}
        where = ".".join(str(p) for p in first.get("loc", []))
        return JSONResponse({"error": f"Request field {where!r}: {first.get('msg')}; fix the request."}, 400)

    # --- health and metadata ------------------------------------------------------------------
    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok = repo.server_ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2")
    async def server_metadata() -> dict:
        from visionline import __version__

        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(model: str, version: str | None) -> dict:
        served = repo.get(model, version)
        runner = served.runner
        versions = repo.served_versions(model)
        return {
            "name": model,
            "versions": versions,
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, *runner.input_shape]}],
            "outputs": runner.outputs_metadata(),
            "parameters": {
                "version": served.version,
                "classes": runner.classes,
                "class_labels": runner.class_labels,
                "threshold": runner.threshold,
                "image_input": "BYTES [N] of encoded JPEG/PNG images is also accepted as 'image'",
                "max_batch_size": config.max_batch_size,
            },
        }

    @app.get("/v2/models/{model}")
    async def get_model(model: str) -> dict:
        return model_metadata(model, None)

    @app.get("/v2/models/{model}/versions/{version}")
    async def get_model_version(model: str, version: str) -> dict:
        return model_metadata(model, version)

    def readiness(model: str, version: str | None) -> JSONResponse:
        if model not in repo.model_names_on_disk() or (version and version not in repo.versions_on_disk(model)):
            raise NotFoundError(f"Model {model!r} version {version or 'any'} is not in the repository; see /v2/repository/index.")
        ok = repo.is_ready(model, version)
        return JSONResponse({"name": model, "ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> JSONResponse:
        return readiness(model, None)

    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def model_version_ready(model: str, version: str) -> JSONResponse:
        return readiness(model, version)

    # --- inference ----------------------------------------------------------------------------
    async def infer(model: str, version: str | None, request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type not in ("application/json", "application/octet-stream", ""):
            raise DataError(f"Content-Type {content_type} is not supported; send application/json.")
        body = await request.body()
        parsed, tensors = parse_http_request(body, request.headers.get("inference-header-content-length"))
        request_id = parsed.id or request.scope["state"]["request_id"]
        return await _respond(model, version, request, parsed, tensors, request_id, "http")

    async def _respond(
        model: str, version: str | None, request: Request, parsed: InferenceRequest,
        tensors: list[Tensor], request_id: str, protocol: str,
    ) -> Response:
        started = time.perf_counter()
        label_version = version or ""
        try:
            result = await service.infer(
                model, version, tensors, request_id=request_id,
                forced_route=request.headers.get(ROUTE_HEADER),
                parameters=_user_parameters(parsed.parameters),
            )
        except VisionlineError as exc:
            metrics.requests.labels(model, label_version, protocol, str(status_for(exc))).inc()
            raise
        post = time.perf_counter()
        wanted = [o.name for o in parsed.outputs] if parsed.outputs else result.default_outputs
        unknown = [n for n in wanted if n not in result.outputs]
        if unknown:
            raise DataError(f"Model {model} has no output {unknown[0]!r}; ask for {', '.join(result.outputs)}.")
        outputs = {n: result.outputs[n] for n in wanted}
        payload, json_size = build_http_response(
            result.model, result.version, parsed.id, outputs,
            {n: wants_binary(parsed, n) for n in wanted}, {"route": result.route},
        )
        done = time.perf_counter()
        metrics.step_latency.labels(result.model, result.version, "postprocess").observe(
            result.timings["postprocess"] + done - post
        )
        metrics.request_latency.labels(result.model, result.version, protocol).observe(done - started)
        metrics.requests.labels(result.model, result.version, protocol, "200").inc()
        if json_size is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_size)},
        )

    @app.post("/v2/models/{model}/infer", openapi_extra=_INFER_BODY)
    async def infer_latest(model: str, request: Request) -> Response:
        return await infer(model, None, request)

    @app.post("/v2/models/{model}/versions/{version}/infer", openapi_extra=_INFER_BODY)
    async def infer_version(model: str, version: str, request: Request) -> Response:
        return await infer(model, version, request)

    @app.post("/v1/models/{model}:predict")
    async def predict(model: str, request: Request, files: Annotated[list[UploadFile], File()]) -> dict:
        """Upload one or more images (multipart field `files`); get label, probabilities, decision.

        Query parameters (`?delivery=D7&supplier=S2&line=1`) go to the prediction log, except
        `anomaly_map=true`, which adds an anomaly model's map to each prediction.
        """
        import numpy as np

        started = time.perf_counter()
        query = dict(request.query_params)
        with_map = query.pop("anomaly_map", "false").lower()
        if with_map not in ("true", "false", "1", "0"):
            raise DataError(f"anomaly_map must be true or false, not {with_map!r}.")
        images = np.empty(len(files), dtype=object)
        images[:] = [await f.read() for f in files]
        tensor = Tensor("image", "BYTES", [len(files)], images)
        try:
            result = await service.infer(
                model, None, [tensor], request_id=request.scope["state"]["request_id"],
                forced_route=request.headers.get(ROUTE_HEADER),
                parameters=query,
            )
        except VisionlineError as exc:
            metrics.requests.labels(model, "", "predict", str(status_for(exc))).inc()
            raise
        post = time.perf_counter()
        body = {
            "model": result.model,
            "version": result.version,
            "route": result.route,
            "predictions": [
                {"filename": f.filename, **row}
                for f, row in zip(files, service.classify(result, with_map in ("true", "1")))
            ],
        }
        done = time.perf_counter()
        metrics.step_latency.labels(result.model, result.version, "postprocess").observe(
            result.timings["postprocess"] + done - post
        )
        metrics.request_latency.labels(result.model, result.version, "predict").observe(done - started)
        metrics.requests.labels(result.model, result.version, "predict", "200").inc()
        return body

    # --- repository ---------------------------------------------------------------------------
    @app.post("/v2/repository/index")
    async def repository_index() -> list[dict]:
        return repo.index()

    @app.post("/v2/repository/models/{model}/load")
    async def repository_load(model: str) -> JSONResponse:
        import asyncio

        try:
            state = await asyncio.get_running_loop().run_in_executor(None, repo.load, model)
        except IntegrityError as exc:
            raise ConfigError(f"Load of {model} failed and the previous version keeps serving: {exc}") from exc
        return JSONResponse({"name": model, "versions": list(state.versions), "state": state.state})

    @app.post("/v2/repository/models/{model}/unload")
    async def repository_unload(model: str) -> JSONResponse:
        repo.unload(model)
        return JSONResponse({"name": model, "state": "UNAVAILABLE"})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def infer_asgi(scope: dict, receive: Any, send: Any, model: str, version: str | None) -> None:
        try:
            response = await infer(model, version, Request(scope, receive))
        except VisionlineError as exc:
            response = _error(exc)
        except Exception:  # what FastAPI's handler would answer, with the traceback in the log
            log.exception("inference request %s failed", scope.get("state", {}).get("request_id"))
            response = _internal_error()
        await response(scope, receive, send)

    guarded = RestAuthMiddleware(_InferShortcut(app, infer_asgi), KeyGuard.for_config(config), metrics.rejected)
    return RequestContextMiddleware(guarded, config.max_body_bytes)
