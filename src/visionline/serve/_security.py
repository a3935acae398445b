"""Who may call what: an inference key and a management key, checked in constant time over REST
(pure ASGI middleware) and gRPC (an interceptor), optional TLS, and the start-up rule that a
server reachable from the network is never open by accident.

Health probes and /metrics stay open (kubelets, load balancers and Prometheus call them without
credentials); the repository API (load, unload, index: hot swap) needs the management key; every
other endpoint, including ones this module does not know, needs at least the inference key.
The management key is accepted wherever the inference key is.
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionline.errors import ConfigError
from visionline.serve._middleware import ASGIApp, Receive, Scope, Send, _send_json

if TYPE_CHECKING:
    from visionline.serve._config import ServerConfig

__all__ = [
    "MIN_KEY_LENGTH",
    "Access",
    "KeyGuard",
    "RestAuthMiddleware",
    "check_exposure",
    "check_key",
    "check_tls",
    "grpc_access",
    "grpc_auth_interceptor",
    "is_loopback",
    "presented_key",
    "read_key_file",
    "rest_access",
]

MIN_KEY_LENGTH = 16
_REASONS = {401: "unauthorized", 403: "forbidden"}
"""The `reason` label of `visionline_rejected_requests` for each refusal status."""
_NEW_KEY_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class Access(str, Enum):
    """What an endpoint needs."""

    OPEN = "open"
    INFERENCE = "inference"
    MANAGEMENT = "management"


_REST_OPEN = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
_REST_INFERENCE = frozenset({"/v2", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
_REST_INFERENCE_PREFIXES = ("/v2/models/", "/v1/models/")
_GRPC_OPEN = frozenset({"ServerLive", "ServerReady"})
_GRPC_INFERENCE = frozenset({
    "ServerMetadata", "ModelMetadata", "ModelReady", "ModelInfer", "ModelStreamInfer",
    "ModelConfig", "ModelStatistics",
})


def rest_access(path: str) -> Access:
    """The access a REST path needs; paths not listed need the management key."""
    if path in _REST_OPEN:
        return Access.OPEN
    if path in _REST_INFERENCE or path.startswith(_REST_INFERENCE_PREFIXES):
        return Access.INFERENCE
    return Access.MANAGEMENT


def grpc_access(method: str) -> Access:
    """The access a gRPC method (`/inference.GRPCInferenceService/ModelInfer`) needs."""
    name = method.rpartition("/")[2]
    if name in _GRPC_OPEN:
        return Access.OPEN
    if name in _GRPC_INFERENCE:
        return Access.INFERENCE
    return Access.MANAGEMENT


def check_key(key: str, what: str) -> None:
    """Refuse keys that are short enough to guess or that a header cannot carry unchanged."""
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"The {what} key has {len(key)} characters; use at least {MIN_KEY_LENGTH} random ones, "
            f"e.g. from {_NEW_KEY_HINT}."
        )
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        raise ConfigError(
            f"The {what} key must be printable ASCII without spaces; make one with {_NEW_KEY_HINT}."
        )


def read_key_file(path: Path, what: str) -> str:
    """The key in `path` (a mounted secret), without the trailing newline editors add."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Cannot read the {what} key file {path} ({exc.__class__.__name__}); "
            "pass a readable file that holds only the key."
        ) from exc
    if not key:
        raise ConfigError(f"The {what} key file {path} is empty; write the key into it.")
    return key


def is_loopback(host: str) -> bool:
    """True only for addresses no other machine can reach; any other name counts as network."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, *, inference_key: bool, management_key: bool, public_inference: bool) -> None:
    """A server that other machines can reach needs a management key, and an inference key
    unless public inference was asked for by name."""
    if is_loopback(host):
        return
    if not management_key:
        raise ConfigError(
            f"Listening on {host} needs a management key; set VISIONLINE_ADMIN_KEY or pass "
            "--management-key-file FILE (or listen on 127.0.0.1)."
        )
    if not inference_key and not public_inference:
        raise ConfigError(
            f"Listening on {host} needs an inference key; set VISIONLINE_API_KEY or pass "
            "--inference-key-file FILE, or pass --public-inference to serve predictions to anyone."
        )


def check_tls(cert: Path | None, key: Path | None) -> None:
    """Both or neither, and the pair must load as a server certificate with its private key."""
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together; pass both PEM files or neither.")
    if cert is None or key is None:
        return
    for path, what in ((cert, "certificate"), (key, "private key")):
        if not path.is_file():
            raise ConfigError(f"No TLS {what} at {path}; pass a PEM file.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"TLS certificate {cert} and key {key} do not load as a pair ({exc.__class__.__name__}); "
            "pass a PEM certificate and its unencrypted private key."
        ) from exc


class KeyGuard:
    """Decides one call from the key it presented; `None` means go ahead."""

    def __init__(self, inference_key: str | None, management_key: str | None) -> None:
        self._inference = inference_key.encode() if inference_key else None
        self._management = management_key.encode() if management_key else None

    @classmethod
    def for_config(cls, config: ServerConfig) -> KeyGuard:
        keys = (config.inference_key, config.management_key)
        return cls(*(key.get_secret_value() if key is not None else None for key in keys))

    def refusal(self, access: Access, given: bytes) -> tuple[int, str] | None:
        """(HTTP status, one sentence) when the call may not go ahead."""
        if access is Access.OPEN or (self._inference is None and self._management is None):
            return None
        # Both comparisons always run, so the time taken says nothing about either key.
        is_management = self._management is not None and hmac.compare_digest(given, self._management)
        is_inference = self._inference is not None and hmac.compare_digest(given, self._inference)
        if access is Access.INFERENCE:
            if self._inference is None or is_inference or is_management:
                return None
            return 401, "Missing or wrong key; send 'Authorization: Bearer KEY' with the inference key."
        if is_management:
            return None
        if self._management is None:
            return 403, (
                "The repository API is closed: this server has no management key; restart it with "
                "--management-key-file FILE to use it."
            )
        if is_inference:
            return 403, (
                "This endpoint needs the management key, not the inference key; send "
                "'Authorization: Bearer MANAGEMENT_KEY'."
            )
        return 401, "Missing or wrong management key; send 'Authorization: Bearer MANAGEMENT_KEY'."


def presented_key(authorization: str | bytes | None, api_key: str | bytes | None) -> bytes:
    """The key a client sent: `Authorization: Bearer KEY`, else `X-API-Key: KEY`."""
    header = authorization.encode("latin-1") if isinstance(authorization, str) else authorization or b""
    if header[:7].lower() == b"bearer ":
        return header[7:].strip()
    return api_key.encode("latin-1") if isinstance(api_key, str) else api_key or b""


class RestAuthMiddleware:
    """Pure ASGI: refuses a request with 401/403 before routing when its key does not fit."""

    def __init__(self, app: ASGIApp, guard: KeyGuard, rejected: Any) -> None:
        """`rejected` is the refusal counter (`ServerMetrics.rejected`, labelled by reason)."""
        self.app = app
        self.guard = guard
        self.rejected = rejected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = presented_key(headers.get(b"authorization"), headers.get(b"x-api-key"))
        refusal = self.guard.refusal(rest_access(scope["path"]), given)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal
        self.rejected.labels(_REASONS[status]).inc()
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await _send_json(send, status, {"error": message}, extra)


def grpc_auth_interceptor(guard: KeyGuard, rejected: Any) -> Any:
    """A `grpc.ServerInterceptor` with the same rules, reading the call's metadata; `rejected`
    is the refusal counter (labelled by reason)."""
    import grpc

    codes = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}

    class _Auth(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = continuation(details)
            if handler is None:
                return None
            metadata = dict(details.invocation_metadata or ())
            given = presented_key(metadata.get("authorization"), metadata.get("x-api-key"))
            refusal = guard.refusal(grpc_access(details.method), given)
            if refusal is None:
                return handler
            status, message = refusal
            rejected.labels(_REASONS[status]).inc()

            def refuse(request: Any, context: Any) -> Any:
                context.abort(codes[status], message)

            kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k))
            factory = getattr(grpc, f"{kind}_rpc_method_handler")
            return factory(
                refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

    return _Auth()
