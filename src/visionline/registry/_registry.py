"""The MLflow model registry with aliases (`challenger`, `champion`), never stages.

Promotion is a paired comparison on the same test images; the champion history lives in a tag on
the registered model so `rollback` can restore the previous champion.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visionline.errors import DataError, NotFoundError, ServiceUnavailableError
from visionline.registry._resolve import _not_found, client, model_version, resolve_model

if TYPE_CHECKING:
    from visionline.config import Project
    from visionline.evaluate import EvalResult

CHALLENGER = "challenger"
CHAMPION = "champion"
HISTORY_TAG = "champion_history"
DATASET_KEYS = ("dataset_version", "visionline.dataset_version", "dataset", "data.version")
SIGNIFICANCE = 0.05


def _run(tracking_uri: str, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        raise NotFoundError(
            f"No MLflow run {run_id} in {tracking_uri}; pass the id of a run logged by 'visionline train'."
        ) from exc


def run_dataset_version(run: Any) -> str | None:
    """The dataset version a run trained on: a tag or param, else its logged input's digest."""
    for key in DATASET_KEYS:
        if key in run.data.tags:
            return run.data.tags[key]
        if key in run.data.params:
            return run.data.params[key]
    inputs = getattr(run, "inputs", None)
    for dataset_input in getattr(inputs, "dataset_inputs", None) or []:
        return dataset_input.dataset.digest
    return None


def _run_preprocessing(tracking_uri: str, run_id: str) -> str | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="visionline-register-") as folder:
        try:  # into a folder of ours: MLflow's default is a new temporary one that stays
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path="preprocessing.json",
                tracking_uri=tracking_uri,
                dst_path=folder,
            )
        except (MlflowException, OSError):  # optional lineage, absent on runs not made by train
            return None
        with open(path, encoding="utf-8") as handle:
            return json.dumps(json.load(handle), sort_keys=True)


def register(
    project: Project,
    run_id: str,
    name: str,
    tags: dict[str, str] | None = None,
    alias: str = CHALLENGER,
) -> dict[str, Any]:
    """Register `runs:/<run_id>/model` as a new version of `name`, tag its lineage, set `alias`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking_uri = project.tracking_uri
    run = _run(tracking_uri, run_id)
    lineage = {"run_id": run_id}
    dataset = run_dataset_version(run)
    if dataset:
        lineage["dataset_version"] = dataset
    preprocessing = _run_preprocessing(tracking_uri, run_id)
    if preprocessing:
        lineage["preprocessing"] = preprocessing
    lineage.update({f"metric.{k}": f"{v:.6g}" for k, v in run.data.metrics.items()})
    lineage.update({k: v for k, v in run.data.tags.items() if k.startswith("gate.")})
    lineage.update(tags or {})
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints its own progress lines
            found = mlflow.register_model(f"runs:/{run_id}/model", name, tags=lineage)
    except MlflowException as exc:
        if _not_found(exc):
            raise NotFoundError(
                f"Run {run_id} has no logged model named 'model'; log it with "
                "mlflow.pytorch.log_model(model, name='model') or train with 'visionline train'."
            ) from exc
        raise ServiceUnavailableError(
            f"Registering {name} failed ({exc.message}); check the registry."
        ) from exc
    client(tracking_uri).set_registered_model_alias(name, alias, found.version)
    return {"name": name, "version": str(found.version), "alias": alias, "tags": lineage}


def version_for_run(project: Project, name: str, run_id: str) -> str | None:
    """The version of `name` already registered from `run_id`, so re-running a pipeline does
    not register the same model twice."""
    found = client(project.tracking_uri).search_model_versions(
        f"name = '{name}' and run_id = '{run_id}'"
    )
    return str(max(int(v.version) for v in found)) if found else None


def _history(tracking_uri: str, name: str) -> list[str]:
    model = client(tracking_uri).get_registered_model(name)
    return json.loads(model.tags.get(HISTORY_TAG, "[]"))


def _set_champion(tracking_uri: str, name: str, version: str, history: list[str]) -> None:
    mlflow_client = client(tracking_uri)
    mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


@dataclass
class PromotionDecision:
    """What `promote` decided and why."""

    name: str
    challenger: str
    champion: str | None
    promoted: bool
    reasons: list[str]
    mcnemar: dict[str, float] | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


_COMPARED = ("false_reject_rate", "defect_recall", "escape_rate", "accuracy", "roc_auc")


def compare(
    challenger: EvalResult, champion: EvalResult | None, significance: float = SIGNIFICANCE
) -> tuple[bool, list[str], dict[str, float] | None]:
    """Challenger vs champion on the same images: gates must pass and the champion must not be
    significantly better on per-image correctness of the defect decision (exact McNemar)."""
    from visionline.evaluate import mcnemar

    reasons: list[str] = []
    ok = challenger.gates.passed
    reasons.append(
        "challenger passes all quality gates"
        if ok
        else f"challenger fails gates: {challenger.gates.summary()}"
    )
    if champion is None:
        reasons.append("there is no champion yet")
        return ok, reasons, None
    if len(challenger.test.records) != len(champion.test.records) or any(
        a.sha256 != b.sha256 for a, b in zip(challenger.test.records, champion.test.records)
    ):
        raise DataError(
            "Challenger and champion were not evaluated on the same images; use one dataset split."
        )
    test = mcnemar(challenger.correct(), champion.correct())
    summary = (
        f"McNemar: challenger right where champion wrong on {test['only_a']} images, "
        f"the reverse on {test['only_b']} (p = {test['p_value']:.3g})"
    )
    if test["only_b"] > test["only_a"] and test["p_value"] < significance:
        ok = False
        reasons.append(f"champion is significantly better; {summary}")
    else:
        reasons.append(f"challenger is not worse; {summary}")
    return ok, reasons, test


class _AnomalyComparable:
    """An anomaly evaluation seen the way `compare` sees a classifier's: gates, metrics, the
    test records and per-image correctness of the good/defect decision, so an anomaly model
    and a supervised one are compared on the same images through the same gates."""

    def __init__(self, result: Any) -> None:
        from types import SimpleNamespace

        self.result = result
        self.gates = result.gates
        self.test = SimpleNamespace(records=result.records)
        self.metrics = {"accuracy": float(self.correct().mean()), **result.metrics}

    def correct(self) -> Any:
        flagged = self.result.scores > self.result.operating_point.threshold
        return flagged == (self.result.labels != 0)


def _evaluate_any(project: Project, uri: str, common: dict[str, Any]) -> Any:
    """`evaluate_model`, or for an anomaly model `evaluate_anomaly` behind the same face."""
    from visionline.anomaly import evaluate_anomaly, is_anomaly_checkpoint
    from visionline.evaluate import evaluate_model

    if not is_anomaly_checkpoint(resolve_model(uri, project.tracking_uri).path):
        return evaluate_model(project, uri, **common)
    return _AnomalyComparable(
        evaluate_anomaly(
            project, uri, common["dataset"], common["split"], bootstrap=common["bootstrap"]
        )
    )


def promote(
    project: Project,
    name: str,
    dataset: str | None = None,
    split: str = "test",
    bootstrap: int = 200,
    progress: bool = False,
) -> PromotionDecision:
    """Evaluate `name@challenger` and `name@champion` on the same split; move `champion` to the
    challenger only if it passes the gates and is not significantly worse. Either may be an
    anomaly model: both are judged on the same images by their own decisions."""
    tracking_uri = project.tracking_uri
    challenger = model_version(tracking_uri, name, alias=CHALLENGER)
    try:
        champion = model_version(tracking_uri, name, alias=CHAMPION)
    except NotFoundError:
        champion = None
    if champion is not None and champion.version == challenger.version:
        raise DataError(
            f"Version {challenger.version} of {name} is already champion; register a new challenger."
        )
    dataset = dataset or challenger.tags.get("dataset_version")
    if not dataset:
        raise DataError(
            f"Version {challenger.version} of {name} records no dataset version; pass --data."
        )
    common = {"dataset": dataset, "split": split, "bootstrap": bootstrap, "progress": progress}
    new = _evaluate_any(project, f"models:/{name}/{challenger.version}", common)
    old = (
        _evaluate_any(project, f"models:/{name}/{champion.version}", common)
        if champion
        else None
    )
    promoted, reasons, test = compare(new, old)
    metrics = {"challenger": {k: new.metrics[k] for k in _COMPARED}}
    if old is not None:
        metrics["champion"] = {k: old.metrics[k] for k in _COMPARED}
    decision = PromotionDecision(
        name,
        str(challenger.version),
        str(champion.version) if champion else None,
        promoted,
        reasons,
        test,
        metrics,
    )
    mlflow_client = client(tracking_uri)
    verdict = "promoted" if promoted else "rejected"
    mlflow_client.set_model_version_tag(
        name, challenger.version, "promotion", f"{verdict}: {'; '.join(reasons)}"[:5000]
    )
    if promoted:
        history = _history(tracking_uri, name)
        _set_champion(
            tracking_uri, name, str(challenger.version), history + [str(challenger.version)]
        )
        mlflow_client.delete_registered_model_alias(name, CHALLENGER)
        mlflow_client.set_model_version_tag(
            name,
            challenger.version,
            "promoted_at",
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
    return decision


def rollback(project: Project, name: str) -> tuple[str, str]:
    """Restore the previous champion; returns (from_version, to_version)."""
    tracking_uri = project.tracking_uri
    _registered(tracking_uri, name)
    history = _history(tracking_uri, name)
    if len(history) < 2:
        raise NotFoundError(
            f"{name} has no previous champion to roll back to; promote a model first."
        )
    current, previous = history[-1], history[-2]
    _set_champion(tracking_uri, name, previous, history[:-1])
    client(tracking_uri).set_model_version_tag(
        name, current, "rolled_back_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    return current, previous


def _registered(tracking_uri: str, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_registered_model(name)
    except MlflowException as exc:
        raise NotFoundError(f"No registered model {name!r}; see 'visionline models list'.") from exc


def list_models(project: Project) -> list[dict[str, Any]]:
    """Every registered model with its aliases and latest version."""
    mlflow_client = client(project.tracking_uri)
    rows = []
    for model in mlflow_client.search_registered_models():
        versions = mlflow_client.search_model_versions(f"name='{model.name}'")
        rows.append(
            {
                "name": model.name,
                "versions": len(versions),
                "latest": max((int(v.version) for v in versions), default=None),
                "aliases": dict(
                    sorted((alias, str(v)) for alias, v in (model.aliases or {}).items())
                ),
                "champion_history": json.loads(model.tags.get(HISTORY_TAG, "[]")),
            }
        )
    return sorted(rows, key=lambda row: row["name"])


def show_model(project: Project, name: str, version: str | None = None) -> list[dict[str, Any]]:
    """Versions of `name` (or one) with aliases, metrics, gates and lineage dataset → run → version."""
    tracking_uri = project.tracking_uri
    registered = _registered(tracking_uri, name)
    aliases: dict[str, list[str]] = {}
    for alias, number in (registered.aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    if version is not None:
        versions = [model_version(tracking_uri, name, version=version)]
    else:
        versions = sorted(
            client(tracking_uri).search_model_versions(f"name='{name}'"),
            key=lambda v: int(v.version),
        )
    rows = []
    for found in versions:
        tags = dict(found.tags or {})
        rows.append(
            {
                "version": str(found.version),
                "aliases": sorted(aliases.get(str(found.version), [])),
                "run_id": found.run_id,
                "dataset_version": tags.get("dataset_version"),
                "created": time.strftime(
                    "%Y-%m-%d %H:%M", time.gmtime(found.creation_timestamp / 1000)
                ),
                "metrics": {
                    k.removeprefix("metric."): v for k, v in tags.items() if k.startswith("metric.")
                },
                "gates": {
                    k.removeprefix("gate."): v for k, v in tags.items() if k.startswith("gate.")
                },
                "tags": {k: v for k, v in tags.items() if not k.startswith(("metric.", "gate."))},
            }
        )
    return rows
