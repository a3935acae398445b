"""The lifecycle DAG: caching, forcing, failure and resume, lineage in MLflow, deploy + hot swap."""

from __future__ import annotations

import json

import pytest
from pipeline_support import configure, ids, make_project, statuses

from visionline.config import PipelineConfig
from visionline.errors import ConfigError, DataError
from visionline.pipeline import STEPS, build_graph, plan, run_pipeline, runs
from visionline.pipeline._graph import Artifact, cache_key

CACHEABLE = ["validate", "split", "train", "evaluate", "gate", "export", "quantise", "bundle"]


def test_disabled_steps_are_bridged_to_their_upstream():
    config = PipelineConfig.model_validate(
        {"tune": {"enabled": False}, "quantise": {"enabled": False}, "benchmark": {"enabled": False}}
    )
    graph = build_graph(config)
    assert "tune" not in graph.names() and "quantise" not in graph.names()
    assert graph.needs["train"] == ("split",)
    assert graph.needs["bundle"] == ("export", "train", "split")
    assert graph.needs["register"] == ("bundle", "train")
    tuned = build_graph(PipelineConfig.model_validate({"tune": {"enabled": True}}))
    assert tuned.needs["train"] == ("split", "tune")


def test_cache_key_depends_on_settings_inputs_and_step():
    train = next(s for s in STEPS if s.name == "train")
    export = next(s for s in STEPS if s.name == "export")
    inputs = {"split": {"dataset": Artifact("dataset", "a" * 64)}}
    base = cache_key(train, {"epochs": 1}, inputs)
    assert base == cache_key(train, {"epochs": 1}, inputs)
    assert base != cache_key(train, {"epochs": 2}, inputs)
    assert base != cache_key(train, {"epochs": 1}, {"split": {"dataset": Artifact("dataset", "b" * 64)}})
    assert base != cache_key(export, {"epochs": 1}, inputs)


def test_fresh_project_shows_everything_stale(tmp_path):
    project = make_project(tmp_path / "p", images=20)
    rows = {row.name: row.status for row in plan(project)}
    assert rows["ingest"] == "external (always runs)"
    assert rows["train"].startswith("stale")
    assert rows["tune"] == "disabled"
    assert list(rows) == [s.name for s in STEPS]


def test_a_pipeline_without_data_says_how_to_give_it(tmp_path):
    project = make_project(tmp_path / "p", images=20, ingest={"source": None})
    with pytest.raises(ConfigError, match=r"pipeline\.ingest\.source.*--data"):
        run_pipeline(project, progress=False)
    last = runs(project)[-1]
    assert last.status == "failed"
    assert last.steps["ingest"].status == "failed"
    assert last.steps["validate"].status == "pending"


def test_validate_stops_on_too_few_images_of_a_class(tmp_path):
    project = make_project(tmp_path / "p", images=30, validate={"min_images_per_class": 500})
    with pytest.raises(DataError, match="fewer than 500 images"):
        run_pipeline(project, until="split", progress=False)
    assert runs(project)[-1].steps["validate"].status == "failed"


def test_forcing_an_unknown_step_is_refused(tmp_path):
    project = make_project(tmp_path / "p", images=20)
    with pytest.raises(ConfigError, match="no pipeline step 'trian'"):
        run_pipeline(project, force=["trian"], progress=False)


@pytest.mark.slow
def test_first_run_makes_every_artifact_and_records_lineage(first):
    project, run = first
    assert run.status == "succeeded"
    assert set(statuses(run).values()) == {"done"}
    outputs = {name: record.outputs for name, record in run.steps.items()}
    bundle = outputs["bundle"]["bundle"].resolve(project)
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["lineage"]["dataset_version"] == outputs["split"]["dataset"].id
    assert manifest["lineage"]["mlflow_run_id"] == outputs["train"]["model"].meta["run_id"]
    assert outputs["quantise"]["int8"].meta["precision"] == "int8"
    assert outputs["register"]["registered_model"].id == f"{project.config.name}/1"

    from mlflow import MlflowClient

    client = MlflowClient(project.tracking_uri)
    children = client.search_runs(
        [run.steps["train"].mlflow_run_id and client.get_run(run.mlflow_run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{run.mlflow_run_id}'",
    )
    assert sorted(r.data.tags["visionline.step"] for r in children) == sorted(run.steps)
    train_step = next(r for r in children if r.data.tags["visionline.step"] == "train")
    assert train_step.data.params["epochs"] == "1"
    inputs = json.loads(train_step.data.tags["visionline.inputs"])
    assert inputs["split"]["dataset"] == "dataset:" + outputs["split"]["dataset"].id
    training = client.get_run(outputs["train"]["model"].meta["run_id"])
    assert training.data.tags["mlflow.parentRunId"] == train_step.info.run_id


@pytest.mark.slow
def test_unchanged_rerun_comes_from_the_cache(first):
    project, run = first
    again = run_pipeline(project, progress=False)
    assert [n for n, s in statuses(again).items() if s == "cached"] == CACHEABLE
    assert statuses(again)["ingest"] == "done"
    assert ids(again) == ids(run)
    assert {row.name: row.status for row in plan(project)}["bundle"] == "cached"


@pytest.mark.slow
def test_a_code_change_outside_the_step_reruns_it(first, monkeypatch, tmp_path):
    import shutil

    from visionline.pipeline import _code

    project, _ = first
    changed = tmp_path / "visionline"
    shutil.copytree(_code.SOURCE_ROOTS[0], changed, ignore=shutil.ignore_patterns("__pycache__"))
    helper = changed / "data" / "_repo.py"  # DatasetRepo.verify, which the validate step calls
    helper.write_text(helper.read_text() + "\n# a fix in a helper the step calls\n")
    monkeypatch.setattr(_code, "SOURCE_ROOTS", (changed, *_code.SOURCE_ROOTS[1:]))
    assert {row.name: row.status for row in plan(project)}["validate"] == "stale"
    assert statuses(run_pipeline(project, until="validate", progress=False))["validate"] == "done"
    monkeypatch.undo()
    assert statuses(run_pipeline(project, until="validate", progress=False))["validate"] == "cached"


@pytest.mark.slow
def test_a_changed_setting_reruns_that_step_and_what_follows(first):
    project, run = first
    project = configure(project.root, quantise={"calibration_images": 16})
    changed = run_pipeline(project, progress=False)
    state = statuses(changed)
    assert [state[n] for n in ("validate", "split", "train", "export")] == ["cached"] * 4
    assert state["quantise"] == "done" and state["bundle"] == "done"
    assert ids(changed)["train"] == ids(run)["train"]
    # forcing a step reruns it although its cache is valid; `until` stops there, since the
    # changed quantise setting above already reran the steps after it
    forced = run_pipeline(project, force=["export"], until="export", progress=False)
    assert statuses(forced)["export"] == "done"
    assert statuses(forced)["train"] == "cached"
    configure(project.root, quantise={"calibration_images": 24})


@pytest.mark.slow
def test_a_failed_step_resumes_from_where_it_stopped(first, monkeypatch):
    project, _ = first
    # a changed quantise setting: that step runs (done) before the bundle step fails
    project = configure(
        project.root, quantise={"calibration_images": 20}, bundle={"signing_key": "keys/missing.key"}
    )
    with pytest.raises(ConfigError, match="No signing key"):
        run_pipeline(project, progress=False)
    failed = runs(project)[-1]
    assert failed.status == "failed"
    assert statuses(failed)["quantise"] == "done"
    assert statuses(failed)["bundle"] == "failed"
    assert statuses(failed)["register"] == "pending"

    from visionline.export import generate_keys

    private_key, _ = generate_keys(project.root / "keys")
    project = configure(project.root, bundle={"signing_key": str(private_key.relative_to(project.root))})
    resumed = run_pipeline(project, resume=True, progress=False)
    state = statuses(resumed)
    assert state["ingest"] == "resumed"
    assert state["quantise"] == "resumed"
    assert state["bundle"] == "done"
    assert resumed.steps["quantise"].outputs == failed.steps["quantise"].outputs
    configure(project.root, quantise={"calibration_images": 24})
    bundle = resumed.steps["bundle"].outputs["bundle"].resolve(project)
    assert (bundle / "bundle.sig").is_file()


@pytest.mark.slow
def test_ctrl_c_marks_the_run_interrupted(first, monkeypatch):
    from dataclasses import replace

    from visionline.pipeline import _lifecycle

    project, _ = first

    def interrupted(ctx):
        raise KeyboardInterrupt

    patched = [replace(s, func=interrupted) if s.name == "export" else s for s in STEPS]
    monkeypatch.setattr(_lifecycle, "STEPS", patched)
    project = configure(project.root, export={"parity_atol": 2e-4})
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(project, progress=False)
    last = runs(project)[-1]
    assert last.status == "interrupted"
    assert statuses(last)["export"] == "interrupted"
    assert statuses(last)["quantise"] == "pending"


@pytest.mark.slow
def test_deploy_installs_the_bundle_and_hot_swaps_a_running_server(first):
    import httpx

    from visionline.serve import InferenceServer, ServerConfig

    project, _ = first
    repository = project.root / "model-repository"
    repository.mkdir(exist_ok=True)
    server = InferenceServer(ServerConfig(repository=repository, http_port=0, grpc_port=None))
    with server.running() as running:
        url = f"http://127.0.0.1:{running.http_port}"
        project = configure(
            project.root, deploy={"only_champion": False, "server": url},
            bundle={"signing_key": None}, export={"parity_atol": 1e-4},
        )
        run = run_pipeline(project, progress=False)
        deployment = run.steps["deploy"].outputs["deployment"]
        name, version = deployment.id.split("/")
        assert deployment.meta["deployed"] is True
        assert (repository / name / version / "bundle.json").is_file()
        ready = httpx.get(f"{url}/v2/models/{name}/versions/{version}/ready")
        assert ready.status_code == 200

    project = configure(project.root, deploy={"server": "http://127.0.0.1:9"})
    with pytest.raises(Exception, match="not reachable"):
        run_pipeline(project, progress=False)


def test_runs_are_listed_in_start_order_even_within_one_second(tmp_path):
    from visionline.config import Project, init_project
    from visionline.pipeline._records import PipelineRun, RunStore

    init_project(tmp_path)
    store = RunStore(Project.load(tmp_path))
    for run_id, started in (("20261126-120000-ffff", 100.1), ("20261126-120000-0000", 100.7)):
        store.save(PipelineRun(id=run_id, executor="local", started_at=started, steps={}))
    assert [run.id for run in store.list()] == ["20261126-120000-ffff", "20261126-120000-0000"]
    assert store.last().id == "20261126-120000-0000"
