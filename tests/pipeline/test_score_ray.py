"""Batch scoring on Ray Data gives exactly the rows of the local multiprocessing executor."""

from __future__ import annotations

import pandas as pd
import pytest
from score_support import make_image_folder

from visionline.pipeline._score import score


@pytest.mark.slow
def test_ray_executor_gives_the_rows_of_the_local_executor(
    local_ray, score_bundle, score_images, tmp_path
):
    local = score(
        score_images, score_bundle, out=tmp_path / "local.parquet", workers=2, batch_size=3
    )
    on_ray = score(
        score_images,
        score_bundle,
        out=tmp_path / "ray.parquet",
        executor="ray",
        workers=2,
        batch_size=3,
    )

    assert on_ray.executor.value == "ray" and on_ray.workers == 2
    assert on_ray.rows["error"].notna().sum() == 2
    pd.testing.assert_frame_equal(on_ray.rows, local.rows)
    assert on_ray.summary == local.summary
    assert local_ray.is_initialized(), "a Ray session the caller started must stay up"


@pytest.mark.slow
def test_ray_executor_reads_a_dataset_version_from_the_blob_store(
    local_ray, score_bundle, tmp_path
):
    from visionline.config import Project, init_project
    from visionline.data import DatasetRepo

    init_project(tmp_path / "plant")
    project = Project.load(tmp_path / "plant")
    images = make_image_folder(tmp_path / "images", {"val": {"good": 3, "bruise": 2, "rot": 2}})
    version = DatasetRepo(project).add(images, name="ray").version

    local = score(version.short_id, score_bundle, project=project, workers=1)
    on_ray = score(version.short_id, score_bundle, project=project, executor="ray", batch_size=2)

    pd.testing.assert_frame_equal(on_ray.rows, local.rows)
    assert on_ray.summary.labelled == 7
