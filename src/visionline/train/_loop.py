"""The training loop: `fit(config, dataset_version, project) -> TrainResult`.

Warm-up with a frozen backbone, then fine-tuning with a lower backbone learning rate; early
stopping on validation defect recall at the project's false-reject budget; an atomic checkpoint
every epoch for `--resume`; MLflow tracking; DDP under torchrun; AMP on CUDA. Hooks let tuning
(per-epoch metrics, pruning by raising) and distillation (a teacher term in the loss) reuse it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

from visionline.config import Project
from visionline.errors import DataError, TrainingError
from visionline.preprocessing import Preprocessing
from visionline.train._backbones import (
    NO_WEIGHTS,
    load_matching_head,
    load_pretrained,
    normalization_for,
)
from visionline.train._checkpoint import (
    BEST_MODEL,
    LAST_CHECKPOINT,
    Progress,
    default_runs_dir,  # noqa: F401  (re-exported for tuning)
    load_state,
    prepare_out_dir,
    save_state,
)
from visionline.train._config import Balance, Schedule, TrainConfig
from visionline.train._data import (
    AugmentedPixels,
    PixelCache,
    build_augment,
    class_counts,
    eval_batches,
    inverse_frequency_weights,
    normalize_batch,
    split_labels,
)
from visionline.train._distributed import (
    DistContext,
    barrier,
    broadcast_buffers,
    broadcast_object,
    dist_context,
    init_process_group,
    resolve_device,
)
from visionline.train._head import fit_head, freeze_below_top_blocks, logit_metrics
from visionline.train._model import InspectionModel, ModelSpec, build_model, save_model
from visionline.train._tracking import Tracker, environment_tags, git_commit

if TYPE_CHECKING:
    from visionline.data import DatasetVersion


EpochCallback = Callable[[int, dict[str, float]], None]
"""Called on every rank after each epoch with its metrics; raise (e.g. optuna.TrialPruned) to stop."""


class TeacherHook(Protocol):
    """Adds a teacher term to the loss: called with the normalised training batch, the student's
    logits, the labels and the student's own loss; returns the loss to optimise."""

    def __call__(
        self, images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor: ...


@dataclass
class TrainResult:
    """What a finished `fit` produced."""

    run_id: str | None
    best_epoch: int
    best_metrics: dict[str, float]
    model_path: Path
    out_dir: Path
    spec: ModelSpec
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    last_model: InspectionModel | None = None
    """The in-memory model after the final epoch (the best one is at `model_path`)."""
    head_metrics: dict[str, float] | None = None
    """Val metrics of the stage-1 head on frozen embeddings; `best_epoch` is -1 when no
    fine-tuning epoch beat it (the saved model is then the stage-1 model)."""


def _resolve_version(project: Project, dataset_version: DatasetVersion | str) -> DatasetVersion:
    if not isinstance(dataset_version, str):
        return dataset_version
    from visionline.data import DatasetRepo

    return DatasetRepo(project).get(dataset_version)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, torch.OutOfMemoryError)
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def _schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule is Schedule.ONE_CYCLE:
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def _amp_settings(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype, use GradScaler): bf16 where the GPU supports it, else fp16 with a scaler."""
    if device.type != "cuda" or not enabled:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


@torch.no_grad()
def evaluate_split(
    model: InspectionModel,
    pixels: np.ndarray,
    labels: np.ndarray,
    preprocessing: Preprocessing,
    device: torch.device,
    batch_size: int,
    max_false_reject_rate: float,
) -> dict[str, float]:
    """Loss, accuracy and defect recall at the false-reject budget, in FP32 like the edge model."""
    model.eval()
    logits = torch.cat(
        [
            model(batch.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()
            for _, batch in eval_batches(pixels, preprocessing, batch_size)
        ]
    )
    return logit_metrics(logits, labels, max_false_reject_rate)


def set_backbone_mode(
    model: InspectionModel,
    frozen: bool,
    freeze_batchnorm: bool,
    frozen_modules: Sequence[nn.Module] = (),
) -> None:
    """After `train()`: a frozen backbone runs in eval mode, and so do the `frozen_modules` below
    the fine-tuned top blocks; with `freeze_batchnorm` a fine-tuned backbone keeps its BatchNorm
    layers in eval mode, so their statistics stay the pretrained ones instead of following small
    batches of images unlike ImageNet."""
    if frozen:
        model.backbone.eval()
        return
    for module in frozen_modules:
        module.eval()
    if freeze_batchnorm:
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _set_backbone_trainable(
    model: InspectionModel, trainable: bool, top_blocks: int | None
) -> list[nn.Module]:
    """Freeze the whole backbone, or all but its top blocks; returns the frozen modules."""
    if not trainable:
        for param in model.backbone.parameters():
            param.requires_grad_(False)
        return [model.backbone]
    return freeze_below_top_blocks(model.backbone, top_blocks)


def _wrap(model: InspectionModel, ctx: DistContext, device: torch.device) -> nn.Module:
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def fit(
    config: TrainConfig,
    dataset_version: DatasetVersion | str,
    project: Project,
    *,
    out_dir: Path | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    on_epoch_end: EpochCallback | None = None,
    teacher: TeacherHook | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    progress: bool = True,
    log_model: bool = True,
) -> TrainResult:
    """Train an `InspectionModel` on the train split of `dataset_version`, select on its val split.

    The best epoch (defect recall at the false-reject goal, then val loss) is saved with
    `save_model` as `out_dir/model.pt`; `out_dir/last.pt` is the resumable state after each epoch.
    The MLflow run gets that checkpoint and, unless `log_model` is False (tuning trials, which
    are retrained from the best config), the model in MLflow's format for registration.
    """
    ctx = dist_context()
    device = resolve_device(config.device.value, ctx)
    owns_group = init_process_group(ctx, device)
    previous_determinism = torch.are_deterministic_algorithms_enabled()
    try:
        if config.deterministic:
            if device.type == "cuda":
                import os

                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        return _fit(
            config,
            dataset_version,
            project,
            ctx,
            device,
            out_dir,
            resume,
            tracking_uri,
            on_epoch_end,
            teacher,
            run_name,
            tags or {},
            progress,
            log_model,
        )
    finally:
        torch.use_deterministic_algorithms(previous_determinism)
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _require_good_and_defects(short_id: str, train_y: np.ndarray, val_y: np.ndarray) -> None:
    """Both splits need good and defect images: the model learns, and the val split compares
    epochs by, defect recall at a false-reject threshold set on good images."""
    why = {
        ("train", "good"): "the model cannot learn what passes",
        ("train", "defect"): "the model cannot learn what fails",
        ("val", "good"): "no false-reject threshold can be set",
        ("val", "defect"): "epochs cannot be compared on defect recall",
    }
    for split, labels in (("train", train_y), ("val", val_y)):
        for kind, present in (("good", (labels == 0).any()), ("defect", (labels != 0).any())):
            if not present:
                raise DataError(
                    f"The {split} split of {short_id} has no {kind} images, so {why[split, kind]}; "
                    f"add {kind} images or re-split with 'visionline data split {short_id}'."
                )


def _fit(
    config: TrainConfig,
    dataset_version: DatasetVersion | str,
    project: Project,
    ctx: DistContext,
    device: torch.device,
    out_dir: Path | None,
    resume: bool,
    tracking_uri: str | None,
    on_epoch_end: EpochCallback | None,
    teacher: TeacherHook | None,
    run_name: str | None,
    tags: dict[str, str],
    progress: bool,
    log_model: bool,
) -> TrainResult:
    from visionline.data import DatasetRepo

    goals = project.config.goals
    if config.image_size is None:
        config = config.model_copy(update={"image_size": goals.image_size})
    version = _resolve_version(project, dataset_version)
    class_names = project.config.model_classes()
    train_records, train_y = split_labels(version, "train", class_names)
    val_records, val_y = split_labels(version, "val", class_names)
    _require_good_and_defects(version.short_id, train_y, val_y)
    out = prepare_out_dir(project, out_dir, resume, version, config)
    state = load_state(out / LAST_CHECKPOINT, version) if resume else None
    if state is not None:
        config = TrainConfig.model_validate(state["config"])

    mean, std = normalization_for(config.backbone.value, config.pretrained)
    preprocessing = Preprocessing(
        size=config.image_size, resize_mode=config.resize_mode, mean=mean, std=std
    )
    spec = ModelSpec(
        config.backbone.value, class_names, preprocessing, config.pretrained, config.dropout,
        features=config.features.value,
    )
    _seed_everything(config.seed)
    model = build_model(spec)
    if state is None:
        load_pretrained(model.backbone, spec.backbone, config.pretrained)
        load_matching_head(model, config.pretrained, class_names)
    else:
        model.load_state_dict(state["model"])
    model.to(device, memory_format=torch.channels_last)  # oneDNN: depthwise convs ~1.6x faster
    if teacher is None and config.teacher is not None:
        from visionline.train._distill import distillation_hook

        teacher = distillation_hook(
            config.teacher,
            class_names,
            preprocessing,
            config.kd_alpha,
            config.kd_temperature,
            tracking_uri or project.tracking_uri,
            cache=config.augment == 0,
        )

    tracker = Tracker(
        tracking_uri or project.tracking_uri,
        project.config.name,
        enabled=ctx.is_main,
        log_model=log_model,
    )
    with Progress(progress and ctx.is_main) as bar:
        cache = PixelCache(
            DatasetRepo(project).blobs,
            preprocessing,
            project.cache_dir if config.cache_pixels else None,
        )
        bar.start("decoding images", total=len(train_records) + len(val_records))
        train_pixels = cache.stack(train_records, advance=lambda n: bar.update(n))
        val_pixels = cache.stack(val_records, advance=lambda n: bar.update(n))
        missing = [
            c for c, n in zip(class_names, class_counts(train_y, len(class_names))) if n == 0
        ]
        if missing:
            bar.log(
                f"[yellow]warning:[/yellow] no training images of {', '.join(missing)}; "
                "the model cannot learn those classes."
            )

        dataset = AugmentedPixels(
            train_pixels,
            train_y,
            build_augment(config.augment, config.image_size, config.augment_policy.value),
        )
        per_rank = math.ceil(len(dataset) / ctx.world_size)
        drop_last = per_rank > config.batch_size
        steps_per_epoch = per_rank // config.batch_size if drop_last else 1
        criterion = nn.CrossEntropyLoss(
            weight=inverse_frequency_weights(train_y, len(class_names)).to(device)
            if config.balance is Balance.CLASS_WEIGHT
            else None,
            label_smoothing=config.label_smoothing,
        )
        head_metrics = None
        if state is None and config.head_epochs > 0 and config.pretrained != NO_WEIGHTS:
            head_metrics = fit_head(
                model,
                config,
                (train_records, train_pixels, train_y),
                (val_records, val_pixels, val_y),
                preprocessing,
                project.cache_dir if config.cache_pixels else None,
                device,
                goals.operating_false_reject_rate,
                bar,
                cache.blobs,
            )
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": list(model.backbone.parameters()),
                    "lr": config.backbone_lr,
                },
                {"params": list(model.head.parameters()), "lr": config.lr},
            ],
            weight_decay=config.weight_decay,
        )
        scheduler = _schedule(optimizer, config, config.epochs * steps_per_epoch)
        amp_dtype, use_scaler = _amp_settings(device, config.amp)
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

        history: list[dict[str, float]] = []
        best: dict[str, float] = {}
        best_epoch, bad_epochs, start_epoch = -1, 0, 0
        run_id = None
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            history, best, best_epoch = state["history"], state["best"], state["best_epoch"]
            bad_epochs, start_epoch, run_id = (
                state["bad_epochs"],
                state["epoch"] + 1,
                state["run_id"],
            )

        run_id = tracker.start(run_id, run_name)
        if head_metrics is not None:
            tracker.log_epoch({f"head_{k}": v for k, v in head_metrics.items()}, 0)
            best, best_epoch = dict(head_metrics), -1
            if ctx.is_main:
                save_model(
                    out / BEST_MODEL,
                    model,
                    spec,
                    dataset_version=version.id,
                    run_id=run_id,
                    epoch=-1,
                    metrics=head_metrics,
                )
        if state is None:
            extra = {
                "dataset_version": version.id,
                "dataset_name": version.name,
                "n_train": len(train_records),
                "n_val": len(val_records),
                "class_names": ",".join(class_names),
                "world_size": ctx.world_size,
                "max_false_reject_rate": goals.max_false_reject_rate,
                "threshold_false_reject_rate": goals.operating_false_reject_rate,
            }
            commit = git_commit(project.root)
            run_tags = {
                **environment_tags(str(device), ctx.world_size),
                "visionline.dataset_version": version.id,
                **tags,
            }
            if commit:
                run_tags["git_commit"] = commit
            tracker.log_setup(config, version, project.datasets_dir, extra, run_tags)
        out.mkdir(parents=True, exist_ok=True)
        if ctx.is_main:
            (out / "train_config.yaml").write_text(config.to_yaml())
            (out / "preprocessing.json").write_text(json.dumps(preprocessing.to_dict(), indent=2))

        epoch = start_epoch
        stopped_early = False
        try:
            wrapped, wrapped_frozen, frozen_modules = None, None, []
            epochs = (
                0 if config.finetune_blocks == 0 and head_metrics is not None else config.epochs
            )
            for epoch in range(start_epoch, epochs):
                frozen = epoch < config.freeze_epochs
                if wrapped is None or wrapped_frozen != frozen:
                    frozen_modules = _set_backbone_trainable(
                        model, not frozen, config.trained_blocks
                    )
                    wrapped, wrapped_frozen = _wrap(model, ctx, device), frozen
                metrics = _train_epoch(
                    wrapped,
                    model,
                    dataset,
                    config,
                    ctx,
                    device,
                    epoch,
                    frozen,
                    criterion,
                    optimizer,
                    scheduler,
                    scaler,
                    amp_dtype,
                    teacher,
                    preprocessing,
                    bar,
                    train_y,
                    frozen_modules,
                )
                broadcast_buffers(model, ctx)
                metrics.update(
                    evaluate_split(
                        model,
                        val_pixels,
                        val_y,
                        preprocessing,
                        device,
                        config.eval_batch_size,
                        goals.operating_false_reject_rate,
                    )
                )
                metrics = broadcast_object(metrics, ctx)
                history.append({"epoch": epoch, **metrics})
                tracker.log_epoch(metrics, epoch)
                score = (metrics["val_defect_recall"], -metrics["val_loss"])
                if not best or score > (best["val_defect_recall"], -best["val_loss"]):
                    best, best_epoch, bad_epochs = dict(history[-1]), epoch, 0
                    if ctx.is_main:
                        save_model(
                            out / BEST_MODEL,
                            model,
                            spec,
                            dataset_version=version.id,
                            run_id=run_id,
                            epoch=epoch,
                            metrics=metrics,
                        )
                else:
                    bad_epochs += 1
                if ctx.is_main:
                    save_state(
                        out / LAST_CHECKPOINT,
                        model,
                        optimizer,
                        scheduler,
                        scaler,
                        config,
                        version,
                        epoch,
                        history,
                        best,
                        best_epoch,
                        bad_epochs,
                        run_id,
                    )
                barrier(ctx)
                bar.log(
                    f"epoch {epoch + 1}/{config.epochs}  loss {metrics['train_loss']:.4f}  "
                    f"val loss {metrics['val_loss']:.4f}  acc {metrics['val_accuracy']:.3f}  "
                    f"recall@FRR{goals.operating_false_reject_rate:g} {metrics['val_defect_recall']:.3f}"
                )
                if on_epoch_end is not None:
                    on_epoch_end(epoch, metrics)
                if bad_epochs >= config.patience and epoch + 1 < config.epochs:
                    stopped_early = True
                    bar.log(f"early stop: no better val metric for {bad_epochs} epochs")
                    break
        except KeyboardInterrupt:
            tracker.end("KILLED")
            if not (out / LAST_CHECKPOINT).exists():  # --resume would find nothing to continue
                raise TrainingError(
                    f"Training interrupted before its first epoch finished in {out}; rerun the "
                    "same command without --resume to start again."
                ) from None
            raise TrainingError(
                f"Training interrupted; the checkpoint of epoch {epoch} is kept in {out}; rerun "
                f"with --resume --out {out} to continue."
            ) from None
        except BaseException:
            tracker.end("FAILED")
            raise

    result = TrainResult(
        run_id,
        best_epoch,
        best,
        out / BEST_MODEL,
        out,
        spec,
        history,
        stopped_early,
        model.eval(),
        head_metrics,
    )
    if ctx.is_main:
        from visionline.train._model import load_model

        best_model, _ = load_model(out / BEST_MODEL)
        (out / "history.json").write_text(json.dumps(history, indent=2))
        try:
            tracker.log_outputs(
                {
                    "checkpoint": out / BEST_MODEL,
                    "": out / "preprocessing.json",
                    "config": out / "train_config.yaml",
                },
                best_model,
                # two rows, so the traced model keeps a dynamic batch dimension
                preprocessing.normalize(np.repeat(val_pixels[:1], 2, axis=0)),
            )
        except BaseException:
            tracker.end("FAILED")
            raise
        tracker.end("FINISHED")
        (out / "result.json").write_text(
            json.dumps(
                {
                    "run_id": run_id,
                    "best_epoch": best_epoch,
                    "best_metrics": best,
                    "model_path": str(out / BEST_MODEL),
                    "stopped_early": stopped_early,
                },
                indent=2,
            )
        )
    barrier(ctx)
    return result


def _train_epoch(
    wrapped: nn.Module,
    model: InspectionModel,
    dataset: AugmentedPixels,
    config: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    epoch: int,
    frozen: bool,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    teacher: TeacherHook | None,
    preprocessing: Preprocessing,
    bar: Progress,
    labels: np.ndarray,
    frozen_modules: Sequence[nn.Module] = (),
) -> dict[str, float]:
    # Every epoch's randomness derives from (seed, epoch, rank), so a resumed run repeats it.
    _seed_everything(config.seed * 100_003 + epoch * 1_009 + ctx.rank)
    loader = _loader(dataset, config, ctx, epoch, labels)
    wrapped.train()
    set_backbone_mode(model, frozen, config.batchnorm_frozen, frozen_modules)
    bar.start(
        f"epoch {epoch + 1}/{config.epochs}" + (" (frozen)" if frozen else ""),
        total=len(loader),
        status="",
    )
    total_loss, seen, started = 0.0, 0, time.perf_counter()
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    )
    for images, targets in loader:
        try:
            images = normalize_batch(images.to(device, non_blocking=True), preprocessing)
            images = images.contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            with autocast:
                logits = wrapped(images)
                loss = criterion(logits.float(), targets)
                if teacher is not None:
                    loss = teacher(images, logits, targets, loss)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
        except RuntimeError as exc:
            if _is_oom(exc):
                raise TrainingError(
                    f"Out of memory at batch size {config.batch_size} on {device}; "
                    f"pass a smaller --batch-size (e.g. {max(1, config.batch_size // 2)})."
                ) from None
            raise
        if scaler.get_scale() >= scale:  # a shrunken fp16 scale means the step was skipped
            scheduler.step()
        if not math.isfinite(loss.item()):
            raise TrainingError(
                f"Training loss became {loss.item()} in epoch {epoch + 1}; lower --lr and rerun."
            )
        total_loss += loss.item() * len(targets)
        seen += len(targets)
        bar.update(1, status=f"loss {total_loss / seen:.4f}")
    elapsed = time.perf_counter() - started
    return {
        "train_loss": total_loss / max(seen, 1),
        "lr": optimizer.param_groups[1]["lr"],
        "train_images_per_s": seen * ctx.world_size / max(elapsed, 1e-9),
    }


def _loader(
    dataset: AugmentedPixels, config: TrainConfig, ctx: DistContext, epoch: int, labels: np.ndarray
) -> torch.utils.data.DataLoader:
    per_rank = math.ceil(len(dataset) / ctx.world_size)
    generator = torch.Generator().manual_seed(config.seed * 7_919 + epoch * 31 + ctx.rank)
    sampler: torch.utils.data.Sampler
    if config.balance is Balance.SAMPLER:
        counts = class_counts(labels, int(labels.max()) + 1)
        weights = torch.from_numpy(1.0 / counts[labels]).double()
        sampler = torch.utils.data.WeightedRandomSampler(
            weights, per_rank, replacement=True, generator=generator
        )
    elif ctx.enabled:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed
        )
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=per_rank > config.batch_size,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
