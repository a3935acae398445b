"""`run_leaderboard`: every entry on the same split within one time budget, scored alike, ranked,
written out, and the best entry that passes the gates registered as `challenger`."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionline.errors import TrainingError, VisionlineError
from visionline.leaderboard._budget import Budget, OutOfBudget
from visionline.leaderboard._config import Family, LeaderboardConfig
from visionline.leaderboard._entry import (
    FAILED,
    FINISHED,
    NOT_FINISHED,
    SKIPPED,
    Context,
    Entry,
    Outcome,
)
from visionline.leaderboard._report import _cells, headers, rows, write_reports
from visionline.leaderboard._scoring import challenger, ranked, score_entry, verdict

if TYPE_CHECKING:
    from visionline.config import Project

EXPORT_NOTE = (
    "'visionline export' and 'serve' take torch classifier models only (probe and fine-tuned "
    "entries), so {name} ({kind}) is registered for tracking and comparison but cannot be "
    "exported or served as it is{alternative}."
)


@dataclass
class LeaderboardResult:
    """A finished leaderboard: its entries, verdict, challenger and files."""

    leaderboard_id: str
    dataset_version: str
    threshold_split: str
    budget_min: float
    elapsed_s: float
    entries: list[Entry]
    class_names: list[str]
    no_ml_needed: bool | None
    verdict: str
    challenger: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def ranked(self) -> list[Entry]:
        return ranked(self.entries)

    def table(self) -> dict[str, Any]:
        subtypes = self.class_names[1:]
        return {
            "headers": headers(self.threshold_split, subtypes),
            "cells": [_cells(row, subtypes) for row in rows(self.entries)],
        }

    def summary_lines(self) -> list[str]:
        lines = [
            (
                f"Thresholds (and the stack) were set on the '{self.threshold_split}' split at the "
                "false-reject budget; entries are ranked by recall there, and the test split only "
                "measures."
            ),
            self.verdict,
        ]
        if self.challenger:
            lines.append(
                f"Registered {self.challenger['entry']} as {self.challenger['name']} "
                f"v{self.challenger['version']} (alias {self.challenger['alias']})."
            )
        unfinished = [e.name for e in self.entries if e.status == NOT_FINISHED]
        if unfinished:
            lines.append(
                f"Not finished within the {self.budget_min:g}-minute budget: {', '.join(unfinished)}."
            )
        return lines + self.notes

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaderboard_id": self.leaderboard_id,
            "dataset_version": self.dataset_version,
            "threshold_split": self.threshold_split,
            "budget_min": self.budget_min,
            "elapsed_s": round(self.elapsed_s, 1),
            "no_ml_needed": self.no_ml_needed,
            "verdict": self.verdict,
            "challenger": self.challenger,
            "notes": self.notes,
            "entries": rows(self.entries),
        }


Runner = Callable[[Context], Outcome]
STACK_RESERVE_S = 30.0
STACK_RESERVE_SHARE = 0.1
"""Kept back from the other entries for the stack, which only fits a regression on scores."""


def plan(config: LeaderboardConfig) -> list[tuple[str, str, Runner]]:
    """(name, kind, runner) of every entry, cheapest family first."""
    from visionline.leaderboard._classical import CLASSICAL_MODELS, run_classical
    from visionline.leaderboard._deep import run_finetune, run_probe
    from visionline.leaderboard._ensemble import run_anomaly, run_stack

    planned: list[tuple[str, str, Runner]] = []
    for family in Family:
        if family not in config.families:
            continue
        if family is Family.CLASSICAL:
            planned += [
                (f"classical/{m}", "classical", lambda c, m=m: run_classical(c, m))
                for m in CLASSICAL_MODELS
            ]
        elif family is Family.PROBE:
            planned += [
                (f"probe/{b}", "probe", lambda c, b=b: run_probe(c, b)) for b in config.backbones
            ]
        elif family is Family.ANOMALY:
            planned.append(("anomaly/patchcore", "anomaly", run_anomaly))
        elif family is Family.FINETUNE:
            planned += [
                (f"finetune/{b}", "finetune", lambda c, b=b: run_finetune(c, b))
                for b in config.backbones
            ]
        else:
            planned.append(("stack", "stack", run_stack))
    return planned


def _run_entry(ctx: Context, entry: Entry, runner: Runner) -> None:
    reserve = min(STACK_RESERVE_S, STACK_RESERVE_SHARE * ctx.config.budget_min * 60.0)
    ctx.reserve_s = reserve if entry.kind != "stack" and ctx.stack_planned else 0.0
    if ctx.budget.remaining_s() <= ctx.reserve_s:
        entry.status, entry.reason = NOT_FINISHED, "not started: the budget was spent"
        return
    started = time.monotonic()
    try:
        entry.outcome = runner(ctx)
        score_entry(entry, ctx.data, ctx.project.config.goals, ctx.config.bootstrap)
        entry.status = FINISHED
    except OutOfBudget as exc:
        entry.status, entry.reason = NOT_FINISHED, f"stopped: {exc}"
    except VisionlineError as exc:  # missing weights, unusable data: one sentence, board goes on
        entry.status = SKIPPED if entry.kind == "stack" and entry.outcome is None else FAILED
        entry.reason = str(exc)
    except Exception as exc:  # noqa: BLE001  (one broken entry must not lose the others' work)
        entry.status = FAILED
        entry.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        entry.seconds = time.monotonic() - started


def _log_entry(ctx: Context, entry: Entry) -> None:
    """Test metrics, threshold and gates on the entry's run (evaluate's `log_evaluation`)."""
    import math

    from visionline.evaluate import log_evaluation
    from visionline.registry import ModelRef

    run_id = entry.outcome.run_id
    if run_id is None:
        return
    metrics = entry.metrics
    logged = {
        f"test_{key}": float(metrics[key])
        for key in ("false_reject_rate", "escape_rate", "defect_recall", "roc_auc", "pr_auc")
        if metrics.get(key) is not None and math.isfinite(metrics[key])
    }
    logged.update(
        {
            f"{ctx.data.threshold_split}_defect_recall": entry.calib_recall,
            "latency_ms_batch1": entry.outcome.latency_ms,
            "model_size_mb": entry.outcome.size_bytes / 1e6,
            "leaderboard_seconds": entry.seconds,
        }
    )
    logged = {k: v for k, v in logged.items() if math.isfinite(v)}
    ref = ModelRef(uri=f"runs:/{run_id}", path=Path("."), run_id=run_id)
    log_evaluation(ref, ctx.tracking_uri, logged, entry.operating_point.threshold, entry.gates, ())


def _register(ctx: Context, best: Entry, entries: list[Entry]) -> tuple[dict[str, Any], list[str]]:
    from visionline.leaderboard._entry import KIND_TAG, LEADERBOARD_TAG
    from visionline.registry import register

    name = ctx.config.model_name or ctx.project.config.name
    found = register(
        ctx.project,
        best.outcome.run_id,
        name,
        tags={
            KIND_TAG: best.kind,
            LEADERBOARD_TAG: ctx.leaderboard_id,
            "threshold": f"{best.operating_point.threshold:.6f}",
        },
    )
    notes = []
    if not best.outcome.exportable:
        exportable = [e for e in ranked(entries) if e.outcome.exportable]
        alternative = (
            f"; the best exportable entry is {exportable[0].name} (run {exportable[0].outcome.run_id})"
            if exportable
            else ""
        )
        notes.append(EXPORT_NOTE.format(name=best.name, kind=best.kind, alternative=alternative))
    return {"entry": best.name, **{k: found[k] for k in ("name", "version", "alias")}}, notes


def run_leaderboard(
    project: Project,
    dataset: str,
    config: LeaderboardConfig | None = None,
    out_dir: Path | None = None,
    tracking_uri: str | None = None,
    progress: bool = False,
    on_entry: Callable[[Entry], None] | None = None,
    budget: Budget | None = None,
) -> LeaderboardResult:
    """Run every planned entry on `dataset` within `config.budget_min`; write and return the board.

    Raises a one-sentence `TrainingError` (after writing the reports) when no entry finished.
    """
    import torch

    from visionline.leaderboard._data import load_data

    config = config or LeaderboardConfig()
    budget = budget or Budget(config.budget_min)
    data = load_data(project, dataset)
    leaderboard_id = hashlib.sha256(f"{data.version.id}:{time.time_ns()}".encode()).hexdigest()[:12]
    out = Path(out_dir) if out_dir else project.reports_dir / f"leaderboard-{data.version.short_id}"
    ctx = Context(
        project,
        data,
        config,
        budget,
        out,
        leaderboard_id,
        tracking_uri or project.tracking_uri,
        progress,
    )
    ctx.stack_planned = Family.STACK in config.families
    previous_threads = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        for name, kind, runner in plan(config):
            entry = Entry(name, kind)
            ctx.entries.append(entry)
            _run_entry(ctx, entry, runner)
            if entry.finished:
                _log_entry(ctx, entry)
            if on_entry is not None:
                on_entry(entry)
    finally:
        torch.set_num_threads(previous_threads)
    no_ml, sentence = verdict(ctx.entries)
    result = LeaderboardResult(
        leaderboard_id,
        data.version.id,
        data.threshold_split,
        config.budget_min,
        budget.elapsed_s(),
        ctx.entries,
        list(data.class_names),
        no_ml,
        sentence,
        notes=list(data.warnings),
    )
    best = challenger(ctx.entries)
    if best is None and ranked(ctx.entries):
        result.notes.append(
            "No entry passed the quality gates, so none was registered as challenger."
        )
    elif best is not None and config.register_best:
        result.challenger, notes = _register(ctx, best, ctx.entries)
        result.notes.extend(notes)
    result.paths = write_reports(result, out)
    if not ranked(ctx.entries):
        raise TrainingError(
            f"No leaderboard entry finished within the {config.budget_min:g}-minute budget "
            f"(what ran is in {result.paths['json']}); raise --budget-min."
        )
    return result
