"""Hyperparameter search with Optuna on top of `fit`.

TPE (multivariate, constant liar: the Optuna 5 defaults) proposes settings from a `SearchSpace`;
the loop's epoch callback feeds each epoch's validation defect recall to `trial.report`, so a
median pruner stops hopeless trials early. The objective is validation defect recall at the
project's false-reject goal (ties broken on validation loss). Each trial is an MLflow child run of
one parent run per study. The study lives in a journal file in the project cache by default, or
in any SQLAlchemy database URL, so workers on many machines can share it: each runs
`visionline tune --study S --storage URL` and the study stops at N trials in total.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visionline.errors import ConfigError, ServiceUnavailableError, TrainingError
from visionline.train._backbones import Backbone, resolve_backbone
from visionline.train._config import TrainConfig

if TYPE_CHECKING:
    import optuna

    from visionline.config import Project
    from visionline.data import DatasetVersion

OBJECTIVE = "val_defect_recall"
TUNED = ("lr", "weight_decay", "backbone", "image_size", "augment", "freeze_epochs")
PARENT_RUN_ATTR = "mlflow_parent_run_id"
DATASET_ATTR = "dataset_version"


class Pruner(str, Enum):
    """How unpromising trials are stopped between epochs."""

    MEDIAN = "median"
    NONE = "none"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatRange(_Strict):
    """A float searched in [low, high], on a log scale when `log`; low == high fixes it."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class IntRange(_Strict):
    """An integer searched in [low, high]; low == high fixes it."""

    low: int = Field(ge=0)
    high: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


class SearchSpace(_Strict):
    """What a trial may change. Defaults suit fine-tuning an ImageNet backbone."""

    lr: FloatRange = FloatRange(low=3e-4, high=3e-2, log=True)
    weight_decay: FloatRange = FloatRange(low=1e-6, high=1e-2, log=True)
    backbone: list[Backbone] = Field(default_factory=lambda: [Backbone.EFFICIENTNET_LITE0])
    image_size: list[int] | None = Field(None, description="choices; default: the project goal")
    augment: FloatRange = FloatRange(low=0.0, high=0.8)
    freeze_epochs: IntRange = IntRange(low=0, high=2)

    @field_validator("backbone", mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            out = []
            for item in value:
                try:
                    out.append(resolve_backbone(item) if isinstance(item, str) else item)
                except TrainingError as exc:  # it names the closest backbones
                    raise ValueError(str(exc).rstrip("?")) from None
            return out
        return value

    @field_validator("backbone", "image_size")
    @classmethod
    def _not_empty(cls, value: list | None) -> list | None:
        if value is not None and not value:
            raise ValueError("list at least one choice")
        return value


class TuneConfig(_Strict):
    """A tuning job: the search space, fixed training settings and the pruner (`tune.yaml`)."""

    space: SearchSpace = Field(default_factory=SearchSpace)
    train: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig settings every trial shares (e.g. epochs)"
    )
    pruner: Pruner = Pruner.MEDIAN
    startup_trials: int = Field(2, ge=0, description="trials finished before pruning starts")
    warmup_epochs: int = Field(1, ge=0, description="epochs of a trial that are never pruned")
    seed: int | None = Field(None, description="sampler seed; leave unset for parallel workers")

    @model_validator(mode="after")
    def _valid_train(self) -> TuneConfig:
        tuned = sorted(set(self.train) & set(TUNED))
        if tuned:
            raise ValueError(
                f"train sets {', '.join(tuned)}, which the search space tunes; "
                "fix a value with low == high (or one choice) under space instead"
            )
        TrainConfig.model_validate(self.train)
        return self

    def base(self) -> TrainConfig:
        return TrainConfig.model_validate(self.train)


def load_tune_config(path: Path | None) -> TuneConfig:
    """A `TuneConfig` from YAML (`space:`, `train:`, `pruner:` ...); defaults without a file."""
    if path is None:
        return TuneConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Tuning config {path} does not exist; pass an existing YAML file.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc.__class__.__name__}); fix its syntax.")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a YAML mapping with space/train/pruner keys.")
    try:
        return TuneConfig.model_validate(data)
    except ValidationError as exc:
        from visionline.config import describe_validation_error

        raise ConfigError(describe_validation_error(exc, str(path))) from exc


def suggest(trial: optuna.Trial, space: SearchSpace, default_size: int) -> dict[str, Any]:
    """One trial's settings; fixed entries (low == high, one choice) are not searched."""

    def floats(name: str, r: FloatRange) -> float:
        return r.low if r.low == r.high else trial.suggest_float(name, r.low, r.high, log=r.log)

    def choice(name: str, options: list) -> Any:
        return options[0] if len(options) == 1 else trial.suggest_categorical(name, options)

    f = space.freeze_epochs
    return {
        "lr": floats("lr", space.lr),
        "weight_decay": floats("weight_decay", space.weight_decay),
        "backbone": choice("backbone", [b.value for b in space.backbone]),
        "image_size": choice("image_size", space.image_size or [default_size]),
        "augment": floats("augment", space.augment),
        "freeze_epochs": f.low
        if f.low == f.high
        else trial.suggest_int("freeze_epochs", f.low, f.high),
    }


def redact(url: str) -> str:
    """A storage URL without its password, for logs and MLflow params."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not an SQLAlchemy URL: show only its scheme
        return url.split("://", 1)[0] + "://…"


def default_journal(project: Project, study: str) -> Path:
    return project.cache_dir / "optuna" / f"{study}.log"


def open_storage(project: Project, study: str, storage: str | None) -> Any:
    """The study's storage: a journal file (default, or a path) or an RDB URL (shared workers)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if storage is None or "://" not in storage:
        path = Path(storage) if storage else default_journal(project, study)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ServiceUnavailableError(
                f"Cannot open the study journal {path} ({exc.strerror}); pass a writable --storage."
            ) from exc
    url = _with_installed_driver(storage)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "mysql")):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5
            warnings.simplefilter("ignore")
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=30,
                grace_period=120,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=1
                ),
            )
    except Exception as exc:  # sqlalchemy/driver errors: unreachable, auth, missing driver
        text = str(getattr(exc, "orig", None) or exc).strip()
        reason = text.splitlines()[0].rsplit(": ", 1)[-1][:80] if text else type(exc).__name__
        raise ServiceUnavailableError(
            f"Study storage {redact(storage)} is not reachable ({reason}); "
            "check the URL and that the database server runs."
        ) from exc


def _with_installed_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; use psycopg 3 when only that is installed."""
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if (
            url.startswith(prefix)
            and importlib.util.find_spec("psycopg2") is None
            and importlib.util.find_spec("psycopg") is not None
        ):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def counted(study: optuna.Study, running: bool = False) -> int:
    """Trials that count towards the total: COMPLETE + PRUNED (+ RUNNING elsewhere)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED) + ((TrialState.RUNNING,) if running else ())
    return len(study.get_trials(deepcopy=False, states=states))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The completed trial with the highest recall, then the lowest validation loss."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return None
    return max(done, key=lambda t: (t.value, -t.user_attrs.get("val_loss", float("inf"))))


@dataclass
class TuneResult:
    """Where a study stands after this worker stopped."""

    study_name: str
    storage: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_trial: int | None
    best_value: float | None
    best_config: TrainConfig | None
    best_config_path: Path | None
    parent_run_id: str | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    ran_here: list[int] = field(default_factory=list)
    """Trial numbers that this worker ran."""


@contextmanager
def _study_lock(path: Path) -> Iterator[None]:
    """An exclusive file lock: workers on one machine set the study's MLflow parent up in turn
    (two processes creating a fresh sqlite tracking database at once make one of them fail)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _parent_run(
    study: optuna.Study, tracking_uri: str, experiment: str, params: dict[str, Any], lock: Path
) -> str:
    """The MLflow parent run of the study, created by the first worker and shared by the rest."""
    with _study_lock(lock):
        return _parent_run_locked(study, tracking_uri, experiment, params)


def _parent_run_locked(
    study: optuna.Study, tracking_uri: str, experiment: str, params: dict[str, Any]
) -> str:
    from visionline.registry._resolve import client
    from visionline.train._tracking import ensure_experiment

    existing = study.user_attrs.get(PARENT_RUN_ATTR)
    if existing:
        return existing
    try:
        mlflow_client = client(tracking_uri)
        run = mlflow_client.create_run(
            ensure_experiment(tracking_uri, experiment),
            run_name=study.study_name,
            tags={"optuna.study": study.study_name, "visionline.kind": "tuning-study"},
        )
        for key, value in params.items():
            mlflow_client.log_param(run.info.run_id, key, str(value)[:6000])
    except Exception as exc:
        raise ServiceUnavailableError(
            f"MLflow tracking at {tracking_uri} is not usable ({type(exc).__name__}); "
            "fix --tracking-uri."
        ) from exc
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id


def tune(
    project: Project,
    data: DatasetVersion | str,
    trials: int,
    *,
    study_name: str | None = None,
    storage: str | None = None,
    config: TuneConfig | None = None,
    timeout: float | None = None,
    tracking_uri: str | None = None,
    best_config_path: Path | None = None,
    progress: bool = True,
    on_trial: Any = None,
) -> TuneResult:
    """Run trials of `fit` until the study holds `trials` COMPLETE or PRUNED ones (or `timeout`).

    Safe to run in several processes on the same study: each trial number is drawn by the storage,
    and a worker stops once finished plus running trials reach `trials`, so the total is exact.
    `on_trial(frozen_trial)` is called after each trial this worker finishes.
    """
    import optuna
    from optuna.trial import TrialState

    from visionline.data import DatasetRepo
    from visionline.train._loop import default_runs_dir, fit

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, not {trials}.")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, not {timeout}.")
    config = config or TuneConfig()
    base = config.base()
    version = DatasetRepo(project).get(data) if isinstance(data, str) else data
    study_name = study_name or f"tune-{version.short_id}"
    tracking_uri = tracking_uri or project.tracking_uri
    store = open_storage(project, study_name, storage)
    storage_label = redact(storage) if storage else str(default_journal(project, study_name))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=config.startup_trials, n_warmup_steps=config.warmup_epochs
        )
        if config.pruner is Pruner.MEDIAN
        else optuna.pruners.NopPruner()
    )
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=store,
            sampler=optuna.samplers.TPESampler(seed=config.seed),
            pruner=pruner,
            direction="maximize",
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. an existing study with another direction
        raise ConfigError(
            f"Study {study_name} cannot be used ({exc}); pick another --study."
        ) from exc
    recorded = study.user_attrs.get(DATASET_ATTR)
    if recorded is None:
        study.set_user_attr(DATASET_ATTR, version.id)
    elif recorded != version.id:
        raise ConfigError(
            f"Study {study_name} tunes dataset {recorded[:12]}, not {version.short_id}; "
            "pass that --data or a new --study."
        )
    parent = _parent_run(
        study,
        tracking_uri,
        project.config.name,
        {
            "study": study_name,
            "storage": storage_label,
            "n_trials": trials,
            "dataset_version": version.id,
            "objective": f"{OBJECTIVE} at false-reject rate <= "
            f"{project.config.goals.operating_false_reject_rate:g}",
            "pruner": config.pruner.value,
            "space": json.dumps(config.space.model_dump(mode="json")),
            "train": json.dumps(base.model_dump(mode="json")),
        },
        project.cache_dir / "optuna" / f"{study_name}.lock",
    )
    out_root = default_runs_dir(project) / "tune" / study_name
    ran_here: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        import mlflow

        params = suggest(trial, config.space, project.config.goals.image_size)
        settings = TrainConfig.model_validate({**base.model_dump(), **params})
        trial.set_user_attr("config", settings.model_dump(mode="json"))
        ran_here.append(trial.number)
        run_ids: list[str] = []

        def report(epoch: int, metrics: dict[str, float]) -> None:
            active = mlflow.active_run()
            if active is not None and not run_ids:
                run_ids.append(active.info.run_id)
                trial.set_user_attr("run_id", active.info.run_id)
            trial.report(metrics[OBJECTIVE], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")

        try:
            result = fit(
                settings,
                version,
                project,
                out_dir=out_root / f"trial-{trial.number:04d}-{uuid.uuid4().hex[:6]}",
                tracking_uri=tracking_uri,
                on_epoch_end=report,
                run_name=f"{study_name}-trial-{trial.number}",
                tags={
                    "mlflow.parentRunId": parent,
                    "optuna.study": study_name,
                    "optuna.trial": str(trial.number),
                },
                progress=progress,
                log_model=False,  # a trial is a probe: the best config is trained again
            )
        except optuna.TrialPruned:
            if run_ids:
                from visionline.registry._resolve import client

                mlflow_client = client(tracking_uri)
                mlflow_client.set_tag(run_ids[0], "optuna.state", "PRUNED")
                mlflow_client.set_terminated(run_ids[0], "KILLED")
            raise
        trial.set_user_attr("val_loss", result.best_metrics["val_loss"])
        trial.set_user_attr("val_accuracy", result.best_metrics["val_accuracy"])
        trial.set_user_attr("model_path", str(result.model_path))
        return result.best_metrics[OBJECTIVE]

    remaining = trials - counted(study, running=True)
    if remaining > 0:
        callbacks: list[Any] = [
            optuna.study.MaxTrialsCallback(
                trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
        ]
        if on_trial is not None:
            callbacks.append(lambda _study, frozen: on_trial(frozen))
        with warnings.catch_warnings():  # heartbeat/constant-liar notes are not for users
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=callbacks)

    return _summarise(
        study, storage_label, parent, best_config_path, project, tracking_uri, ran_here
    )


def _summarise(
    study: optuna.Study,
    storage_label: str,
    parent: str,
    best_config_path: Path | None,
    project: Project,
    tracking_uri: str,
    ran_here: list[int],
) -> TuneResult:
    from optuna.trial import TrialState

    from visionline.registry._resolve import client

    all_trials = study.get_trials(deepcopy=False)
    n = {s: sum(1 for t in all_trials if t.state is s) for s in TrialState}
    best = best_trial(study)
    best_config = TrainConfig.model_validate(best.user_attrs["config"]) if best else None
    path = None
    if best_config is not None:
        path = best_config_path or project.reports_dir / "tune" / study.study_name / "best.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"# best of study {study.study_name}: trial {best.number}, "
            f"{OBJECTIVE} {best.value:.4f}; train with: visionline train --config {path.name}\n"
        )
        path.write_text(header + best_config.to_yaml())
        mlflow_client = client(tracking_uri)
        mlflow_client.log_metric(parent, f"best_{OBJECTIVE}", float(best.value))
        mlflow_client.log_metric(parent, "n_complete", n[TrialState.COMPLETE])
        mlflow_client.log_metric(parent, "n_pruned", n[TrialState.PRUNED])
        mlflow_client.set_tag(parent, "best_trial", str(best.number))
        mlflow_client.log_artifact(parent, str(path))
        if not any(t.state is TrialState.RUNNING for t in all_trials):
            mlflow_client.set_terminated(parent, "FINISHED")
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "epochs": len(t.intermediate_values),
            "params": dict(t.params),
            "run_id": t.user_attrs.get("run_id"),
        }
        for t in sorted(all_trials, key=lambda t: t.number)
    ]
    return TuneResult(
        study.study_name,
        storage_label,
        n[TrialState.COMPLETE],
        n[TrialState.PRUNED],
        n[TrialState.FAIL],
        best.number if best else None,
        float(best.value) if best else None,
        best_config,
        path,
        parent,
        rows,
        ran_here,
    )
