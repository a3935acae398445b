"""The lifecycle as a DAG: typed artifacts, steps, and the order they run in.

A step is a plain function of a `StepContext` that returns named `Artifact`s. Artifacts carry a
content id (a dataset version id, a file's sha256, a registry version), so a step's cache key
can be computed from its inputs without reading them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visionline.config import PipelineConfig, Project
from visionline.errors import ConfigError


@dataclass(frozen=True)
class Artifact:
    """One typed output of a step, identified by content."""

    kind: str
    id: str
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(data["kind"], data["id"], data.get("path"), dict(data.get("meta") or {}))

    def resolve(self, project: Project) -> Path:
        """The artifact's file or folder; relative paths are inside the project."""
        if self.path is None:
            raise ConfigError(f"The {self.kind} artifact {self.id[:12]} has no file.")
        return project.root / self.path

    def exists(self, project: Project) -> bool:
        """False when a cached output was deleted, so the step must run again."""
        if self.kind == "dataset":
            return (project.datasets_dir / f"{self.id}.parquet").is_file()
        return self.path is None or self.resolve(project).exists()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def relative(project: Project, path: Path) -> str:
    """Paths inside the project are stored relative to it, so a project folder can move."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(project.root.resolve()))
    except ValueError:
        return str(path)


@dataclass
class StepContext:
    """What a step sees: the project, its own settings, upstream outputs and a work folder."""

    project: Project
    settings: dict[str, Any]
    pipeline: PipelineConfig
    inputs: dict[str, dict[str, Artifact]]
    workdir: Path
    progress: bool = False

    def artifact(self, kind: str) -> Artifact:
        """The one upstream artifact of `kind` (the nearest producer wins)."""
        for outputs in reversed(list(self.inputs.values())):
            for artifact in outputs.values():
                if artifact.kind == kind:
                    return artifact
        raise ConfigError(f"No upstream step produced a {kind} artifact; enable the step that does.")

    def optional(self, kind: str) -> Artifact | None:
        try:
            return self.artifact(kind)
        except ConfigError:
            return None


StepFunction = Callable[[StepContext], dict[str, Artifact]]


@dataclass(frozen=True)
class Step:
    """A node of the DAG. `cacheable=False` marks steps that read or change external state."""

    name: str
    func: StepFunction
    needs: tuple[str, ...]
    description: str
    cacheable: bool = True
    enabled: Callable[[PipelineConfig], bool] = lambda _config: True
    resources: Callable[[PipelineConfig], dict[str, float]] = lambda _config: {"cpus": 1}

    def code_version(self) -> str:
        """Changes when the step's own code, any file of visionline, visionline's
        version or the version of a library that shapes results (torch, timm, onnx...) changes."""
        from visionline import __version__
        from visionline.pipeline._code import code_digest

        source = hashlib.sha256(inspect.getsource(self.func).encode()).hexdigest()[:16]
        return f"{__version__}:{source}:{code_digest()[:16]}"


def cache_key(step: Step, settings: dict[str, Any], inputs: dict[str, dict[str, Artifact]]) -> str:
    """sha256 of (step code version, resolved settings, input artifact ids)."""
    payload = {
        "step": step.name,
        "code": step.code_version(),
        "settings": settings,
        "inputs": {
            name: {key: f"{a.kind}:{a.id}" for key, a in sorted(outputs.items())}
            for name, outputs in sorted(inputs.items())
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class Graph:
    """The enabled steps of a pipeline in dependency order."""

    def __init__(self, steps: list[Step], config: PipelineConfig) -> None:
        by_name = {s.name: s for s in steps}
        self.all = by_name
        self.steps = [s for s in steps if s.enabled(config)]
        enabled = {s.name for s in self.steps}
        self.needs = {
            s.name: tuple(
                dict.fromkeys(
                    up for n in s.needs if (up := self._enabled_upstream(n, by_name, enabled))
                )
            )
            for s in self.steps
        }

    @staticmethod
    def _enabled_upstream(name: str, by_name: dict[str, Step], enabled: set[str]) -> str | None:
        """A disabled dependency is bridged to its own nearest enabled upstream step."""
        while name not in enabled:
            upstream = by_name[name].needs
            if not upstream:
                return None
            name = upstream[0]
        return name

    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def get(self, name: str) -> Step:
        if name not in self.all:
            raise ConfigError(
                f"There is no pipeline step {name!r}; steps are {', '.join(self.all)}."
            )
        return self.all[name]

    def downstream(self, name: str) -> set[str]:
        """`name` and every step that depends on it, directly or not."""
        found = {name}
        for step in self.steps:
            if any(n in found for n in self.needs[step.name]):
                found.add(step.name)
        return found
