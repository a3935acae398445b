"""Optuna tuning: the search space, storage, a real study with MLflow child runs and pruning
reports, the best config training again, continuing a study, and PostgreSQL as shared storage."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from visionline.data import DatasetRepo
from visionline.errors import ConfigError, ServiceUnavailableError
from visionline.train import (
    SearchSpace,
    TuneConfig,
    fit,
    load_model,
    load_train_config,
    load_tune_config,
    tune,
)
from visionline.train._tune import DATASET_ATTR, open_storage, redact, suggest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def tiny_tune_config(**overrides) -> TuneConfig:
    """Trials of mobilenetv3_small_100 from scratch at 32 px, two epochs, lr and augment searched."""
    values = {
        "space": {
            "backbone": ["mobilenetv3_small_100"],
            "freeze_epochs": {"low": 0, "high": 0},
            "weight_decay": {"low": 1e-4, "high": 1e-4},
        },
        "train": {"pretrained": "none", "epochs": 2, "batch_size": 8, "device": "cpu"},
        "startup_trials": 1,
        "warmup_epochs": 0,
        "seed": 0,
    }
    values.update(overrides)
    return TuneConfig.model_validate(values)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_cover_the_issue_search_space():
    config = load_tune_config(None)
    space = config.space
    assert space.lr.log and space.lr.low < 1e-3 < space.lr.high
    assert space.weight_decay.log
    assert [b.value for b in space.backbone] == ["efficientnet_lite0"]
    assert space.image_size is None and space.augment.high > 0 and space.freeze_epochs.high >= 1
    assert config.pruner.value == "median"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"space": {"lr": {"low": 0.1, "high": 0.01}}}, "low must not exceed high"),
        ({"space": {"lr": {"low": 0, "high": 0.01, "log": True}}}, "log range"),
        ({"space": {"backbone": ["resnet19"]}}, "resnet18"),
        ({"space": {"image_size": []}}, "at least one"),
        ({"train": {"lr": 0.01}}, "search space tunes"),
        ({"train": {"epochs": 0}}, "epochs"),
        ({"pruner": "hyperband"}, "pruner"),
        ({"spaces": {}}, "spaces"),
    ],
)
def test_bad_tune_yaml_is_one_config_error(tmp_path, data, needle):
    with pytest.raises(ConfigError) as info:
        load_tune_config(write_yaml(tmp_path / "tune.yaml", data))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_or_non_mapping_tune_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_tune_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_tune_config(tmp_path / "list.yaml")


def test_fixed_entries_are_not_searched_and_choices_are():
    import optuna

    space = SearchSpace.model_validate(
        {
            "lr": {"low": 0.01, "high": 0.01},
            "backbone": ["mobilenetv3_small_100", "resnet18"],
            "image_size": [32, 48],
            "freeze_epochs": {"low": 1, "high": 1},
        }
    )
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    values = suggest(trial, space, default_size=128)
    assert values["lr"] == 0.01 and values["freeze_epochs"] == 1
    assert values["backbone"] in ("mobilenetv3_small_100", "resnet18")
    assert values["image_size"] in (32, 48)
    assert set(trial.params) == {"weight_decay", "backbone", "image_size", "augment"}
    assert suggest(study.ask(), SearchSpace(), default_size=96)["image_size"] == 96


def test_unreachable_database_is_service_unavailable(tiny_project):
    project, _ = tiny_project
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://tuner:s3cret@127.0.0.1:{port}/optuna"
    with pytest.raises(ServiceUnavailableError) as info:
        open_storage(project, "s", url)
    message = str(info.value)
    assert "not reachable" in message and "s3cret" not in message and "\n" not in message
    assert redact(url) == f"postgresql://tuner:***@127.0.0.1:{port}/optuna"


def test_study_of_another_dataset_is_refused(tiny_project, tracking_uri):
    project, version = tiny_project
    repo = DatasetRepo(project)
    other = repo.create_version(
        version.records[:-1], name="smaller", parent=version.id, metadata={}
    )
    import optuna

    study = optuna.create_study(study_name="shared", storage=open_storage(project, "shared", None))
    study.set_user_attr(DATASET_ATTR, version.id)
    with pytest.raises(ConfigError, match="pass that --data or a new --study"):
        tune(
            project,
            other,
            1,
            study_name="shared",
            config=tiny_tune_config(),
            tracking_uri=tracking_uri,
            progress=False,
        )


@pytest.mark.slow
def test_study_runs_child_runs_reports_epochs_and_best_config_trains(
    tiny_project, tracking_uri, tmp_path
):
    from mlflow import MlflowClient

    project, version = tiny_project
    best_yaml = tmp_path / "best.yaml"
    result = tune(
        project,
        version,
        3,
        study_name="s1",
        config=tiny_tune_config(),
        tracking_uri=tracking_uri,
        best_config_path=best_yaml,
        progress=False,
    )

    assert result.n_complete + result.n_pruned == 3 and result.n_failed == 0
    assert [row["number"] for row in result.trials] == [0, 1, 2] == result.ran_here
    assert (project.cache_dir / "optuna" / "s1.log").is_file()
    complete = [row for row in result.trials if row["state"] == "COMPLETE"]
    assert all(row["epochs"] == 2 for row in complete)  # every epoch reached trial.report
    assert result.best_value == max(row["value"] for row in complete)

    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["n_trials"] == "3"
    assert parent.data.metrics["best_val_defect_recall"] == pytest.approx(result.best_value)
    for row in result.trials:
        child = client.get_run(row["run_id"])
        assert child.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert child.data.tags["optuna.trial"] == str(row["number"])
        assert float(child.data.params["lr"]) == pytest.approx(row["params"]["lr"])
    # a trial keeps its checkpoint; only the training of the best config logs an MLflow model
    experiment = parent.info.experiment_id

    def logged_models(run_id: str) -> list:
        return client.search_logged_models(
            [experiment], filter_string=f"source_run_id = '{run_id}'"
        )

    for row in complete:
        assert [a.path for a in client.list_artifacts(row["run_id"], "checkpoint")] == [
            "checkpoint/model.pt"
        ]
        assert logged_models(row["run_id"]) == []

    # The best YAML is a TrainConfig that `visionline train --config` accepts, and it trains.
    settings = load_train_config(best_yaml, epochs=1)
    assert settings.lr == pytest.approx(result.best_config.lr)
    assert settings.backbone.value == "mobilenetv3_small_100"
    trained = fit(
        settings,
        version,
        project,
        out_dir=tmp_path / "again",
        tracking_uri=tracking_uri,
        progress=False,
    )
    _, spec = load_model(trained.model_path)
    assert spec.class_names == ["good", "scratch", "dent"]
    assert [m.name for m in logged_models(trained.run_id)] == ["model"]

    # Rerunning the finished study adds nothing; raising the total adds exactly the difference.
    again = tune(
        project,
        version,
        3,
        study_name="s1",
        config=tiny_tune_config(),
        tracking_uri=tracking_uri,
        best_config_path=best_yaml,
        progress=False,
    )
    assert again.ran_here == [] and again.parent_run_id == result.parent_run_id
    more = tune(
        project,
        version,
        4,
        study_name="s1",
        config=tiny_tune_config(),
        tracking_uri=tracking_uri,
        best_config_path=best_yaml,
        progress=False,
    )
    assert more.ran_here == [3] and more.n_complete + more.n_pruned == 4


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL 15 server on a free port, as the `postgres` user when run as root."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries are not installed at {PG_BIN}")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start PostgreSQL as 'postgres'")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = Path(tempfile.mkdtemp(prefix="vl-pg-"))
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = data / "db"
    subprocess.run(
        [*as_user, str(PG_BIN / "initdb"), "-D", str(db), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [
            *as_user,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(db),
            "-l",
            str(data / "log"),
            "-w",
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(db), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_postgres_storage_holds_the_study(tiny_project, tracking_uri, postgres_url):
    import optuna

    project, version = tiny_project
    result = tune(
        project,
        version,
        2,
        study_name="pg",
        storage=postgres_url,
        config=tiny_tune_config(pruner="none"),
        tracking_uri=tracking_uri,
        progress=False,
    )
    assert result.n_complete == 2 and result.storage == postgres_url
    study = optuna.load_study(
        study_name="pg", storage=postgres_url.replace("postgresql://", "postgresql+psycopg://")
    )
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert study.user_attrs["dataset_version"] == version.id
