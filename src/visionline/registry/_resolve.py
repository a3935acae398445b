"""Model references → a local model file: a path, `runs:/<id>`, `models:/<name>@alias|/<version>`."""

from __future__ import annotations

import atexit
import functools
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from urllib.request import url2pathname

from visionline.errors import ConfigError, NotFoundError, ServiceUnavailableError

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHECKPOINT_ARTIFACT = "checkpoint/model.pt"
"""Where `visionline.train.fit` logs the `save_model` file on its MLflow run."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: its local file and, when it came from MLflow, where from."""

    uri: str
    path: Path
    run_id: str | None = None
    name: str | None = None
    version: str | None = None


def require_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail within seconds when an http(s) tracking server does not answer: MLflow's client
    retries a refused connection with back-off for minutes before it gives up."""
    from urllib.request import getproxies, proxy_bypass

    url = urlsplit(tracking_uri)
    if url.scheme not in ("http", "https"):
        return
    if url.scheme in getproxies() and not proxy_bypass(url.hostname or ""):
        return  # reached through a proxy: a direct connection proves nothing either way
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        raise ServiceUnavailableError(
            f"MLflow tracking at {tracking_uri} does not answer ({exc.strerror or exc}); start "
            "the server or fix the tracking URI (--tracking-uri or storage.tracking_uri)."
        ) from exc


def client(tracking_uri: str) -> MlflowClient:
    """An MLflow client whose tracking and registry stores are `tracking_uri`."""
    from mlflow import MlflowClient

    require_reachable(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _not_found(exc: Exception) -> bool:
    """Whether an MlflowException means 'no such run, model, version or alias'."""
    code = str(getattr(exc, "error_code", ""))
    text = str(exc).lower()
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or any(
        phrase in text for phrase in ("not found", "does not exist", "unable to find")
    )


def model_version(
    tracking_uri: str, name: str, alias: str | None = None, version: str | None = None
):
    """The registry's ModelVersion for `name@alias` or `name/version`, or a one-line NotFoundError."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    try:
        if alias is not None:
            return mlflow_client.get_model_version_by_alias(name, alias)
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException as exc:
        what = f"{name}@{alias}" if alias is not None else f"{name}/{version}"
        if _not_found(exc):
            raise NotFoundError(
                f"No registered model version {what}; see 'visionline models list' for what exists."
            ) from exc
        raise ServiceUnavailableError(
            f"The model registry at {tracking_uri} failed ({exc.message}); check the tracking URI."
        ) from exc


def download_checkpoint(
    tracking_uri: str, run_id: str, artifact: str = CHECKPOINT_ARTIFACT
) -> Path:
    """A run's model file: read in place from a local artifact store (a sqlite project's
    `mlartifacts/`), else downloaded once per process; NotFoundError names the run if it is
    missing. MLflow's own download copies the file into a new temporary folder on every call and
    leaves it there (one per evaluation, export or warm start)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client(tracking_uri).get_run(run_id)
        local = _local_artifact(run.info.artifact_uri, artifact)
        path = local if local is not None else _download(tracking_uri, run_id, artifact)
        if not path.is_file():
            raise FileNotFoundError(path)
        return path
    except MlflowException as exc:
        raise NotFoundError(
            f"Run {run_id} or its artifact {artifact} does not exist in {tracking_uri}; "
            "pass the id of a run logged by 'visionline train'."
        ) from exc
    except OSError as exc:
        raise NotFoundError(
            f"Run {run_id} has no artifact {artifact}; pass the id of a run logged by 'visionline train'."
        ) from exc


def _local_artifact(artifact_uri: str | None, artifact: str) -> Path | None:
    """`artifact` of a run whose artifacts are local files, or None for a remote store."""
    parts = urlsplit(artifact_uri or "")
    if parts.scheme not in ("", "file") or parts.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parts.path)) / artifact


@functools.cache
def _download(tracking_uri: str, run_id: str, artifact: str) -> Path:
    """`artifact` from a remote store, into a folder removed when the process exits."""
    import mlflow

    folder = tempfile.mkdtemp(prefix="visionline-download-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, tracking_uri=tracking_uri, dst_path=folder
        )
    )


def resolve_model(uri: str, tracking_uri: str) -> ModelRef:
    """Turn a model reference into a local `save_model` file plus its MLflow lineage."""
    if uri.startswith("runs:/"):
        parts = uri.removeprefix("runs:/").strip("/").split("/", 1)
        run_id = parts[0]
        if not run_id:
            raise ConfigError(f"Model URI {uri!r} has no run id; write runs:/<run_id>.")
        artifact = (
            parts[1] if len(parts) > 1 and parts[1] not in ("", "model") else CHECKPOINT_ARTIFACT
        )
        return ModelRef(uri, download_checkpoint(tracking_uri, run_id, artifact), run_id=run_id)
    if uri.startswith("models:/"):
        body = uri.removeprefix("models:/").strip("/")
        if "@" in body:
            name, alias = body.split("@", 1)
            found = model_version(tracking_uri, name, alias=alias)
        elif "/" in body:
            name, version = body.rsplit("/", 1)
            found = model_version(tracking_uri, name, version=version)
        else:
            raise ConfigError(
                f"Model URI {uri!r} needs an alias or version; write models:/{body}@champion "
                f"or models:/{body}/1."
            )
        if not found.run_id:
            raise NotFoundError(f"Model version {uri} has no source run; register it from a run.")
        path = download_checkpoint(tracking_uri, found.run_id)
        return ModelRef(uri, path, run_id=found.run_id, name=found.name, version=str(found.version))
    path = Path(uri).expanduser()
    if not path.is_file():
        raise NotFoundError(
            f"No model at {uri!r}; pass a model.pt path, runs:/<run_id> or models:/<name>@<alias>."
        )
    return ModelRef(uri, path)
