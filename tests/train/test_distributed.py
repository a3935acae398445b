"""DDP: two CPU processes under torchrun (gloo) train one model; only rank 0 tracks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_builders import make_project

WORKER = """
import os, sys
import torch
sys.path[:0] = [{builders!r}, {support!r}]
from train_builders import tiny_config
from visionline.config import Project
from visionline.train import fit

result = fit(
    tiny_config(epochs=2, batch_size=4, freeze_epochs=1),
    {version!r},
    Project.load({root!r}),
    out_dir={out!r},
    tracking_uri={tracking!r},
    progress=False,
)
rank = int(os.environ["RANK"])
torch.save(
    {{"state": result.last_model.state_dict(), "run_id": result.run_id, "history": result.history}},
    os.path.join({out!r}, f"rank{{rank}}.pt"),
)
"""


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights_and_one_mlflow_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    project, version = make_project(tmp_path / "proj")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    worker = tmp_path / "worker.py"
    worker.write_text(
        WORKER.format(
            builders=str(Path(__file__).parent),
            support=str(Path(__file__).parents[1]),  # tests/: mlflow_support
            version=version.id,
            root=str(project.root),
            out=str(out),
            tracking=tracking,
        )
    )
    # torchrun leaves a torchelastic_* log folder in the temporary directory: keep it in tmp_path
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(worker),
    ]
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=900, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]

    rank0 = torch.load(out / "rank0.pt", weights_only=False)
    rank1 = torch.load(out / "rank1.pt", weights_only=False)
    for name, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][name]), name
    assert rank0["history"] == rank1["history"]
    assert rank0["run_id"] is not None and rank1["run_id"] is None

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("tiny-tiles")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [rank0["run_id"]]
    assert runs[0].data.params["world_size"] == "2"
    assert int(runs[0].data.params["n_train"]) == 18
    # Rank 0's resumable checkpoint holds exactly those synchronised weights.
    saved = torch.load(out / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(saved[k], rank0["state"][k]) for k in saved)
