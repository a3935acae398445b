"""`visionline serve REPO`: the KServe v2 inference server over a repository of edge bundles."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from visionline.cli._common import ProjectOption, load_project
from visionline.cli._trust import PubkeyOption, RequireSignatureOption, TrustStoreOption
from visionline.errors import ConfigError

if TYPE_CHECKING:
    from visionline.serve import ServerConfig


class LogFormat(str, Enum):
    JSON = "json"
    TEXT = "text"


def _setup_logging(fmt: LogFormat) -> None:
    import logging

    from visionline.serve._middleware import JsonFormatter, TextFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else TextFormatter())
    root = logging.getLogger("visionline")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def serve(
    ctx: typer.Context,
    repository: Annotated[Path, typer.Argument(help="Model repository: REPO/<model>/<version>/bundle.json.", show_default=False)],
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 for all.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="REST port (KServe v2 + /metrics).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (inference.GRPCInferenceService).")] = 8001,
    no_grpc: Annotated[bool, typer.Option("--no-grpc", help="Serve REST only.")] = False,
    max_batch_size: Annotated[int, typer.Option(help="Most rows merged into one model call.")] = 8,
    max_queue_delay_us: Annotated[int, typer.Option(help="Longest wait for more rows while another request is on its way.")] = 2000,
    max_queue_size: Annotated[int, typer.Option(help="Queued rows per model version before 503.")] = 256,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0 = its default).")] = 0,
    preprocess_threads: Annotated[int, typer.Option(help="Requests decoded at once, REST and gRPC together.")] = 2,
    grpc_threads: Annotated[int, typer.Option(help="gRPC requests handled at once (each decodes its own).")] = 16,
    version_policy: Annotated[str, typer.Option(help="latest:N, all or specific:1,3.")] = "latest:1",
    pubkey: PubkeyOption = None,
    trust_store: TrustStoreOption = None,
    require_signature: RequireSignatureOption = False,
    inference_key: Annotated[
        str | None,
        typer.Option(envvar="VISIONLINE_API_KEY", show_default=False, help="Key for inference and metadata; prefer the env var or a file (a command line is visible to other users)."),
    ] = None,
    inference_key_file: Annotated[
        Path | None, typer.Option(envvar="VISIONLINE_API_KEY_FILE", help="File holding the inference key (a mounted secret).")
    ] = None,
    management_key: Annotated[
        str | None,
        typer.Option(envvar="VISIONLINE_ADMIN_KEY", show_default=False, help="Key for the repository API (load, unload: hot swap); also valid for inference."),
    ] = None,
    management_key_file: Annotated[
        Path | None, typer.Option(envvar="VISIONLINE_ADMIN_KEY_FILE", help="File holding the management key (a mounted secret).")
    ] = None,
    public_inference: Annotated[
        bool, typer.Option("--public-inference", help="Off 127.0.0.1, serve inference and metadata without a key (the repository API still needs one).")
    ] = False,
    tls_cert: Annotated[Path | None, typer.Option(envvar="VISIONLINE_TLS_CERT", help="PEM certificate (chain): REST and gRPC speak TLS only.")] = None,
    tls_key: Annotated[Path | None, typer.Option(envvar="VISIONLINE_TLS_KEY", help="PEM private key of --tls-cert (unencrypted).")] = None,
    canary: Annotated[list[str] | None, typer.Option(help="MODEL:VERSION:PERCENT routed to a challenger (repeatable).")] = None,
    shadow: Annotated[list[str] | None, typer.Option(help="MODEL:VERSION[:PERCENT] mirrored to a challenger (repeatable).")] = None,
    poll_s: Annotated[float | None, typer.Option(help="Poll the repository every N seconds and hot-swap changes.")] = None,
    request_timeout_s: Annotated[float, typer.Option(help="Per-request timeout (504 after).")] = 30.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (413 above).")] = 32.0,
    log_format: Annotated[LogFormat, typer.Option(help="Log lines as JSON or text.")] = LogFormat.JSON,
    log_db: Annotated[
        str | None,
        typer.Option(help="Prediction log URL (sqlite:///… or postgresql://…); default: the project's monitor_db."),
    ] = None,
    sample_rate: Annotated[
        float, typer.Option(help="Share of images copied to the blob store (flagged and borderline ones always).")
    ] = 0.01,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log predictions.")] = False,
    project: ProjectOption = None,
) -> None:
    """Serve every bundle in REPOSITORY over REST and gRPC (KServe v2 / Open Inference Protocol).

    Off 127.0.0.1 it needs a management key and an inference key (or --public-inference).
    """
    from visionline.serve import InferenceServer
    from visionline.serve._security import is_loopback
    from visionline_edge import resolve_trust

    if not repository.is_dir():
        raise ConfigError(
            f"Model repository {repository} does not exist; pass a REPO/<model>/<version>/ folder."
        )
    resolve_trust(pubkey, trust_store, require_signature)  # a bad key or empty store fails at start
    config = server_config(ctx.params)
    _setup_logging(log_format)
    logger = None if no_log else _prediction_logger(project, log_db, sample_rate)
    server = InferenceServer(config, hook=logger)
    scheme = "https" if config.tls_cert else "http"
    typer.echo(
        f"visionline serve: {repository} on {scheme}://{host}:{http_port}"
        + ("" if no_grpc else f" and grpc{'s' if config.tls_cert else ''} {host}:{grpc_port}")
        + " (Ctrl+C drains in-flight requests and stops)",
        err=True,
    )
    if config.tls_cert is None and not is_loopback(host):
        typer.echo(
            "visionline serve: keys cross the network in clear text; pass --tls-cert/--tls-key or "
            "put a TLS-terminating proxy in front.",
            err=True,
        )
    try:
        server.run()
    finally:
        if logger is not None:
            logger.close()


def server_config(options: Mapping[str, Any]) -> ServerConfig:
    """The `ServerConfig` that `visionline serve` runs with, from its parsed options (by name);
    the deployment tests feed it the command lines of the Dockerfile and manifests."""
    from pydantic import ValidationError

    from visionline.serve import Route, ServerConfig

    try:
        return ServerConfig(
            repository=options["repository"],
            host=options["host"],
            http_port=options["http_port"],
            grpc_port=None if options["no_grpc"] else options["grpc_port"],
            max_batch_size=options["max_batch_size"],
            max_queue_delay_us=options["max_queue_delay_us"],
            max_queue_size=options["max_queue_size"],
            intra_op_threads=options["threads"],
            preprocess_threads=options["preprocess_threads"],
            grpc_threads=options["grpc_threads"],
            version_policy=options["version_policy"],
            pubkey=options["pubkey"],
            trust_store=options["trust_store"],
            require_signature=options["require_signature"],
            inference_key=_key(options["inference_key"], options["inference_key_file"], "inference"),
            management_key=_key(options["management_key"], options["management_key_file"], "management"),
            public_inference=options["public_inference"],
            tls_cert=options["tls_cert"],
            tls_key=options["tls_key"],
            canary=[Route.parse(c, with_percent=True) for c in options["canary"] or []],
            shadow=[Route.parse(s, with_percent=False) for s in options["shadow"] or []],
            poll_s=options["poll_s"],
            request_timeout_s=options["request_timeout_s"],
            max_body_bytes=int(options["max_body_mb"] * 1024 * 1024),
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        option = _OPTION_OF.get(field, field.replace("_", "-"))
        unit = " bytes (--max-body-mb × 1,048,576)" if field == "max_body_bytes" else ""
        raise ConfigError(f"--{option}: {error['msg']}{unit}; fix that option.") from exc


_OPTION_OF = {"max_body_bytes": "max-body-mb", "intra_op_threads": "threads"}
"""ServerConfig fields whose command-line option has another name."""


def _key(value: str | None, file: Path | None, what: str) -> str | None:
    """A key given directly (option or env var) or as a file, not both."""
    from visionline.serve._security import read_key_file

    if value is not None and file is not None:
        raise ConfigError(
            f"The {what} key is given twice, as a value and as --{what}-key-file; keep one."
        )
    return read_key_file(file, what) if file is not None else value


def _prediction_logger(project_dir: Path | None, log_db: str | None, sample_rate: float) -> Any:
    """The monitoring hook: into the project's prediction log, or `--log-db`; none outside a
    project without `--log-db` (the server then still serves, and says so)."""
    from visionline.errors import ProjectNotFoundError

    try:
        project = load_project(project_dir)
    except ProjectNotFoundError:
        if log_db is None:
            typer.echo(
                "visionline serve: no project here, predictions are not logged; pass --log-db URL "
                "or run inside a visionline project.",
                err=True,
            )
            return None
        from visionline.monitor import PredictionLogger

        return PredictionLogger(log_db, sample_rate=sample_rate)
    from visionline.data import BlobStore
    from visionline.monitor import PredictionLogger

    blobs = BlobStore(project.blob_store_uri)
    return PredictionLogger(log_db or project.monitor_db_url, blobs, sample_rate=sample_rate)
