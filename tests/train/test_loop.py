"""`fit`: a real tiny training run, MLflow read back, resume, hooks and bad inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_builders import tiny_config

from visionline.config import Project
from visionline.data import DatasetRepo
from visionline.errors import ConfigError, DataError, NotFoundError, TrainingError
from visionline.train import InspectionModel, evaluate_split, fit, load_model
from visionline.train._data import PixelCache, split_labels
from visionline.train._tracking import DIGEST_CHARS


@pytest.mark.slow
def test_fit_trains_saves_the_best_epoch_and_tracks_everything(
    tiny_project, tracking_uri, tmp_path
):
    from mlflow import MlflowClient

    project, version = tiny_project
    result = fit(
        tiny_config(), version, project, out_dir=tmp_path / "run", tracking_uri=tracking_uri
    )

    model, spec = load_model(result.model_path)
    assert spec.class_names == ["good", "scratch", "dent"] and spec.preprocessing.size == 32
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert result.best_metrics == result.history[result.best_epoch]
    # The saved file really is the best epoch: re-evaluating it reproduces its metrics.
    records, labels = split_labels(version, "val", spec.class_names)
    pixels = PixelCache(DatasetRepo(project).blobs, spec.preprocessing, None).stack(records)
    again = evaluate_split(model, pixels, labels, spec.preprocessing, torch.device("cpu"), 64, 0.1)
    assert again["val_accuracy"] == pytest.approx(result.best_metrics["val_accuracy"])
    assert again["val_loss"] == pytest.approx(result.best_metrics["val_loss"], rel=1e-5)

    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    db_dir = Path(tracking_uri.removeprefix("sqlite:///")).parent
    assert run.info.artifact_uri.startswith((db_dir / "mlartifacts").as_uri())
    assert run.data.params["backbone"] == "mobilenetv3_small_100"
    assert run.data.params["image_size"] == "32"
    assert run.data.params["dataset_version"] == version.id
    assert run.data.tags["torch_version"] == torch.__version__
    recall = client.get_metric_history(result.run_id, "val_defect_recall")
    assert sorted(m.step for m in recall) == [0, 1]
    assert {"train_loss", "val_loss", "val_accuracy", "val_threshold"} <= run.data.metrics.keys()
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == version.id[:DIGEST_CHARS]
    assert dataset_input.dataset.name == version.name
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"checkpoint", "config", "preprocessing.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(result.run_id, "checkpoint")] == [
        "checkpoint/model.pt"
    ]
    logged = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{result.run_id}'"
    )
    assert [m.name for m in logged] == ["model"]
    # A user's mlflow.pytorch.load_model gives back the same network as visionline's checkpoint,
    # with a free batch size, and the logged model serves through MLflow's pyfunc interface (the
    # check MLflow's log_model would have run on the stored example, which visionline skips).
    import mlflow.pyfunc
    import mlflow.pytorch

    mlflow.set_tracking_uri(tracking_uri)
    # (dst_path: MLflow's default is a new temporary folder per load that it never removes)
    (tmp_path / "torch").mkdir()
    (tmp_path / "pyfunc").mkdir()
    logged_model = mlflow.pytorch.load_model(
        f"runs:/{result.run_id}/model", dst_path=str(tmp_path / "torch")
    )
    example = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(example)
        assert torch.allclose(logged_model(example), expected, atol=1e-5)
    served = mlflow.pyfunc.load_model(
        f"runs:/{result.run_id}/model", dst_path=str(tmp_path / "pyfunc")
    )
    assert served.metadata.get_input_schema().inputs[0].shape == (-1, 3, 32, 32)
    assert np.allclose(served.predict(example.numpy()), expected.numpy(), atol=1e-5)
    assert served.metadata.saved_input_example_info["serving_input_path"] == (
        "serving_input_example.json"
    )
    for name in (
        "train_config.yaml",
        "preprocessing.json",
        "history.json",
        "result.json",
        "last.pt",
    ):
        assert (result.out_dir / name).is_file(), name


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tiny_project, tracking_uri, tmp_path):
    from mlflow import MlflowClient

    project, version = tiny_project
    config = tiny_config(freeze_epochs=1, schedule="onecycle")
    straight = fit(
        config, version, project, out_dir=tmp_path / "a", tracking_uri=tracking_uri, progress=False
    )

    def interrupt(epoch: int, metrics: dict[str, float]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(TrainingError, match=r"kept in .*rerun with --resume --out") as info:
        fit(
            config,
            version,
            project,
            out_dir=tmp_path / "b",
            tracking_uri=tracking_uri,
            on_epoch_end=interrupt,
            progress=False,
        )
    assert "\n" not in str(info.value)
    first_state = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert first_state["epoch"] == 0
    assert MlflowClient(tracking_uri).get_run(first_state["run_id"]).info.status == "KILLED"

    resumed = fit(
        config,
        version,
        project,
        out_dir=tmp_path / "b",
        resume=True,
        tracking_uri=tracking_uri,
        progress=False,
    )
    assert resumed.run_id == first_state["run_id"]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    steps = MlflowClient(tracking_uri).get_metric_history(resumed.run_id, "val_loss")
    assert sorted(m.step for m in steps) == [0, 1]


@pytest.mark.slow
def test_hooks_see_every_epoch_and_early_stopping_ends_a_flat_run(
    tiny_project, tracking_uri, tmp_path
):
    project, version = tiny_project
    seen_epochs: list[int] = []
    teacher_calls: list[tuple[int, ...]] = []

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        assert {"train_loss", "val_loss", "val_defect_recall", "val_threshold"} <= metrics.keys()
        seen_epochs.append(epoch)

    def teacher(images, logits, labels, loss):
        teacher_calls.append((*images.shape, *logits.shape, len(labels)))
        return loss * 0.0  # nothing to learn: the weights must not move

    config = tiny_config(epochs=6, patience=2, freeze_epochs=6, weight_decay=0.0, augment=0.0)
    result = fit(
        config,
        version,
        project,
        out_dir=tmp_path / "run",
        tracking_uri=tracking_uri,
        on_epoch_end=on_epoch_end,
        teacher=teacher,
        progress=False,
    )
    assert result.stopped_early and seen_epochs == [0, 1, 2]
    assert len({h["val_loss"] for h in result.history}) == 1
    assert teacher_calls[0] == (8, 3, 32, 32, 8, 3, 8)
    assert result.best_epoch == 0


def test_an_existing_run_directory_is_not_overwritten(tiny_project, tmp_path):
    project, version = tiny_project
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"previous run")
    with pytest.raises(ConfigError, match="pass --resume to continue it or a new --out"):
        fit(tiny_config(), version, project, out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "last.pt").read_bytes() == b"previous run"
    with pytest.raises(NotFoundError, match="No last.pt in"):
        fit(tiny_config(), version, project, out_dir=tmp_path / "empty", resume=True)
    with pytest.raises(TrainingError, match="cannot be read .*start afresh without --resume"):
        fit(tiny_config(), version, project, out_dir=tmp_path / "run", resume=True)


def test_dataset_classes_must_be_project_classes(tiny_project, tmp_path):
    project, version = tiny_project
    path = project.root / "visionline.yaml"
    data = yaml.safe_load(path.read_text())
    data["classes"][1]["subtypes"] = ["scratch"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DataError, match="classes dent that are not in the project"):
        fit(tiny_config(), version.id[:10], Project.load(project.root), out_dir=tmp_path / "run")


def test_val_split_without_good_images_is_refused(tiny_project, tmp_path):
    project, version = tiny_project
    records = [
        dataclasses.replace(r, split="train") if r.label == "good" else r for r in version.records
    ]
    no_good_val = DatasetRepo(project).create_version(records, "no-good-val", version.id, {})
    with pytest.raises(DataError, match="no good images"):
        fit(tiny_config(), no_good_val, project, out_dir=tmp_path / "run")


@pytest.mark.parametrize(
    ("split", "kind", "why"),
    [
        ("train", "defect", "the model cannot learn what fails"),
        ("train", "good", "the model cannot learn what passes"),
        ("val", "defect", "epochs cannot be compared on defect recall"),
    ],
)
def test_a_split_without_good_or_defect_images_is_refused(tiny_project, tmp_path, split, kind, why):
    project, version = tiny_project
    other = "val" if split == "train" else "train"
    records = [
        dataclasses.replace(r, split=other)
        if r.split == split and (r.label == "good") == (kind == "good")
        else r
        for r in version.records
    ]
    emptied = DatasetRepo(project).create_version(records, f"no-{kind}-{split}", version.id, {})
    with pytest.raises(
        DataError,
        match=rf"^The {split} split of {emptied.short_id} has no {kind} images, so {why}; add "
        rf"{kind} images or re-split with 'visionline data split {emptied.short_id}'\.$",
    ):
        fit(tiny_config(), emptied, project, out_dir=tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_project, tmp_path):
    project, version = tiny_project
    with pytest.raises(TrainingError, match="no CUDA GPU is visible; use --device auto or cpu"):
        fit(tiny_config(device="cuda"), version, project, out_dir=tmp_path / "run")


def test_out_of_memory_suggests_a_smaller_batch(tiny_project, tracking_uri, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    project, version = tiny_project

    def exhausted(self, images):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(InspectionModel, "forward", exhausted)
    with pytest.raises(TrainingError, match=r"smaller --batch-size \(e.g. 4\)"):
        fit(
            tiny_config(),
            version,
            project,
            out_dir=tmp_path / "run",
            tracking_uri=tracking_uri,
            progress=False,
        )
    runs = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("tiny-tiles").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED"
    assert not np.any([p.name == "model.pt" for p in Path(tmp_path / "run").glob("*")])


def test_balanced_sampler_draws_rare_defects_as_often_as_good_images():
    from visionline.train._data import AugmentedPixels
    from visionline.train._distributed import DistContext
    from visionline.train._loop import _loader

    labels = np.array([0] * 80 + [1] * 10 + [2] * 10)
    dataset = AugmentedPixels(np.zeros((100, 4, 4, 3), dtype=np.uint8), labels, None)
    drawn = np.concatenate(
        [
            y.numpy()
            for epoch in range(20)
            for _, y in _loader(
                dataset, tiny_config(balance="sampler"), DistContext(), epoch, labels
            )
        ]
    )
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.all(np.abs(shares - 1 / 3) < 0.05), shares
    plain = np.concatenate(
        [
            y.numpy()
            for _, y in _loader(dataset, tiny_config(balance="none"), DistContext(), 0, labels)
        ]
    )
    assert np.bincount(plain, minlength=3)[0] >= 70


def test_freeze_batchnorm_keeps_pretrained_statistics_while_fine_tuning():
    from visionline.preprocessing import Preprocessing
    from visionline.train import ModelSpec, build_model
    from visionline.train._loop import set_backbone_mode

    model = build_model(
        ModelSpec("mobilenetv3_small_100", ["good", "dent"], Preprocessing(size=32))
    )
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    model.train()
    set_backbone_mode(model, frozen=False, freeze_batchnorm=True)
    model(torch.rand(4, 3, 32, 32))
    assert norms and all(not m.training for m in norms) and model.head.training
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    set_backbone_mode(model.train(), frozen=False, freeze_batchnorm=False)
    model(torch.rand(4, 3, 32, 32))
    assert not all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))


def test_interrupt_before_the_first_epoch_says_to_start_again(
    tiny_project, tracking_uri, tmp_path, monkeypatch
):
    """With no last.pt yet, the message had said to rerun with --resume, which then failed with
    'No last.pt ... to resume'."""
    from visionline.train import _loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_loop, "_train_epoch", interrupted)
    tracker = _loop.Tracker  # MLflow plays no part in what is tested; spare its start-up
    monkeypatch.setattr(_loop, "Tracker", lambda *a, **k: tracker(*a, **{**k, "enabled": False}))
    project, version = tiny_project
    with pytest.raises(TrainingError, match="before its first epoch.*without --resume"):
        fit(
            tiny_config(), version, project, out_dir=tmp_path / "run",
            tracking_uri=tracking_uri, progress=False,
        )
    assert not (tmp_path / "run" / "last.pt").exists()
