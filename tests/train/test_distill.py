"""Knowledge distillation: the KD loss, the teacher's view of the batch, caching, and a real
`fit` where the teacher measurably pulls the student towards its soft targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_builders import tiny_config

from visionline.data import DatasetRepo
from visionline.errors import ConfigError, NotFoundError
from visionline.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from visionline.train import (
    DistillationLoss,
    ModelSpec,
    build_model,
    fit,
    kd_loss,
    load_model,
    save_model,
)
from visionline.train._data import PixelCache, normalize_batch, split_labels
from visionline.train._distill import teacher_agreement

CLASSES = ["good", "scratch", "dent"]


def make_teacher(tmp_path: Path, classes=CLASSES, size: int = 32, bias=(0.0, -1.0, 1.5)) -> Path:
    """A 'teacher' whose soft targets are its head bias (≈ 17/6/77 %), far from the labels' mix."""
    torch.manual_seed(1)
    prep = Preprocessing(size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    spec = ModelSpec("mobilenetv3_small_100", list(classes), prep, "none", 0.0)
    model = build_model(spec)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(bias[: len(classes)]))
    return save_model(tmp_path / "teacher.pt", model, spec)


def test_kd_loss_is_zero_for_equal_logits_and_scaled_by_t_squared():
    logits = torch.randn(6, 3)
    assert kd_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(6, 3)
    by_hand = (
        (other.softmax(1) * (other.log_softmax(1) - logits.log_softmax(1))).sum(1).mean().item()
    )
    assert kd_loss(logits, other, 1.0).item() == pytest.approx(by_hand, rel=1e-5)
    t = 3.0
    soft = kd_loss(logits / 1.0, other, t).item()
    manual = (
        ((other / t).softmax(1) * ((other / t).log_softmax(1) - (logits / t).log_softmax(1)))
        .sum(1)
        .mean()
        .item()
        * t
        * t
    )
    assert soft == pytest.approx(manual, rel=1e-5)


def test_teacher_sees_the_same_pixels_in_its_own_normalisation_and_size(tmp_path):
    model, spec = load_model(make_teacher(tmp_path, size=48))
    student_prep = Preprocessing(size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    hook = DistillationLoss(model, spec, student_prep, alpha=0.5, temperature=2.0)
    ramp = torch.linspace(20, 230, 32)
    pixels = (ramp[None, :] + 0 * ramp[:, None]).round().to(torch.uint8).expand(2, 3, 32, 32)
    mapped = hook.to_teacher_input(normalize_batch(pixels, student_prep))
    assert mapped.shape == (2, 3, 48, 48)
    # Undo the teacher's normalisation and shrink back: the student's pixels come out again.
    unit = mapped * 0.25 + 0.5
    back = torch.nn.functional.interpolate(unit, size=(32, 32), mode="area") * 255
    assert (back - pixels.float()).abs().mean() < 3
    same = DistillationLoss(model, spec, spec.preprocessing, 0.5, 2.0)
    x = normalize_batch(
        torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8), spec.preprocessing
    )
    torch.testing.assert_close(same.to_teacher_input(x), x)


def test_cached_teacher_logits_run_the_teacher_once_per_image(tmp_path):
    model, spec = load_model(make_teacher(tmp_path))
    images = torch.randn(4, 3, 32, 32)
    cached = DistillationLoss(model, spec, spec.preprocessing, 0.5, 2.0, cache=True)
    first = cached.teacher_logits(images)
    again = cached.teacher_logits(images[[2, 0]])
    assert cached.teacher_forwards == 4
    torch.testing.assert_close(again, first[[2, 0]])
    fresh = DistillationLoss(model, spec, spec.preprocessing, 0.5, 2.0, cache=False)
    torch.testing.assert_close(fresh.teacher_logits(images), first, rtol=1e-4, atol=1e-4)
    fresh.teacher_logits(images)
    assert fresh.teacher_forwards == 8


def test_hook_mixes_label_and_teacher_loss_and_gradients_reach_only_the_student(tmp_path):
    model, spec = load_model(make_teacher(tmp_path))
    images = torch.randn(3, 3, 32, 32)
    student_logits = torch.randn(3, 3, requires_grad=True)
    label_loss = torch.tensor(2.0)
    only_labels = DistillationLoss(model, spec, spec.preprocessing, 0.0, 2.0)
    assert only_labels(images, student_logits, None, label_loss).item() == pytest.approx(2.0)
    hook = DistillationLoss(model, spec, spec.preprocessing, 1.0, 2.0)
    loss = hook(images, student_logits, None, label_loss)
    loss.backward()
    assert student_logits.grad is not None and student_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_teacher_pulls_the_student_towards_its_soft_targets(tiny_project, tracking_uri, tmp_path):
    from mlflow import MlflowClient

    project, version = tiny_project
    teacher_path = make_teacher(tmp_path)
    teacher_model, teacher_spec = load_model(teacher_path)
    # Only the heads learn (frozen backbones keep their batch-norm statistics), so what the
    # students do in eval mode is exactly what they learned.
    base = {"epochs": 5, "freeze_epochs": 5, "batch_size": 4, "augment": 0.0, "lr": 3e-2}
    plain = fit(
        tiny_config(**base),
        version,
        project,
        out_dir=tmp_path / "plain",
        tracking_uri=tracking_uri,
        progress=False,
    )
    kd = fit(
        tiny_config(**base, teacher=str(teacher_path), kd_alpha=1.0, kd_temperature=1.0),
        version,
        project,
        out_dir=tmp_path / "kd",
        tracking_uri=tracking_uri,
        progress=False,
    )

    records, _ = split_labels(version, "val", CLASSES)
    pixels = PixelCache(DatasetRepo(project).blobs, plain.spec.preprocessing, None).stack(records)
    images = normalize_batch(
        torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2), plain.spec.preprocessing
    )
    judge = DistillationLoss(teacher_model, teacher_spec, plain.spec.preprocessing, 1.0, 1.0)
    gap_plain = teacher_agreement(plain.last_model, judge, images)
    gap_kd = teacher_agreement(kd.last_model, judge, images)
    assert gap_kd < 0.5 * gap_plain, (gap_kd, gap_plain)

    params = MlflowClient(tracking_uri).get_run(kd.run_id).data.params
    assert params["teacher"] == str(teacher_path)
    assert params["kd_alpha"] == "1.0" and params["kd_temperature"] == "1.0"


def test_teacher_with_other_classes_is_refused_before_training(
    tiny_project, tracking_uri, tmp_path
):
    project, version = tiny_project
    teacher = make_teacher(tmp_path, classes=["good", "bruise"])
    with pytest.raises(ConfigError, match="this project's classes"):
        fit(
            tiny_config(teacher=str(teacher)),
            version,
            project,
            out_dir=tmp_path / "run",
            tracking_uri=tracking_uri,
            progress=False,
        )
    assert not (tmp_path / "run").exists()


def test_missing_teacher_names_the_accepted_references(tiny_project, tracking_uri, tmp_path):
    project, version = tiny_project
    with pytest.raises(NotFoundError, match=r"runs:/<run_id>"):
        fit(
            tiny_config(teacher=str(tmp_path / "nope.pt")),
            version,
            project,
            out_dir=tmp_path / "run",
            tracking_uri=tracking_uri,
            progress=False,
        )


def test_train_head_with_soft_targets_learns_the_teachers_answer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 4)).astype(np.float32)
    labels = np.zeros(48, dtype=np.int64)  # the labels say "good" everywhere
    teacher = torch.tensor([[-4.0, -4.0, 4.0]]).repeat(48, 1)  # the teacher says "dent"

    def fitted(soft, val_class):  # val agrees with the answer, so the last epochs are kept
        model = _fit_head(x, labels, soft, x[:8], np.array([0] + [val_class] * 7))
        return model.classify(torch.from_numpy(x)).argmax(1)

    assert (fitted(None, 0) == 0).float().mean() > 0.9
    assert (fitted((teacher, 1.0, 2.0), 2) == 2).float().mean() > 0.9


def _fit_head(x, labels, soft, val_x, val_y):
    from visionline.train._head import logit_metrics, train_head
    from visionline.train._model import InspectionModel

    torch.manual_seed(0)
    model = InspectionModel(torch.nn.Identity(), 4, 3, 0.0)
    train_head(
        model,
        x,
        labels,
        val_x,
        val_y,
        epochs=30,
        lr=5e-2,
        weight_decay=0.0,
        batch_size=16,
        class_weight=None,
        label_smoothing=0.0,
        score=lambda logits, y: logit_metrics(logits, y, 0.1),
        seed=0,
        soft_targets=soft,
    )
    return model


def _clusters(rng, n: int, centre: int) -> np.ndarray:
    shift = np.zeros(4, dtype=np.float32)
    shift[centre] = 4.0
    return (rng.normal(size=(n, 4)) + shift).astype(np.float32)


def test_unlabelled_rows_learn_a_class_only_the_teacher_names():
    rng = np.random.default_rng(0)
    good, scratch, unlabelled = _clusters(rng, 24, 0), _clusters(rng, 24, 1), _clusters(rng, 48, 2)
    labelled_x = np.concatenate([good, scratch])
    labelled_y = np.repeat(np.array([0, 1], dtype=np.int64), 24)
    x = np.concatenate([labelled_x, unlabelled])
    y = np.concatenate([labelled_y, np.full(48, -1, dtype=np.int64)])
    teacher = torch.cat(
        [
            torch.nn.functional.one_hot(torch.from_numpy(labelled_y), 3) * 8.0 - 4.0,
            torch.tensor([[-4.0, -4.0, 4.0]]).repeat(48, 1),
        ]
    )
    val_x = np.concatenate([good[:8], unlabelled[:8]])
    val_y = np.array([0] * 8 + [2] * 8)

    model = _fit_head(x, y, (teacher, 0.5, 2.0), val_x, val_y)
    with torch.no_grad():
        on_pool = model.classify(torch.from_numpy(unlabelled)).argmax(1)
        on_labelled = model.classify(torch.from_numpy(labelled_x)).argmax(1)
    # no label ever says "dent": only the teacher's soft targets on the unlabelled rows can
    assert (on_pool == 2).float().mean() > 0.9
    assert (on_labelled.numpy() == labelled_y).mean() > 0.9


def test_unlabelled_rows_without_soft_targets_or_misaligned_targets_are_refused():
    from visionline.errors import TrainingError

    x = np.zeros((6, 4), dtype=np.float32)
    y = np.array([0, 1, 0, -1, -1, -1])
    with pytest.raises(TrainingError, match="3 train rows have no label"):
        _fit_head(x, y, None, x, np.array([0, 1, 0, 1, 0, 1]))
    with pytest.raises(TrainingError, match="soft_targets has 4 rows for 6 train rows"):
        _fit_head(x, y, (torch.zeros(4, 3), 0.5, 2.0), x, np.array([0, 1, 0, 1, 0, 1]))
