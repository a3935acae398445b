"""`pipeline run|show|status`: schedule the DAG, reuse cached steps, record every run.

A step is skipped when (its code version, resolved settings, input artifact ids) hashes to a key
that already succeeded. Steps that touch external state (ingest, register, deploy) always run,
unless `--resume` continues a failed or interrupted run, which reuses whatever that run
finished. Every run is an MLflow parent run with one child per step, so lineage is browsable.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from visionline.config import Project
from visionline.errors import ConfigError
from visionline.pipeline._executors import make_executor, raise_step_error
from visionline.pipeline._graph import Artifact, Graph, Step, cache_key
from visionline.pipeline._lifecycle import RESUMABLE, build_graph
from visionline.pipeline._lineage import Lineage
from visionline.pipeline._records import (
    DONE,
    PipelineRun,
    RunStore,
    StepCache,
    StepRecord,
    outputs_from,
)


@dataclass
class PlannedStep:
    """`pipeline show`: what a run would do with a step right now."""

    name: str
    needs: tuple[str, ...]
    status: str
    key: str | None
    description: str


def _given_dataset(project: Project, data: str) -> dict[str, Artifact]:
    from visionline.data import DatasetRepo

    version = DatasetRepo(project).get(data)
    return {"dataset": Artifact("dataset", version.id, meta={"name": version.name, "given": True})}


def _settings(
    project: Project, step: Step, source: str | None, overrides: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    settings = {**project.config.pipeline.step_settings(step.name), **overrides.get(step.name, {})}
    if step.name == "ingest" and source:
        settings["source"] = source
    return settings


def _forced(graph: Graph, force: list[str]) -> set[str]:
    if "all" in force:
        return set(graph.names())
    for name in force:
        graph.get(name)
        if name not in graph.names():
            raise ConfigError(f"Step {name!r} is disabled in visionline.yaml, so it cannot be forced.")
    return set(force)


def run_pipeline(
    project: Project,
    *,
    data: str | None = None,
    source: str | None = None,
    force: list[str] | None = None,
    resume: bool = False,
    executor: str | None = None,
    until: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> PipelineRun:
    """Run the enabled steps in dependency order; returns the finished run record.

    `data` starts from an existing dataset version instead of ingesting; `until` stops after that
    step; `overrides` replace step settings for this run (and so enter the cache keys). Raises
    the failing step's `VisionlineError`; the record says which step failed.
    """
    overrides = overrides or {}
    console = console or Console()
    config = project.config.pipeline
    graph = build_graph(config)
    forced = _forced(graph, force or [])
    wanted = graph.names()
    if until:
        graph.get(until)
        wanted = [n for n in wanted if n in _upstream(graph, until)]
    store, cache = RunStore(project), StepCache(project)
    previous = store.last() if resume else None
    if resume and (previous is None or previous.status == "succeeded"):
        console.print("[dim]Nothing to resume: the last run succeeded or there is none.[/dim]")
        previous = None
    executor_name = executor or config.executor.value
    run = PipelineRun(
        PipelineRun.new_id(), executor_name, time.time(),
        {name: StepRecord() for name in wanted}, forced=sorted(forced),
    )
    lineage = Lineage(project, run)
    store.save(run)
    pool = make_executor(executor_name, config.ray_address)
    console.print(
        f"[bold]pipeline run {run.id}[/bold] ({executor_name}): {' → '.join(wanted)}"
        + (f", resuming {previous.id}" if previous else "")
    )
    pending: dict[Future, tuple[str, float]] = {}
    try:
        while True:
            launched = 0
            for name in _ready(graph, wanted, run, pending):
                step = graph.get(name)
                record = run.steps[name]
                inputs = {n: run.steps[n].outputs for n in graph.needs[name]}
                settings = _settings(project, step, source, overrides)
                record.key = cache_key(step, settings, inputs)
                launched += 1
                reused = _reuse(name, step, record.key, data, project, cache, previous, forced)
                if reused is not None:
                    record.status, record.outputs = reused
                    lineage.step(name, record, settings, inputs)
                    console.print(f"[dim]↷ {name}: {record.status}[/dim]")
                    store.save(run)
                    continue
                workdir = cache.workdir(name, record.key)
                if workdir.exists() and (name not in RESUMABLE or name in forced):
                    shutil.rmtree(workdir)
                console.print(f"[bold]▶ {name}[/bold] [dim]{step.description}[/dim]")
                record.status = "running"
                store.save(run)
                started = time.perf_counter()
                future = pool.submit(
                    name, step.resources(config), project_root=str(project.root),
                    settings=settings, inputs={n: _plain(o) for n, o in inputs.items()},
                    workdir=str(workdir), progress=progress,
                )
                pending[future] = (name, started)
                if not pool.parallel:
                    break
            if pending:
                finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in finished:
                    name, started = pending.pop(future)
                    settings = _settings(project, graph.get(name), source, overrides)
                    _finish(name, future.result(), time.perf_counter() - started, graph, run,
                            settings, cache, lineage, console)
                    store.save(run)
            elif not launched:
                break
        run.status = "succeeded"
    except KeyboardInterrupt:
        run.status = "interrupted"
        _mark(run, "running", "interrupted")
        raise
    except BaseException as exc:
        run.status, run.error = "failed", str(exc)
        _mark(run, "running", "failed")
        raise
    finally:
        run.finished_at = time.time()
        store.save(run)
        lineage.finish(run)
        pool.close()
    return run


def _finish(
    name: str,
    result: dict[str, Any],
    seconds: float,
    graph: Graph,
    run: PipelineRun,
    settings: dict[str, Any],
    cache: StepCache,
    lineage: Lineage,
    console: Console,
) -> None:
    """Record a step's result; a failed step raises its own error after being recorded."""
    record = run.steps[name]
    record.seconds = seconds
    step = graph.get(name)
    inputs = {n: run.steps[n].outputs for n in graph.needs[name]}
    if "error" in result:
        record.status, record.error = "failed", result["error"][1]
        lineage.step(name, record, settings, inputs)
        raise_step_error(result["error"])
    record.status, record.outputs = "done", outputs_from(result["outputs"])
    if step.cacheable:
        cache.put(name, record.key, record.outputs, run.id)
    lineage.step(name, record, settings, inputs)
    console.print(
        f"[green]✓[/green] {name} [dim]({seconds:.1f} s)[/dim] " + _summary(record.outputs)
    )


def _upstream(graph: Graph, name: str) -> set[str]:
    found = {name}
    for step in reversed(graph.steps):
        if step.name in found:
            found.update(graph.needs[step.name])
    return found


def _ready(graph: Graph, wanted: list[str], run: PipelineRun, pending: dict) -> list[str]:
    running = {name for name, _ in pending.values()}
    return [
        name for name in wanted
        if run.steps[name].status == "pending" and name not in running
        and all(run.steps[n].status in DONE for n in graph.needs[name])
    ]


def _reuse(
    name: str,
    step: Step,
    key: str,
    data: str | None,
    project: Project,
    cache: StepCache,
    previous: PipelineRun | None,
    forced: set[str],
) -> tuple[str, dict[str, Artifact]] | None:
    if name == "ingest" and data:
        return "given", _given_dataset(project, data)
    if name in forced:
        return None
    if previous is not None:
        old = previous.steps.get(name)
        if old and old.status in DONE and old.key == key and all(
            a.exists(project) for a in old.outputs.values()
        ):
            return "resumed", old.outputs
    if step.cacheable:
        outputs = cache.get(name, key)
        if outputs is not None:
            return "cached", outputs
    return None


def _plain(outputs: dict[str, Artifact]) -> dict[str, Any]:
    return {name: a.to_dict() for name, a in outputs.items()}


def _mark(run: PipelineRun, old: str, new: str) -> None:
    for record in run.steps.values():
        if record.status == old:
            record.status = new


def _summary(outputs: dict[str, Artifact]) -> str:
    parts = []
    for artifact in outputs.values():
        shown = {
            k: v for k, v in artifact.meta.items()
            if isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) <= 40)
        }
        text = ", ".join(f"{k}={_fmt(v)}" for k, v in list(shown.items())[:5])
        shown_id = artifact.id if len(artifact.id) <= 40 else artifact.id[:12]
        parts.append(f"{artifact.kind} {shown_id}" + (f" [dim]({text})[/dim]" if text else ""))
    return "; ".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plan(project: Project, data: str | None = None) -> list[PlannedStep]:
    """Each step's status without running anything: cached, stale, or external (always runs).

    External steps are assumed to give what they gave in the last run, so the steps after an
    unchanged ingest still show as cached.
    """
    config = project.config.pipeline
    graph = build_graph(config)
    cache = StepCache(project)
    last = RunStore(project).last()
    known: dict[str, dict[str, Artifact] | None] = {}
    rows = []
    for step in graph.steps:
        needs = graph.needs[step.name]
        if step.name == "ingest" and data:
            known[step.name] = _given_dataset(project, data)
            rows.append(PlannedStep(step.name, needs, "given", None, step.description))
            continue
        if any(known.get(n) is None for n in needs):
            known[step.name] = None
            rows.append(PlannedStep(step.name, needs, "stale (upstream changes)", None, step.description))
            continue
        inputs = {n: known[n] or {} for n in needs}
        key = cache_key(step, _settings(project, step, None, {}), inputs)
        if not step.cacheable:
            outputs = last.outputs(step.name) if last else {}
            known[step.name] = outputs or None
            rows.append(PlannedStep(step.name, needs, "external (always runs)", key, step.description))
            continue
        outputs = cache.get(step.name, key)
        known[step.name] = outputs
        rows.append(
            PlannedStep(step.name, needs, "cached" if outputs else "stale", key, step.description)
        )
    rows += [
        PlannedStep(s.name, s.needs, "disabled", None, s.description)
        for s in graph.all.values() if s not in graph.steps
    ]
    order = list(graph.all)
    return sorted(rows, key=lambda row: order.index(row.name))


def runs(project: Project, limit: int = 10) -> list[PipelineRun]:
    """The last `limit` pipeline runs, oldest first."""
    return RunStore(project).list(limit)
