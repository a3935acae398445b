"""Structured channel pruning (torch-pruning) that physically removes channels, and its recovery.

`torch.nn.utils.prune` only masks weights, which saves neither memory nor time; here whole
channels leave the convolutions, so the ONNX file shrinks and inference gets faster.

By default only the hidden channels inside each inverted-residual block lose width (the 1×1
expansion, its depthwise convolution and the projection's inputs): they hold most of the MACs,
while the residual stream, the stem and the pooled embedding keep their shapes, so the head the
model shipped with still reads the same features. Given images, the channels to drop are the ones
that contribute least to the block's output on them (mean square activation × squared projection
weights), and `recover` then refits each block's projection by least squares so that the pruned
block reproduces the unpruned block's output on those images (block by block, each on the inputs
the already-repaired blocks before it produce). Round 7 pruned every layer group by weight
magnitude and fine-tuned on labels: on the synthetic apples the pooled features lost their
information (test ROC AUC 0.53, recall 0), which no head refit or BatchNorm re-estimation brought
back (both measured at AUC ≤ 0.52).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from visionline.errors import ConfigError, DataError
from visionline.export._data import SplitPixels
from visionline.preprocessing import Preprocessing

__all__ = [
    "ModelFootprint",
    "PruneReport",
    "PruneScope",
    "count_macs",
    "count_params",
    "finetune",
    "footprint",
    "prune_channels",
    "recover",
]


class PruneScope(str, Enum):
    """Which channels pruning may remove."""

    EXPANSION = "expansion"
    """The hidden channels of inverted-residual blocks (expansion, depthwise, projection input)."""
    ALL = "all"
    """Every prunable layer group, the residual stream and the embedding included."""


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


def _inverted_residuals(model: Any) -> list[Any]:
    from timm.models._efficientnet_blocks import InvertedResidual

    return [block for block in model.modules() if isinstance(block, InvertedResidual)]


def _expansion_layers(model: Any) -> set[int]:
    """ids of the layers whose output channels are an inverted-residual block's hidden width."""
    inner: set[int] = set()
    for block in _inverted_residuals(model):
        inner |= {id(block.conv_pw), id(block.conv_dw)}
        for name in ("conv_reduce", "conv_expand"):  # squeeze-excite, if the block has one
            layer = getattr(block.se, name, None)
            if layer is not None:
                inner.add(id(layer))
    return inner


def _images(pixels: np.ndarray, preprocessing: Preprocessing) -> Any:
    import torch

    return torch.from_numpy(preprocessing.normalize(np.ascontiguousarray(pixels)))


def _contributions(model: Any, images: Any) -> dict[int, Any]:
    """Per projection layer (by id): each hidden channel's share of the block's output energy on
    `images`, its mean square activation times the squared norm of the weights reading it."""
    import torch

    energy: dict[int, Any] = {}
    hooks = [
        block.conv_pwl.register_forward_pre_hook(
            lambda layer, args: energy.__setitem__(id(layer), args[0].pow(2).mean(dim=(0, 2, 3)))
        )
        for block in _inverted_residuals(model)
    ]
    try:
        with torch.no_grad():
            model.embed(images)
    finally:
        for hook in hooks:
            hook.remove()
    return {
        id(block.conv_pwl): energy[id(block.conv_pwl)]
        * block.conv_pwl.weight.detach().pow(2).sum(dim=(0, 2, 3))
        for block in _inverted_residuals(model)
    }


class _ContributionImportance:
    """torch-pruning importance: a group's channels scored by `_contributions` of the projection
    that reads them (None for a group without one, which then keeps its channels)."""

    def __init__(self, scores: dict[int, Any]):
        self.scores = scores

    def __call__(self, group: Any) -> Any:
        import torch
        from torch_pruning.pruner import function

        for i, (dep, idxs) in enumerate(group):
            scores = self.scores.get(id(dep.layer))
            if scores is not None and dep.pruning_fn == function.prune_conv_in_channels:
                out = torch.zeros(len(idxs))
                out[torch.tensor(group[i].root_idxs)] = scores[torch.tensor(idxs)].float()
                return out
        return None


def prune_channels(
    model: Any,
    image_size: int,
    ratio: float,
    round_to: int = 8,
    scope: PruneScope = PruneScope.EXPANSION,
    pixels: np.ndarray | None = None,
    preprocessing: Preprocessing | None = None,
) -> Any:
    """Remove `ratio` of the channels of every prunable layer group in `scope`, in place. With
    `pixels` (N, H, W, 3 uint8) and their `preprocessing` (expansion scope), the channels that
    contribute least to their block's output on those images go; otherwise the smallest weights
    (L2 group magnitude). The classification head always keeps its outputs."""
    import torch
    import torch_pruning as tp

    if not 0.0 < ratio < 0.9:
        raise ConfigError(f"Pruning ratio must be between 0 and 0.9, not {ratio}; try --prune 0.4.")
    model.eval()
    importance: Any = tp.importance.GroupMagnitudeImportance(p=2)
    if scope is PruneScope.EXPANSION:
        inner = _expansion_layers(model)
        if not inner:
            raise ConfigError(
                f"{type(model.backbone).__name__} has no inverted-residual blocks to prune inside; "
                "export an EfficientNet or MobileNet model, or prune every layer group."
            )
        ignored = [
            layer
            for layer in model.modules()
            if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear) and id(layer) not in inner
        ]
        if pixels is not None and preprocessing is not None:
            importance = _ContributionImportance(
                _contributions(model, _images(pixels, preprocessing))
            )
    else:
        ignored = [model.head]
    pruner = tp.pruner.BasePruner(
        model,
        torch.zeros(1, 3, image_size, image_size),
        importance=importance,
        pruning_ratio=ratio,
        ignored_layers=ignored,
        round_to=round_to,
    )
    pruner.step()
    model.embedding_dim = model.head.in_features
    return model


def _rows(tensor: Any, count: int, seed: int) -> Any:
    """(rows, channels): `count` seeded positions of an (N, C, H, W) map, the same for any map
    of that shape."""
    import torch

    flat = tensor.permute(0, 2, 3, 1).reshape(-1, tensor.shape[1])
    if len(flat) <= count:
        return flat
    pick = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[:count]
    return flat[pick]


def _pointwise(layer: Any) -> bool:
    import torch

    return isinstance(layer, torch.nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1


def recover(
    pruned: Any,
    reference: Any,
    preprocessing: Preprocessing,
    pixels: np.ndarray,
    rows_per_block: int = 20_000,
    ridge: float = 1e-3,
) -> dict[str, float]:
    """Refit the projection of every pruned inverted-residual block by ridge least squares, so
    that on `pixels` (N, H, W, 3 uint8: training images) the block reproduces the output of the
    unpruned `reference` block (its residual sum included), in one forward pass in which each
    block sees what the repaired blocks before it produce; then the same for the 1×1 convolution
    that makes the embedding (EfficientNet's `conv_head`). BatchNorm and the head stay as they are.
    Returns the mean relative error of the projections' outputs before and after the refit."""
    import torch

    if pruned.embedding_dim != reference.embedding_dim:
        raise ConfigError(
            f"The pruned embedding has {pruned.embedding_dim} dimensions but the reference "
            f"{reference.embedding_dim}; prune with the expansion scope, which keeps the embedding."
        )
    images = _images(pixels, preprocessing)
    blocks = list(zip(_inverted_residuals(reference), _inverted_residuals(pruned), strict=True))
    targets: dict[int, Any] = {}
    inputs: dict[tuple[str, int], Any] = {}

    def keep(store: dict, key: Any, tensor: Any, n: int) -> None:
        store[key] = _rows(tensor, rows_per_block, n)

    hooks = []
    for n, (ref, _) in enumerate(blocks):
        hooks.append(
            ref.conv_pwl.register_forward_hook(
                lambda layer, args, out, n=n: keep(targets, n, out, n)
            )
        )
        hooks.append(
            ref.register_forward_pre_hook(
                lambda block, args, n=n: keep(inputs, ("reference", n), args[0], n)
            )
        )
    # The 1×1 convolution that widens the last block into the embedding keeps its shape, but
    # refitting it too hands the head features as close to the reference's as a linear map gets.
    last = None
    if all(_pointwise(getattr(m.backbone, "conv_head", None)) for m in (reference, pruned)):
        last = (reference.backbone.conv_head, pruned.backbone.conv_head)
        hooks.append(
            last[0].register_forward_hook(
                lambda layer, args, out: keep(targets, len(blocks), out, len(blocks))
            )
        )
    errors: dict[str, list[float]] = {"before": [], "after": []}

    def refit(n: int, layer: Any, block: Any, x_map: Any) -> None:
        x = _rows(x_map, rows_per_block, n).double()
        y = targets[n].double()
        if (
            block is not None and block.has_skip
        ):  # also undo the drift the residual stream brings from earlier blocks
            bn = block.bn3
            gain = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().double()
            drift = inputs[("reference", n)].double() - inputs[("pruned", n)].double()
            y = y + drift / gain.sign().mul(gain.abs().clamp_min(1e-3))
        w = layer.weight.detach().flatten(1).double()  # (out, in)
        gram = x.T @ x
        gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        solved = torch.linalg.solve(gram, x.T @ y).T
        scale = y.pow(2).mean().clamp_min(1e-12)
        errors["before"].append(float((x @ w.T - y).pow(2).mean() / scale))
        errors["after"].append(float((x @ solved.T - y).pow(2).mean() / scale))
        layer.weight.data.copy_(solved.reshape(layer.weight.shape).to(layer.weight.dtype))

    try:
        with torch.no_grad():
            reference.eval().embed(images)
            for hook in hooks:
                hook.remove()
            hooks = []
            for n, (_, block) in enumerate(blocks):
                hooks.append(
                    block.register_forward_pre_hook(
                        lambda block, args, n=n: keep(inputs, ("pruned", n), args[0], n)
                    )
                )
                hooks.append(
                    block.conv_pwl.register_forward_pre_hook(
                        lambda layer, args, n=n, block=block: refit(n, layer, block, args[0])
                    )
                )
            if last is not None:
                hooks.append(
                    last[1].register_forward_pre_hook(
                        lambda layer, args: refit(len(blocks), layer, None, args[0])
                    )
                )
            pruned.eval().embed(images)
    finally:
        for hook in hooks:
            hook.remove()
    return {key: float(np.mean(values)) for key, values in errors.items()}


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
    from visionline.export._onnx import (
        batch1_latencies_ms,
        export_onnx,
        onnx_predict,
        onnx_session,
    )

    with tempfile.TemporaryDirectory(prefix="visionline-prune-") as tmp:
        path = export_onnx(model, preprocessing.size, Path(tmp) / "model.onnx", temperature)
        session = onnx_session(path, threads)
        times = batch1_latencies_ms(session, preprocessing.size, runs)
        metrics: dict[str, float] = {}
        if val is not None and val.is_defect.any() and (~val.is_defect).any():
            probs, _ = onnx_predict(session, preprocessing.normalize(val.pixels))
            scores = 1.0 - probs[:, 0]
            threshold = threshold_for_false_reject_rate(scores[~val.is_defect], target_frr)
            metrics = operating_metrics(scores, val.is_defect, threshold)
        return ModelFootprint(
            count_params(model), path.stat().st_size, float(np.median(times)), metrics
        )
