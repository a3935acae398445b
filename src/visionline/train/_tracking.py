"""MLflow tracking of a training run: params, per-epoch metrics, the dataset as an input, the
environment, artifacts and the logged model. Only rank 0 of a distributed job tracks."""

from __future__ import annotations

import dataclasses
import logging
import platform
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionline.errors import ServiceUnavailableError
from visionline.registry._resolve import require_reachable

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from visionline.data import DatasetVersion
    from visionline.train._config import TrainConfig

DIGEST_CHARS = 36
"""MLflow stores a dataset digest in at most 36 characters: the dataset version id's prefix."""


def git_commit(directory: Path) -> str | None:
    """The commit checked out at `directory`, if it is inside a git repository with commits."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def artifact_root_for(tracking_uri: str) -> str | None:
    """Where a sqlite tracking store keeps artifacts: `mlartifacts/` beside the database file.

    MLflow's own default is `./mlruns` under the working directory, which scatters a project's
    models over whatever directory a command happened to run in.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri.removeprefix(prefix)).resolve().parent / "mlartifacts").as_uri()


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """The id of experiment `name`, created (with artifacts beside a sqlite store) if missing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root_for(tracking_uri))
    except MlflowException:  # another process created it a moment ago
        return client.get_experiment_by_name(name).experiment_id


class Tracker:
    """One MLflow run. A disabled tracker (DDP ranks other than 0) does nothing; without
    `log_model` the run keeps the checkpoint but gets no MLflow model (seconds per run saved)."""

    def __init__(
        self, tracking_uri: str, experiment: str, enabled: bool = True, log_model: bool = True
    ):
        if enabled:  # before any training, not after it
            require_reachable(tracking_uri)
        self.enabled = enabled
        self.log_model = log_model
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_id: str | None = None

    def start(self, run_id: str | None, run_name: str | None) -> str | None:
        """Start a new run, or reopen `run_id` when resuming."""
        if not self.enabled:
            return None
        import mlflow

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        try:
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_experiment(
                experiment_id=ensure_experiment(self.tracking_uri, self.experiment)
            )
            run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        except Exception as exc:  # sqlalchemy, HTTP and filesystem errors all end up here
            raise ServiceUnavailableError(
                f"MLflow tracking at {self.tracking_uri} is not usable ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); fix --tracking-uri."
            ) from exc
        self.run_id = run.info.run_id
        return self.run_id

    def log_setup(
        self,
        config: TrainConfig,
        version: DatasetVersion,
        datasets_dir: Path,
        extra_params: dict[str, Any],
        tags: dict[str, str],
    ) -> None:
        """Params (resolved config, flattened), the dataset version as an input, and tags."""
        if not self.enabled:
            return
        import mlflow
        import pandas as pd

        mlflow.log_params({**config.flat(), **{k: str(v) for k, v in extra_params.items()}})
        frame = pd.DataFrame([dataclasses.asdict(r) for r in version.records])
        with warnings.catch_warnings():  # schema-inference hints that mean nothing for a manifest
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame, source=str(datasets_dir), name=version.name, digest=version.id[:DIGEST_CHARS]
            )
            mlflow.log_input(dataset, context="training")
        mlflow.set_tags(tags)

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_metrics(metrics, step=epoch)

    def log_outputs(self, files: dict[str, Path], model: nn.Module, example: np.ndarray) -> None:
        """Artifacts (`{artifact dir: file}`) and the best model as an MLflow PyTorch model;
        `example` is one normalised input batch, from which MLflow traces the model and its signature."""
        if not self.enabled:
            return
        import mlflow
        import mlflow.pytorch
        import timm
        import torch

        for artifact_dir, path in files.items():
            mlflow.log_artifact(str(path), artifact_path=artifact_dir or None)
        if not self.log_model:
            return
        # MLflow's default torch.export format, not pickle: it costs seconds per run, but loading a
        # pickled model from a tracking server runs whatever code the file holds. MLflow would then
        # load the exported model back to predict the example (about 1 CPU s in a fresh process);
        # tests/train/test_loop.py loads the logged model and predicts with it instead, at another
        # batch size. The example and its serving payload are still stored with the model.
        mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"timm=={timm.__version__}",
            ],
            validate_serving_input=False,
        )

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id is not None:
            import mlflow

            mlflow.end_run(status=status)


def environment_tags(device: str, world_size: int) -> dict[str, str]:
    import timm
    import torch

    return {
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "python_version": platform.python_version(),
        "device": device,
        "world_size": str(world_size),
    }
