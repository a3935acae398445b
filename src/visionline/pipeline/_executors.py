"""Where a step runs: in this process (`local`) or as a Ray task with its resource needs (`ray`).

Both run `execute_step`, which rebuilds the step's context from plain data, so a Ray worker on
another node needs only visionline installed and the project's storage reachable. Domain
errors come back as data and are raised again here, keeping their one-sentence message.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

from visionline import errors
from visionline.errors import ConfigError, VisionlineError


def execute_step(
    step_name: str,
    project_root: str,
    settings: dict[str, Any],
    inputs: dict[str, dict[str, Any]],
    workdir: str,
    progress: bool,
) -> dict[str, Any]:
    """Run one step; returns {"outputs": ...} or {"error": (class name, message)}."""
    from visionline.config import Project
    from visionline.pipeline._graph import StepContext
    from visionline.pipeline._lifecycle import STEPS
    from visionline.pipeline._records import outputs_from, outputs_to

    project = Project.load(Path(project_root))
    step = next(s for s in STEPS if s.name == step_name)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    ctx = StepContext(
        project=project,
        settings=settings,
        pipeline=project.config.pipeline,
        inputs={name: outputs_from(out) for name, out in inputs.items()},
        workdir=Path(workdir),
        progress=progress,
    )
    try:
        return {"outputs": outputs_to(step.func(ctx))}
    except VisionlineError as exc:
        return {"error": [type(exc).__name__, str(exc)]}


def raise_step_error(error: list[str]) -> None:
    """Re-raise a step's domain error with its own class (and so its exit code)."""
    name, message = error
    cls = getattr(errors, name, VisionlineError)
    raise cls(message)


class LocalExecutor:
    """Steps run one after another in this process: simplest to debug, no extra dependency."""

    name = "local"
    parallel = False

    def submit(self, step_name: str, resources: dict[str, float], **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(execute_step(step_name, **kwargs))
        return future

    def close(self) -> None:
        """Nothing to release."""


class RayExecutor:
    """Each step is a Ray task asking for its CPUs/GPUs; independent steps run concurrently."""

    name = "ray"
    parallel = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "The ray executor needs Ray; install it with pip install 'visionline[ray]'."
            ) from exc
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(
                    address=address,
                    num_cpus=None if address else num_cpus,
                    include_dashboard=False,
                    log_to_driver=True,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError) as exc:
                raise errors.ServiceUnavailableError(
                    f"Cannot reach the Ray cluster at {address} ({exc}); start it or fix "
                    "pipeline.ray_address."
                ) from exc
            self._started = True
        self._task = ray.remote(execute_step)

    def submit(self, step_name: str, resources: dict[str, float], **kwargs: Any) -> Future:
        options = {"num_cpus": resources.get("cpus", 1), "num_gpus": resources.get("gpus", 0)}
        return self._task.options(**options).remote(step_name, **kwargs).future()

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_executor(name: str, address: str | None = None) -> LocalExecutor | RayExecutor:
    if name == "ray":
        return RayExecutor(address)
    if name == "local":
        return LocalExecutor()
    raise ConfigError(f"Unknown executor {name!r}; use local or ray.")
