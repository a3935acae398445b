"""Run directories and resumable training state: where a run lives, what `--resume` reads,
and the progress bar that reports on it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import torch

from visionline.config import Project
from visionline.errors import ConfigError, NotFoundError, TrainingError
from visionline.train._config import TrainConfig
from visionline.train._model import InspectionModel, plain, read_torch_file

if TYPE_CHECKING:
    from visionline.data import DatasetVersion

STATE_FORMAT = "visionline.train-state/1"
LAST_CHECKPOINT = "last.pt"
BEST_MODEL = "model.pt"


def default_runs_dir(project: Project) -> Path:
    """Where runs go without --out: `.visionline/runs/` beside the cache."""
    return project.cache_dir.parent / "runs"


def latest_unfinished_run(project: Project) -> Path:
    """The most recently written run directory whose training did not finish."""
    candidates = [
        p.parent
        for p in default_runs_dir(project).glob(f"*/{LAST_CHECKPOINT}")
        if not (p.parent / "result.json").exists()
    ]
    if not candidates:
        raise NotFoundError(
            f"No interrupted run under {default_runs_dir(project)} to resume; "
            "drop --resume or pass --out DIR of the run."
        )
    return max(candidates, key=lambda p: (p / LAST_CHECKPOINT).stat().st_mtime)


def prepare_out_dir(
    project: Project,
    out_dir: Path | None,
    resume: bool,
    version: DatasetVersion,
    config: TrainConfig,
) -> Path:
    """The run directory: new (timestamped) or, with `resume`, one holding last.pt."""
    if resume and out_dir is None:
        return latest_unfinished_run(project)
    if out_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        out_dir = (
            default_runs_dir(project) / f"{stamp}-{version.short_id[:8]}-{config.backbone.value}"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; pass a folder path as --out.")
    if resume and not (out_dir / LAST_CHECKPOINT).is_file():
        raise NotFoundError(
            f"No {LAST_CHECKPOINT} in {out_dir} to resume; drop --resume to start afresh."
        )
    if not resume and (out_dir / LAST_CHECKPOINT).exists():
        raise ConfigError(
            f"{out_dir} already holds a training run; pass --resume to continue it or a new --out."
        )
    return out_dir


def load_state(path: Path, version: DatasetVersion) -> dict[str, Any]:
    """The state saved by `save_state`, refused when it belongs to another dataset version."""
    state = read_torch_file(path, "start afresh without --resume.")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(
            f"{path} is not a visionline training checkpoint; start afresh without --resume."
        )
    if state["dataset_version"] != version.id:
        raise TrainingError(
            f"{path} was trained on dataset {state['dataset_version'][:12]}, not {version.short_id}; "
            "resume with the same --data."
        )
    return state


def save_state(
    path: Path,
    model: InspectionModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    version: DatasetVersion,
    epoch: int,
    history: list[dict[str, float]],
    best: dict[str, float],
    best_epoch: int,
    bad_epochs: int,
    run_id: str | None,
) -> None:
    """Everything `--resume` needs, written atomically (a crash never leaves half a file).

    Besides tensors and the optimiser's numbers only JSON types go in, so `load_state` reads the
    file with `weights_only=True`."""
    payload = {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        **plain(
            {
                "config": config.model_dump(mode="json"),
                "dataset_version": version.id,
                "history": history,
                "best": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "run_id": run_id,
            }
        ),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


class Progress:
    """A rich progress bar with live loss/metrics; silent when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
            )
            self.bar.__enter__()
        return self

    def start(self, description: str, total: int, status: str = "") -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(description, total=total, status=status)

    def update(self, advance: int = 1, **fields: Any) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=advance, **fields)

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message, highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
