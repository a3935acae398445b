"""Pipeline state on disk: the step cache and one JSON record per pipeline run.

Both live under the project's cache folder and are written atomically (temp file + rename), so
a run killed at any moment leaves either the old or the new record, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionline.config import Project
from visionline.pipeline._graph import Artifact

DONE = ("done", "cached", "resumed", "given")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, default=str)
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def outputs_from(data: dict[str, Any]) -> dict[str, Artifact]:
    return {name: Artifact.from_dict(a) for name, a in (data or {}).items()}


def outputs_to(outputs: dict[str, Artifact]) -> dict[str, Any]:
    return {name: a.to_dict() for name, a in outputs.items()}


class StepCache:
    """Successful step outputs by cache key; an entry whose files are gone does not count."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = project.cache_dir / "pipeline"

    def workdir(self, step: str, key: str) -> Path:
        return self.root / "work" / step / key[:16]

    def _entry(self, step: str, key: str) -> Path:
        return self.root / "steps" / step / f"{key}.json"

    def get(self, step: str, key: str) -> dict[str, Artifact] | None:
        data = _read_json(self._entry(step, key))
        if not data:
            return None
        outputs = outputs_from(data["outputs"])
        if not all(a.exists(self.project) for a in outputs.values()):
            return None
        return outputs

    def put(self, step: str, key: str, outputs: dict[str, Artifact], run_id: str) -> None:
        _write_json(
            self._entry(step, key),
            {"outputs": outputs_to(outputs), "run_id": run_id, "at": time.time()},
        )


@dataclass
class StepRecord:
    status: str = "pending"
    key: str | None = None
    seconds: float = 0.0
    outputs: dict[str, Artifact] = field(default_factory=dict)
    error: str | None = None
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "key": self.key,
            "seconds": round(self.seconds, 3),
            "outputs": outputs_to(self.outputs),
            "error": self.error,
            "mlflow_run_id": self.mlflow_run_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        return cls(
            data.get("status", "pending"),
            data.get("key"),
            float(data.get("seconds") or 0.0),
            outputs_from(data.get("outputs") or {}),
            data.get("error"),
            data.get("mlflow_run_id"),
        )


@dataclass
class PipelineRun:
    """One `pipeline run`: what each step did, saved after every step."""

    id: str
    executor: str
    started_at: float
    steps: dict[str, StepRecord]
    status: str = "running"
    finished_at: float | None = None
    error: str | None = None
    mlflow_run_id: str | None = None
    forced: list[str] = field(default_factory=list)

    @staticmethod
    def new_id() -> str:
        return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "executor": self.executor,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "error": self.error,
            "mlflow_run_id": self.mlflow_run_id,
            "forced": self.forced,
            "steps": {name: record.to_dict() for name, record in self.steps.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineRun:
        return cls(
            id=data["id"],
            executor=data.get("executor", "local"),
            started_at=data["started_at"],
            steps={k: StepRecord.from_dict(v) for k, v in data.get("steps", {}).items()},
            status=data.get("status", "unknown"),
            finished_at=data.get("finished_at"),
            error=data.get("error"),
            mlflow_run_id=data.get("mlflow_run_id"),
            forced=list(data.get("forced") or []),
        )

    def outputs(self, step: str) -> dict[str, Artifact]:
        record = self.steps.get(step)
        return record.outputs if record and record.status in DONE else {}

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.time()) - self.started_at


class RunStore:
    """Run records, newest last."""

    def __init__(self, project: Project) -> None:
        self.root = project.cache_dir / "pipeline" / "runs"

    def save(self, run: PipelineRun) -> None:
        _write_json(self.root / f"{run.id}.json", run.to_dict())

    def list(self, limit: int | None = None) -> list[PipelineRun]:
        """Oldest first by start time: ids name the second, and a fully cached run can start
        within the same second as the one before it."""
        runs = []
        for path in self.root.glob("*.json"):
            data = _read_json(path)
            if data and "id" in data:
                runs.append(PipelineRun.from_dict(data))
        runs.sort(key=lambda run: (run.started_at, run.id))
        return runs[-limit:] if limit else runs

    def last(self) -> PipelineRun | None:
        runs = self.list()
        return runs[-1] if runs else None
