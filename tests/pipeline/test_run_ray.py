"""The Ray executor runs each step as a Ray task and hands on the same artifacts as local."""

from __future__ import annotations

import json

import pytest
from pipeline_support import ids, make_project, statuses

from visionline.pipeline import run_pipeline


@pytest.mark.slow
def test_ray_executor_gives_the_artifacts_of_the_local_executor(tmp_path, first, local_ray):
    local, local_run = first  # the same make_project project, run locally (conftest.py)
    on_ray = make_project(tmp_path / "ray")
    ray_run = run_pipeline(on_ray, executor="ray", until="bundle", progress=False)
    assert local_ray.is_initialized(), "an executor must not shut down a Ray it did not start"

    assert ray_run.executor == "ray" and ray_run.status == "succeeded"
    assert local_run.executor == "local" and local_run.status == "succeeded"
    assert set(statuses(ray_run).values()) == {"done"}
    ray_ids, local_ids = ids(ray_run), ids(local_run)
    assert list(ray_ids) == list(local_ids)[: list(local_ids).index("bundle") + 1]
    for step in ("ingest", "validate", "split"):
        assert ray_ids[step] == local_ids[step], step
    assert {s: sorted(o) for s, o in ray_ids.items()} == {s: sorted(local_ids[s]) for s in ray_ids}
    manifests = [
        json.loads(
            (run.steps["bundle"].outputs["bundle"].resolve(project) / "bundle.json").read_text()
        )
        for run, project in ((ray_run, on_ray), (local_run, local))
    ]
    assert manifests[0]["classes"] == manifests[1]["classes"]
    assert manifests[0]["lineage"]["dataset_version"] == manifests[1]["lineage"]["dataset_version"]
    assert manifests[0]["threshold"] == pytest.approx(manifests[1]["threshold"], abs=0.05)
