"""Structured channel pruning (torch-pruning) that physically removes channels, plus a short fine-tune.

`torch.nn.utils.prune` only masks weights, which saves neither memory nor time; here whole
channels leave the convolutions, so the ONNX file shrinks and inference gets faster.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionline.errors import ConfigError, DataError
from visionline.export._data import SplitPixels
from visionline.preprocessing import Preprocessing


@dataclass
class ModelFootprint:
    """Size, speed and accuracy of one model state."""

    params: int
    onnx_bytes: int
    latency_ms_p50: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class PruneReport:
    ratio: float
    finetune_epochs: int
    before: ModelFootprint
    after: ModelFootprint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: Any, image_size: int) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (torch-pruning's op counter)."""
    import torch
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    return int(macs)


def prune_channels(model: Any, image_size: int, ratio: float, round_to: int = 8) -> Any:
    """Remove `ratio` of the channels of every prunable layer group (L2 magnitude), in place.

    The classification head keeps its outputs; its inputs shrink with the pruned embedding.
    """
    import torch
    import torch_pruning as tp

    if not 0.0 < ratio < 0.9:
        raise ConfigError(f"Pruning ratio must be between 0 and 0.9, not {ratio}; try --prune 0.3.")
    model.eval()
    example = torch.zeros(1, 3, image_size, image_size)
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[model.head],
        round_to=round_to,
    )
    pruner.step()
    model.embedding_dim = model.head.in_features
    return model


def finetune(
    model: Any,
    class_names: list[str],
    preprocessing: Preprocessing,
    train: SplitPixels,
    epochs: int = 1,
    lr: float = 3e-4,
    batch_size: int = 32,
    seed: int = 0,
    progress: Any = None,
    teacher: Any = None,
    frozen_norm: bool = False,
    label: str = "fine-tune pruned model",
) -> Any:
    """A short supervised fine-tune on the train split (horizontal flips), to recover pruned accuracy.

    `teacher` is an optional `TeacherHook` (e.g. `DistillationLoss`): the unpruned model or a
    bigger one then adds its soft targets to the label loss. `frozen_norm` keeps BatchNorm on its
    running statistics (quantisation-aware fine-tuning).
    """
    import torch

    index = {name: i for i, name in enumerate(class_names)}
    keep = [i for i, name in enumerate(train.classes) if name in index]
    if not keep:
        raise DataError(
            "No train image has a class of this model; fine-tune on the dataset it was trained on."
        )
    pixels = train.pixels[keep]
    labels = torch.tensor([index[train.classes[i]] for i in keep])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = epochs * ((len(keep) + batch_size - 1) // batch_size)
    task = progress.add_task(label, total=steps) if progress else None
    model.train()
    if frozen_norm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    for _ in range(epochs):
        order = torch.randperm(len(keep), generator=generator)
        for start in range(0, len(keep), batch_size):
            rows = order[start : start + batch_size].numpy()
            batch = pixels[rows]
            flip = torch.rand(len(rows), generator=generator) < 0.5
            batch = np.where(flip.numpy()[:, None, None, None], batch[:, :, ::-1], batch)
            images = torch.from_numpy(preprocessing.normalize(batch))
            optimizer.zero_grad()
            logits = model(images)
            loss = loss_fn(logits, labels[rows])
            if teacher is not None:
                loss = teacher(images, logits, labels[rows], loss)
            loss.backward()
            optimizer.step()
            if progress:
                progress.advance(task)
    model.eval()
    return model


def footprint(
    model: Any,
    preprocessing: Preprocessing,
    val: SplitPixels | None,
    target_frr: float,
    temperature: float = 1.0,
    threads: int | None = None,
    runs: int = 30,
) -> ModelFootprint:
    """Parameters, ONNX size, ONNX Runtime batch-1 latency and (with `val`) validation metrics."""
    from visionline.evaluate import threshold_for_false_reject_rate
    from visionline.export._gate import operating_metrics
    from visionline.export._onnx import export_onnx, onnx_predict, onnx_session

    with tempfile.TemporaryDirectory(prefix="visionline-prune-") as tmp:
        path = export_onnx(model, preprocessing.size, Path(tmp) / "model.onnx", temperature)
        session = onnx_session(path, threads)
        one = np.zeros((1, 3, preprocessing.size, preprocessing.size), dtype=np.float32)
        for _ in range(5):
            session.run(None, {"image": one})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {"image": one})
            times.append((time.perf_counter() - start) * 1000)
        metrics: dict[str, float] = {}
        if val is not None and val.is_defect.any() and (~val.is_defect).any():
            probs, _ = onnx_predict(session, preprocessing.normalize(val.pixels))
            scores = 1.0 - probs[:, 0]
            threshold = threshold_for_false_reject_rate(scores[~val.is_defect], target_frr)
            metrics = operating_metrics(scores, val.is_defect, threshold)
        return ModelFootprint(
            count_params(model), path.stat().st_size, float(np.median(times)), metrics
        )
