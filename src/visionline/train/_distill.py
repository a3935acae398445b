"""Knowledge distillation: a big teacher's soft targets train a small edge student.

The loss is `(1 − α)·label loss + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T))` (Hinton et
al., 2015). The teacher runs in eval mode under `no_grad` on the student's own augmented batch,
re-normalised (and resized) to the teacher's preprocessing, so the two models see the same pixels.
Without augmentation every epoch shows the same pixels, so teacher logits are cached per image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from visionline.errors import ConfigError
from visionline.preprocessing import Preprocessing
from visionline.train._model import InspectionModel, ModelSpec

__all__ = ["DistillationLoss", "distillation_hook", "kd_loss", "load_teacher", "teacher_agreement"]


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch.

    The T² factor keeps the soft-target gradients on the scale of the label loss's whatever T is.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def _channel_stats(prep: Preprocessing, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=device)
    std = torch.tensor(prep.std, dtype=torch.float32, device=device)
    if prep.channel_order == "BGR":
        mean, std = mean.flip(0), std.flip(0)
    return mean[:, None, None], std[:, None, None]


class DistillationLoss:
    """A `TeacherHook` for `fit`: mixes the student's label loss with the KD term."""

    def __init__(
        self,
        teacher: InspectionModel,
        teacher_spec: ModelSpec,
        student_preprocessing: Preprocessing,
        alpha: float,
        temperature: float,
        cache: bool = False,
    ):
        self.teacher = teacher.eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher_spec = teacher_spec
        self.student_preprocessing = student_preprocessing
        self.alpha = alpha
        self.temperature = temperature
        self.cache: dict[bytes, torch.Tensor] | None = {} if cache else None
        self.teacher_forwards = 0
        """Images the teacher actually ran on (cache hits are not counted)."""

    def to_teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        """Student-normalised NCHW → the teacher's normalisation, channel order and size."""
        s_mean, s_std = _channel_stats(self.student_preprocessing, images.device)
        t_prep = self.teacher_spec.preprocessing
        t_mean, t_std = _channel_stats(t_prep, images.device)
        unit = images.float() * s_std + s_mean
        if t_prep.channel_order != self.student_preprocessing.channel_order:
            unit = unit.flip(1)
        if unit.shape[-2:] != (t_prep.size, t_prep.size):
            unit = F.interpolate(
                unit, size=(t_prep.size, t_prep.size), mode="bilinear", antialias=True
            )
        return (unit - t_mean) / t_std

    @torch.no_grad()
    def _run_teacher(self, images: torch.Tensor) -> torch.Tensor:
        if next(self.teacher.parameters()).device != images.device:
            self.teacher.to(images.device)
        self.teacher.eval()
        self.teacher_forwards += len(images)
        return self.teacher(self.to_teacher_input(images)).float()

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher logits for a student batch, from the per-image cache where possible."""
        if self.cache is None:
            return self._run_teacher(images)
        host = images.detach().float().cpu().contiguous()
        keys = [hashlib.blake2b(img.numpy().tobytes(), digest_size=16).digest() for img in host]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            computed = self._run_teacher(images[missing]).cpu()
            for row, i in enumerate(missing):
                self.cache[keys[i]] = computed[row]
        return torch.stack([self.cache[key] for key in keys]).to(images.device)

    def __call__(
        self, images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        soft = kd_loss(logits, self.teacher_logits(images), self.temperature)
        return (1.0 - self.alpha) * loss + self.alpha * soft


def load_teacher(uri: str, tracking_uri: str) -> tuple[InspectionModel, ModelSpec, str | None]:
    """(model, spec, MLflow run id) for a model.pt path, `runs:/<id>` or `models:/<name>@alias`."""
    from visionline.registry import resolve_model
    from visionline.train._model import load_model

    ref = resolve_model(uri, tracking_uri)
    model, spec = load_model(ref.path)
    return model, spec, ref.run_id


def distillation_hook(
    teacher_uri: str,
    class_names: Sequence[str],
    student_preprocessing: Preprocessing,
    alpha: float,
    temperature: float,
    tracking_uri: str,
    cache: bool,
) -> DistillationLoss:
    """Load the teacher and check that it predicts the student's classes in the same order."""
    model, spec, _ = load_teacher(teacher_uri, tracking_uri)
    if list(spec.class_names) != list(class_names):
        raise ConfigError(
            f"Teacher {teacher_uri} predicts {', '.join(spec.class_names)} but the student "
            f"predicts {', '.join(class_names)}; pass a teacher trained on this project's classes."
        )
    return DistillationLoss(model, spec, student_preprocessing, alpha, temperature, cache)


def teacher_agreement(
    student: nn.Module,
    teacher: DistillationLoss,
    images: torch.Tensor,
) -> float:
    """Mean KL(teacher ‖ student) at T=1 on normalised student images: lower = closer."""
    student.eval()
    with torch.no_grad():
        return float(kd_loss(student(images), teacher.teacher_logits(images), 1.0))
