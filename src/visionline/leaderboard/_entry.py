"""What an entry is and what it hands back, the context entries share, and the two measurements
every entry gets the same way: MLflow tracking and batch-1 latency on a fixed thread count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionline.leaderboard._budget import Budget
from visionline.leaderboard._config import LeaderboardConfig
from visionline.leaderboard._data import LeaderboardData

if TYPE_CHECKING:
    from PIL import Image

    from visionline.config import Project
    from visionline.evaluate import GateReport, OperatingPoint

KIND_TAG = "visionline.model_kind"
LEADERBOARD_TAG = "visionline.leaderboard"
LATENCY_IMAGES = 5

FINISHED = "finished"
NOT_FINISHED = "not finished"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass
class Outcome:
    """A fitted entry's defect scores (higher = more defective) on the threshold and test splits,
    with class probabilities where the entry has them, and what it costs to run."""

    calib_scores: np.ndarray
    test_scores: np.ndarray
    size_bytes: int
    latency_ms: float
    run_id: str | None = None
    calib_probabilities: np.ndarray | None = None
    test_probabilities: np.ndarray | None = None
    exportable: bool = False
    """Whether `visionline export`/`serve` take this model (a torch classifier model.pt)."""
    model_path: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Entry:
    """One row of the leaderboard."""

    name: str
    kind: str
    status: str = NOT_FINISHED
    reason: str = ""
    seconds: float = 0.0
    outcome: Outcome | None = None
    metrics: dict[str, Any] | None = None
    operating_point: OperatingPoint | None = None
    gates: GateReport | None = None
    calib_recall: float = float("nan")
    calib_auroc: float = float("nan")

    @property
    def finished(self) -> bool:
        return self.status == FINISHED and self.metrics is not None


@dataclass
class Context:
    """What every entry runner receives."""

    project: Project
    data: LeaderboardData
    config: LeaderboardConfig
    budget: Budget
    out_dir: Path
    leaderboard_id: str
    tracking_uri: str
    progress: bool = False
    entries: list[Entry] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    stack_planned: bool = False
    reserve_s: float = 0.0
    """Seconds kept back for the entries that must run last (the stack)."""

    def check(self) -> None:
        """Stop the running entry (`OutOfBudget`) when its share of the budget is spent."""
        self.budget.check(self.reserve_s)

    def epoch_callback(self):
        return self.budget.epoch_callback(self.reserve_s)

    def run_name(self, name: str) -> str:
        return f"leaderboard-{name.replace('/', '-')}-{self.data.version.short_id}"

    def tags(self, kind: str) -> dict[str, str]:
        return {
            "visionline.dataset_version": self.data.version.id,
            KIND_TAG: kind,
            LEADERBOARD_TAG: self.leaderboard_id,
            "visionline.threshold_split": self.data.threshold_split,
        }


class _Params:
    """Adapter so `Tracker.log_setup` logs plain params (it expects a config with `flat()`)."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def flat(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.values.items()}


def start_tracking(ctx: Context, name: str, kind: str, params: dict[str, Any]):
    """Start an MLflow run for an entry the leaderboard fits itself, tagged and with the dataset
    version as its input, exactly like a `visionline train` run."""
    from visionline.train._tracking import Tracker, environment_tags, git_commit

    tracker = Tracker(ctx.tracking_uri, ctx.project.config.name)
    tracker.start(None, ctx.run_name(name))
    tags = {**environment_tags("cpu", 1), **ctx.tags(kind)}
    commit = git_commit(ctx.project.root)
    if commit:
        tags["git_commit"] = commit
    extra = {
        "dataset_version": ctx.data.version.id,
        "dataset_name": ctx.data.version.name,
        "method": f"leaderboard-{kind}",
        "n_train": len(ctx.data.train.records),
        "threshold_split": ctx.data.threshold_split,
        **ctx.config.flat(),
    }
    tracker.log_setup(_Params(params), ctx.data.version, ctx.project.datasets_dir, extra, tags)
    return tracker


def log_sklearn_model(model: Any, example: np.ndarray) -> None:
    """The fitted scikit-learn estimator as the run's MLflow model `model` (registrable), in
    MLflow's safe skops format, trusting only scikit-learn's own classes."""
    import mlflow.sklearn
    import skops.io

    own = [
        name
        for name in skops.io.get_untrusted_types(data=skops.io.dumps(model))
        if name.startswith("sklearn.")
    ]
    import sklearn

    mlflow.sklearn.log_model(
        model,
        name="model",
        input_example=example[:2],
        skops_trusted_types=own or None,
        # explicit, so MLflow does not load the model in a subprocess to infer them
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
    )


def measure_latency_ms(
    predict_one: Callable[[Image.Image], Any], images: Sequence[Image.Image], threads: int
) -> float:
    """Median wall-clock milliseconds of `predict_one` on single images (batch 1), with torch
    and the BLAS/OpenMP pools limited to `threads`, after one warm-up call."""
    import torch
    from threadpoolctl import threadpool_limits

    chosen = list(images[:LATENCY_IMAGES])
    if not chosen:
        return float("nan")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads), torch.inference_mode():
            predict_one(chosen[0])
            timings = []
            for image in chosen:
                started = time.perf_counter()
                predict_one(image)
                timings.append((time.perf_counter() - started) * 1000.0)
    finally:
        torch.set_num_threads(previous)
    return float(statistics.median(timings))


def full_probabilities(
    classes: np.ndarray, probabilities: np.ndarray, num_classes: int
) -> np.ndarray:
    """Probabilities over all `num_classes` from an estimator that saw only `classes`."""
    full = np.zeros((probabilities.shape[0], num_classes), dtype=np.float64)
    full[:, np.asarray(classes, dtype=int)] = probabilities
    return full


def file_size(path: Path) -> int:
    return int(Path(path).stat().st_size)
