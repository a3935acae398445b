"""Model references: a run's checkpoint is read where a local artifact store keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_builders import log_run

from visionline.errors import NotFoundError
from visionline.registry import resolve_model
from visionline.registry._resolve import _local_artifact


def test_a_run_checkpoint_is_read_in_place_without_temporary_copies(
    eval_env, tmp_path, private_tempdir
):
    tracking_uri = eval_env.project.tracking_uri
    run_id = log_run(eval_env.project, eval_env.model, eval_env.dataset, with_model=False)

    first = resolve_model(f"runs:/{run_id}", tracking_uri)
    assert first.run_id == run_id and first.path.read_bytes() == eval_env.model.read_bytes()
    store = Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    assert first.path.resolve().is_relative_to(store.resolve())
    assert resolve_model(f"runs:/{run_id}/model", tracking_uri).path == first.path
    assert list(private_tempdir.iterdir()) == []  # MLflow's download left a folder per call here
    with pytest.raises(NotFoundError, match="has no artifact checkpoint/other.pt"):
        resolve_model(f"runs:/{run_id}/checkpoint/other.pt", tracking_uri)


def test_only_local_artifact_stores_are_read_in_place() -> None:
    assert _local_artifact("file:///srv/mlartifacts/1/abc/artifacts", "checkpoint/model.pt") == (
        Path("/srv/mlartifacts/1/abc/artifacts/checkpoint/model.pt")
    )
    assert _local_artifact("mlflow-artifacts:/1/abc/artifacts", "checkpoint/model.pt") is None
    assert _local_artifact("s3://bucket/1/abc/artifacts", "checkpoint/model.pt") is None
