"""Stage 1 of the training recipe: a head trained to convergence on cached frozen embeddings,
and the top-blocks selection that stage 2 fine-tunes.

One frozen warm-up epoch of full forward passes (23 steps on the magnetic tiles) leaves a linear
head at chance, while a head fitted on the pooled ImageNet embeddings of the same images already
separates unseen tiles (benchmarks/quality.py). The features of the frozen backbone (pooled vectors, or
feature maps for a patch head) are computed once per image and fixed view (flips, quarter
turns), cached on disk keyed by the image's content hash, the backbone, its starting weights,
the kind of features and the preprocessing, so a rerun or a
second training arm reuses them; hundreds of head epochs over those vectors then cost less than
one forward pass over the images.

With `mask_weight`, a patch head also learns where the defects are: the masks of the records
go through the same resize and the same fixed views as their images and are pooled to the
map's cells (`mask_cell_targets`, cheap next to one forward pass, so not cached).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from visionline.errors import TrainingError
from visionline.train._config import Balance, TrainConfig
from visionline.train._data import inverse_frequency_weights
from visionline.train._features import MaskTarget, cell_mask_loss, cell_targets

if TYPE_CHECKING:
    from visionline.data import BlobStore, ImageRecord
    from visionline.preprocessing import Preprocessing
    from visionline.train._checkpoint import Progress
    from visionline.train._model import InspectionModel

__all__ = [
    "EMBEDDING_FORMAT",
    "VIEWS",
    "EmbeddingCache",
    "backbone_blocks",
    "fit_head",
    "freeze_below_top_blocks",
    "logit_metrics",
    "mask_cell_targets",
    "train_head",
]

EMBEDDING_FORMAT = "visionline.embedding/1"

VIEWS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda x: x,
    lambda x: x[:, :, ::-1],  # horizontal flip of (N, H, W, C)
    lambda x: x[:, ::-1],  # vertical flip
    lambda x: x[:, ::-1, ::-1],  # half turn
    lambda x: np.rot90(x, 1, axes=(1, 2)),  # quarter turns
    lambda x: np.rot90(x, 3, axes=(1, 2)),
    lambda x: x.transpose(0, 2, 1, 3),  # transposes: the rest of the square's symmetries
    lambda x: np.rot90(x, 2, axes=(1, 2)).transpose(0, 2, 1, 3),
)
"""The fixed views whose embeddings stage 1 trains on, in order: `embedding_views: k` takes the
first k. Exact pixel permutations only, so no defect is cropped or blurred away."""


def _backbone_identity(model: InspectionModel) -> str:
    """A digest of the frozen backbone's weights and buffers: a head-only checkpoint (a retrain's
    starting point) shares its embeddings with the ImageNet start it was trained on."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """`model.features` of a frozen backbone per (image sha256, view), in memory and as one
    `.npy` per image and view under `cache_dir/embeddings/<key>/`, where the key hashes the
    backbone, the digest of its weights, the kind of features (pooled vector or patch map) and
    the preprocessing (size, resize mode, mean/std)."""

    def __init__(
        self,
        model: InspectionModel,
        backbone: str,
        preprocessing: Preprocessing,
        cache_dir: Path | None,
        batch_size: int = 64,
    ):
        self.model = model
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        identity = {
            "format": EMBEDDING_FORMAT,
            "backbone": backbone,
            "weights": _backbone_identity(model),
            "features": "patches" if model.patches else "pooled",
            "preprocessing": preprocessing.to_dict(),
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
        self.directory = None if cache_dir is None else cache_dir / "embeddings" / key
        self._memory: dict[tuple[str, int], np.ndarray] = {}
        self.computed = 0

    def _path(self, sha: str, view: int) -> Path | None:
        return None if self.directory is None else self.directory / f"{sha}-{view}.npy"

    def _lookup(self, sha: str, view: int) -> np.ndarray | None:
        found = self._memory.get((sha, view))
        path = self._path(sha, view)
        if found is None and path is not None and path.is_file():
            found = self._memory[(sha, view)] = np.load(path)
        return found

    def _store(self, sha: str, view: int, vector: np.ndarray) -> None:
        self._memory[(sha, view)] = vector
        path = self._path(sha, view)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, vector)
            tmp.replace(path)

    @torch.no_grad()
    def embed(
        self,
        records: Sequence[ImageRecord],
        pixels_nhwc: np.ndarray,
        views: int,
        device: torch.device,
        advance: Callable[[int], Any] | None = None,
    ) -> np.ndarray:
        """(views, N, D) float32 embeddings of `pixels_nhwc` (the decoded `records`, in order),
        (views, N, D, H, W) for patch features; computes only what the cache lacks, with the
        backbone in eval mode."""
        self.model.eval()
        shas = [r.sha256 for r in records]
        out: list[np.ndarray] = []
        for view in range(views):
            missing = [i for i, sha in enumerate(shas) if self._lookup(sha, view) is None]
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                batch = np.ascontiguousarray(VIEWS[view](pixels_nhwc[chunk]))
                images = torch.from_numpy(self.preprocessing.normalize(batch)).to(device)
                images = images.contiguous(memory_format=torch.channels_last)
                vectors = self.model.features(images).float().cpu().numpy()
                for i, vector in zip(chunk, vectors):
                    self._store(shas[i], view, vector)
                self.computed += len(chunk)
                if advance:
                    advance(len(chunk))
            out.append(np.stack([self._memory[(sha, view)] for sha in shas]))
        return np.stack(out)


def mask_cell_targets(
    records: Sequence[ImageRecord],
    labels: np.ndarray,
    blobs: BlobStore,
    preprocessing: Preprocessing,
    views: int,
    grid: tuple[int, int],
    target: MaskTarget,
) -> np.ndarray:
    """(views, N, h, w) cell targets of `records` for maps of `grid` cells: each mask resized
    (and letterboxed) as its image is, put through the same `VIEWS`, pooled per cell; a good
    image (label 0) without a mask is all zeros, a defect image without one (or with an empty
    one, such as a defect too faint to mark) all NaN (unknown)."""
    from visionline.data import mask_in_model_frame, record_mask

    size = preprocessing.size
    frames = np.full((len(records), size, size), np.nan, dtype=np.float32)
    for i, (record, label) in enumerate(zip(records, labels)):
        full = record_mask(blobs, record)
        if full is not None:
            frame = mask_in_model_frame(full, preprocessing)
            if frame.any() or label == 0:  # an empty mask of a defect says nothing about where
                frames[i] = frame
        elif label == 0:
            frames[i] = 0.0
    return np.stack(
        [cell_targets(VIEWS[v](frames[..., None])[..., 0], grid, target) for v in range(views)]
    )


def logit_metrics(
    logits: torch.Tensor, labels: np.ndarray, max_false_reject_rate: float
) -> dict[str, float]:
    """Val loss, accuracy, defect recall at the false-reject budget and its threshold of
    (N, C) logits whose class 0 is `good`."""
    from visionline.evaluate import recall_at_false_reject_rate

    target = torch.from_numpy(labels)
    probs = logits.softmax(dim=1)
    defect_score = (1.0 - probs[:, 0]).numpy()
    is_defect = labels != 0
    recall, threshold = recall_at_false_reject_rate(defect_score, is_defect, max_false_reject_rate)
    return {
        "val_loss": float(nn.functional.cross_entropy(logits, target)),
        "val_accuracy": float((logits.argmax(1) == target).float().mean()),
        "val_defect_recall": recall if not math.isnan(recall) else 0.0,
        "val_threshold": threshold,
    }


def train_head(
    model: InspectionModel,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    class_weight: torch.Tensor | None,
    label_smoothing: float,
    score: Callable[[torch.Tensor, np.ndarray], dict[str, float]],
    seed: int,
    soft_targets: tuple[torch.Tensor, float, float] | None = None,
    masks: tuple[np.ndarray, float] | None = None,
) -> dict[str, float]:
    """Fit `model.head` (through its dropout) on embeddings with AdamW and a cosine schedule,
    keep the epoch whose val score (defect recall at the false-reject goal, then -val loss) is
    best, and return that epoch's val metrics. `score(logits, labels)` evaluates val logits.
    Feature maps (N, D, H, W) are flipped at random per batch, as the images could have been,
    and standardise a patch head's input first. `soft_targets` (a teacher's logits per train
    row, α, temperature) mixes knowledge distillation into the loss, as `DistillationLoss` does;
    with them, rows labelled -1 are unlabelled images that learn from the teacher alone (the
    label loss averages over the labelled rows of a batch, the soft loss over all of them).
    `masks` (per-cell targets (N, H, W) of every train row, NaN where unknown, and a weight)
    adds `cell_mask_loss` of a patch head's cell logits, flipped with their maps."""
    from visionline.train._distill import kd_loss

    unlabelled = int((train_y < 0).sum())
    if unlabelled and soft_targets is None:
        raise TrainingError(
            f"{unlabelled} train rows have no label (-1); pass a teacher's soft_targets for "
            "them or drop them."
        )
    if masks is not None and (
        not model.patches or masks[0].shape != (train_x.shape[0], *train_x.shape[2:])
    ):
        raise TrainingError(
            "mask targets need a patch head and one (H, W) target per train map; use "
            "features: patches and targets of the train rows' map grid."
        )
    if soft_targets is not None and len(soft_targets[0]) != len(train_y):
        raise TrainingError(
            f"soft_targets has {len(soft_targets[0])} rows for {len(train_y)} train rows; "
            "give the teacher's logits of every train row, in the same order."
        )

    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    y = torch.from_numpy(train_y)
    val = torch.from_numpy(np.ascontiguousarray(val_x, dtype=np.float32))
    cells_y, mask_weight = (None, 0.0) if masks is None else (torch.from_numpy(masks[0]), masks[1])
    if model.patches:
        model.head.standardise(x)
    criterion = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=label_smoothing)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, math.ceil(len(x) / batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    best: dict[str, float] = {}
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(epochs):
        model.head.train()
        model.dropout.train()
        total = 0.0
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            inputs = x[batch]
            flips: list[int] = []
            if inputs.ndim == 4:
                flips = [d for d in (2, 3) if torch.rand(1, generator=generator) < 0.5]
                inputs = inputs.flip(flips) if flips else inputs
            cells = model.head.cell_logits(inputs) if cells_y is not None else None
            logits = model.head.pool(cells) if cells is not None else model.classify(inputs)
            labelled = y[batch] >= 0
            loss = (
                criterion(logits[labelled], y[batch][labelled])
                if labelled.any()
                else logits.sum() * 0.0
            )
            if cells is not None and cells_y is not None:
                targets = cells_y[batch]
                targets = targets.flip([d - 1 for d in flips]) if flips else targets
                loss = loss + mask_weight * cell_mask_loss(cells, targets)
            if soft_targets is not None:
                teacher, alpha, temperature = soft_targets
                loss = (1 - alpha) * loss + alpha * kd_loss(logits, teacher[batch], temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch)
        model.head.eval()
        model.dropout.eval()
        with torch.no_grad():
            metrics = score(model.classify(val), val_y)
        metrics = {"head_epoch": float(epoch), "head_train_loss": total / len(x), **metrics}
        if not best or (metrics["val_defect_recall"], -metrics["val_loss"]) > (
            best["val_defect_recall"],
            -best["val_loss"],
        ):
            best = metrics
            best_state = {k: v.detach().clone() for k, v in model.head.state_dict().items()}
    model.head.load_state_dict(best_state)
    return best


def fit_head(
    model: InspectionModel,
    config: TrainConfig,
    train: tuple[Sequence[ImageRecord], np.ndarray, np.ndarray],
    val: tuple[Sequence[ImageRecord], np.ndarray, np.ndarray],
    preprocessing: Preprocessing,
    cache_dir: Path | None,
    device: torch.device,
    max_false_reject_rate: float,
    bar: Progress,
    blobs: BlobStore | None = None,
) -> dict[str, float]:
    """Stage 1 inside `fit`: embed (records, pixels, labels) of train (`config.embedding_views`
    views) and val (identity) through the frozen backbone, cached, then `train_head`; the model's
    head ends at its best val epoch and the returned dict holds that epoch's val metrics, how
    many embeddings were computed (not cached) and the seconds each part took. With
    `config.mask_weight`, the train records' masks (read from `blobs`) teach the cells, and a
    train split without any mask is refused before the backbone runs (a retrain extends the
    champion's version, whose masks it keeps)."""
    train_records, train_pixels, train_y = train
    val_records, val_pixels, val_y = val
    masked = sum(r.mask_sha256 is not None for r in train_records)
    if config.mask_weight > 0 and (not masked or blobs is None):
        raise TrainingError(
            f"mask_weight {config.mask_weight:g} teaches the cells from defect masks, but no "
            "train image carries one; ingest the masks (data add --masks) or set mask_weight: 0."
        )
    cache = EmbeddingCache(
        model,
        config.backbone.value,
        preprocessing,
        cache_dir,
        config.eval_batch_size,
    )
    views = config.embedding_views
    bar.start("embedding (frozen backbone)", total=len(train_records) * views + len(val_records))
    started = time.perf_counter()
    train_x = cache.embed(train_records, train_pixels, views, device, bar.update)
    val_x = cache.embed(val_records, val_pixels, 1, device, bar.update)[0]
    embedded = time.perf_counter()
    masks = None
    if config.mask_weight > 0 and blobs is not None:
        targets = mask_cell_targets(
            train_records, train_y, blobs, preprocessing, views,
            (int(train_x.shape[-2]), int(train_x.shape[-1])), config.mask_target,
        )
        masks = (targets.reshape(-1, *targets.shape[2:]), config.mask_weight)
        bar.log(f"head: cells taught where the defects are by {masked} masks")
    model.head.to("cpu")
    weight = (
        inverse_frequency_weights(train_y, int(model.head.out_features))
        if config.balance is not Balance.NONE
        else None
    )
    best = train_head(
        model,
        train_x.reshape(-1, *train_x.shape[2:]),
        np.tile(train_y, views),
        val_x,
        val_y,
        epochs=config.head_epochs,
        lr=config.head_lr,
        weight_decay=config.head_weight_decay,
        batch_size=config.batch_size,
        class_weight=weight,
        label_smoothing=config.label_smoothing,
        score=lambda logits, labels: logit_metrics(logits, labels, max_false_reject_rate),
        seed=config.seed,
        masks=masks,
    )
    model.head.to(device)
    best.update(
        embedded_images=float(cache.computed),
        embed_seconds=embedded - started,
        fit_seconds=time.perf_counter() - embedded,
    )
    bar.log(
        f"head: best of {config.head_epochs} epochs on {len(train_x[0])}x{views} cached "
        f"embeddings ({cache.computed} computed): val loss {best['val_loss']:.4f}  "
        f"recall@FRR{max_false_reject_rate:g} {best['val_defect_recall']:.3f}"
    )
    return best


def backbone_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's residual blocks, input to output: EfficientNet/MobileNet `blocks`, ResNet
    `layer1..4`, ConvNeXt `stages[*].blocks`; empty for an architecture without such blocks."""
    if isinstance(getattr(backbone, "blocks", None), nn.Sequential):
        return [block for stage in backbone.blocks for block in stage]
    if all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):
        return [block for i in range(1, 5) for block in getattr(backbone, f"layer{i}")]
    if hasattr(backbone, "stages"):
        return [block for stage in backbone.stages for block in stage.blocks]
    return []


def freeze_below_top_blocks(backbone: nn.Module, top: int | None) -> list[nn.Module]:
    """Make only the top `top` blocks (plus the layers after the last block, such as the head
    convolution) trainable; None trains the whole backbone, 0 none of it. Returns the frozen
    modules, which the training loop keeps in eval mode while the rest trains."""
    if top is None:
        for param in backbone.parameters():
            param.requires_grad_(True)
        return []
    blocks = backbone_blocks(backbone)
    cut = max(0, len(blocks) - top)
    owner: dict[int, int] = {}
    for index, block in enumerate(blocks):
        for param in block.parameters():
            owner[id(param)] = index
    named = list(backbone.named_parameters())
    after_last = max((i for i, (_, p) in enumerate(named) if id(p) in owner), default=-1)
    frozen: list[nn.Module] = list(blocks[:cut])
    for position, (_, param) in enumerate(named):
        if id(param) in owner:
            trainable = owner[id(param)] >= cut
        else:  # layers after the last block train with any block; the stem only with all
            trainable = top > 0 and (position > after_last or cut == 0)
        param.requires_grad_(trainable)
    for module in backbone.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            frozen.append(module)
    return frozen
