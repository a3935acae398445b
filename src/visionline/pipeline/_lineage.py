"""Pipeline runs in MLflow: a parent run per pipeline run, a child run per step.

Steps record their inputs and outputs (artifact kinds and ids), cache key, status and duration;
the training run that the train step made is nested under its step, so `mlflow ui` shows the
whole lineage from dataset version to deployed model in one tree.
"""

from __future__ import annotations

import json
import time
from typing import Any

from visionline.config import Project
from visionline.pipeline._graph import Artifact
from visionline.pipeline._records import PipelineRun, StepRecord

_MAX_TAG = 5000


def _ids(outputs: dict[str, Artifact]) -> dict[str, str]:
    return {name: f"{a.kind}:{a.id}" for name, a in outputs.items()}


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = str(value)[:500]


class Lineage:
    """Writes through `MlflowClient` (not the fluent API), so step code can start its own runs."""

    def __init__(self, project: Project, run: PipelineRun) -> None:
        from mlflow import MlflowClient

        from visionline.train._tracking import ensure_experiment

        self.client = MlflowClient(project.tracking_uri)
        self.experiment = ensure_experiment(project.tracking_uri, project.config.name)
        parent = self.client.create_run(
            self.experiment,
            run_name=f"pipeline {run.id}",
            tags={"visionline.pipeline_run": run.id, "visionline.executor": run.executor},
        )
        self.parent = parent.info.run_id
        run.mlflow_run_id = self.parent

    def step(
        self,
        name: str,
        record: StepRecord,
        settings: dict[str, Any],
        inputs: dict[str, dict[str, Artifact]],
    ) -> None:
        child = self.client.create_run(
            self.experiment,
            run_name=f"{name}",
            tags={
                "mlflow.parentRunId": self.parent,
                "visionline.step": name,
                "visionline.status": record.status,
                "visionline.cache_key": record.key or "",
                "visionline.inputs": json.dumps(
                    {n: _ids(o) for n, o in inputs.items()}, sort_keys=True
                )[:_MAX_TAG],
                "visionline.outputs": json.dumps(
                    {n: a.to_dict() for n, a in record.outputs.items()}, default=str
                )[:_MAX_TAG],
                **({"visionline.error": record.error[:_MAX_TAG]} if record.error else {}),
            },
        )
        run_id = child.info.run_id
        record.mlflow_run_id = run_id
        params: dict[str, str] = {}
        _flat("", settings, params)
        metrics = {"duration_s": record.seconds}
        for artifact in record.outputs.values():
            for key, value in artifact.meta.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    metrics[f"{artifact.kind}.{key}"] = float(value)
        now = int(time.time() * 1000)
        from mlflow.entities import Metric, Param

        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in list(params.items())[:100]],
        )
        trained = record.outputs.get("model")
        if record.status == "done" and trained and trained.meta.get("run_id"):
            self.client.set_tag(trained.meta["run_id"], "mlflow.parentRunId", run_id)
        status = "FAILED" if record.status == "failed" else "FINISHED"
        self.client.set_terminated(run_id, status)

    def finish(self, run: PipelineRun) -> None:
        self.client.set_tag(self.parent, "visionline.status", run.status)
        status = {"succeeded": "FINISHED", "interrupted": "KILLED"}.get(run.status, "FAILED")
        self.client.set_terminated(self.parent, status)
