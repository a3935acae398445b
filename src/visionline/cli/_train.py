"""`visionline train`: fit an inspection model on a dataset version, tracked in MLflow.

Runs unchanged under `torchrun --nproc_per_node N --no-python visionline train ...` for DDP.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from visionline.cli._common import ProjectOption, console, load_project
from visionline.errors import ConfigError


class Method(str, Enum):
    """What `visionline train` fits."""

    SUPERVISED = "supervised"
    ANOMALY = "anomaly"


_ANOMALY_OPTIONS = ("backbone", "pretrained", "image_size", "batch_size", "seed")
"""Options an anomaly fit shares with supervised training; the others are refused."""


def train(
    data: Annotated[
        str, typer.Option("--data", "-d", help="Dataset version id (or unique prefix).")
    ],
    method: Annotated[
        Method,
        typer.Option(
            help="supervised: a classifier on labelled images; anomaly: a memory bank fitted on "
            "good images only (what 'visionline anomaly fit' does; --config takes its settings)."
        ),
    ] = Method.SUPERVISED,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML file of TrainConfig settings (head_epochs, finetune_blocks, features, ...).",
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="efficientnet_lite0/1/2 (offline ImageNet weights), mobilenetv3_small_100, "
            "mobilenetv3_large_100, resnet18, resnet50 or convnext_atto."
        ),
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="Starting weights: imagenet, none, or a checkpoint path.")
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Most fine-tuning epochs (stage 2, early-stopped on val); the head's stage 1 "
            "runs head_epochs (--config)."
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per optimiser step.")] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Fine-tuning learning rate of the head (backbone: lr × backbone_lr_mult); "
            "stage 1 uses head_lr."
        ),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Input size in pixels (default: the project goal).")
    ] = None,
    freeze_epochs: Annotated[
        int | None,
        typer.Option(
            help="Fine-tuning epochs with the whole backbone frozen before the top blocks train "
            "(default 0: stage 1 has fitted the head already)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed; equal seeds give equal runs.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Distil from this teacher: a model.pt path, runs:/<id> or models:/<name>@alias."
        ),
    ] = None,
    kd_alpha: Annotated[
        float | None, typer.Option(help="Weight of the teacher's soft targets (0-1).")
    ] = None,
    kd_temperature: Annotated[
        float | None, typer.Option(help="Softmax temperature of the distillation loss.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the interrupted run in --out (or the latest)."),
    ] = False,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: the project's sqlite db).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory.")] = None,
    project_dir: ProjectOption = None,
) -> None:
    """Train an inspection model: a head on cached frozen embeddings, then top-block fine-tuning
    kept only when it beats the head on val (recall at the false-reject goal)."""
    overrides = {
        "backbone": backbone,
        "pretrained": pretrained,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "image_size": image_size,
        "freeze_epochs": freeze_epochs,
        "seed": seed,
        "device": device,
        "teacher": teacher,
        "kd_alpha": kd_alpha,
        "kd_temperature": kd_temperature,
    }
    if method is Method.ANOMALY:
        _fit_anomaly(data, config, overrides, resume, tracking_uri, out, project_dir)
        return
    if resume and (config is not None or any(v is not None for v in overrides.values())):
        given = [f"--{k.replace('_', '-')}" for k, v in overrides.items() if v is not None]
        raise ConfigError(
            f"--resume continues with the run's saved settings; drop {', '.join(given) or '--config'}."
        )
    from visionline.data import DatasetRepo

    project = load_project(project_dir)
    version = DatasetRepo(project).get(data)
    # torch comes in here, after the checks above, so a missing project or version fails at once
    from visionline.train import fit, load_train_config
    from visionline.train._distributed import dist_context

    settings = load_train_config(config, **overrides)
    result = fit(settings, version, project, out_dir=out, resume=resume, tracking_uri=tracking_uri)
    if not dist_context().is_main:
        return
    goal = project.config.goals.operating_false_reject_rate
    best = result.best_metrics
    console.print(f"[green]MLflow run[/green] {result.run_id}")
    console.print(
        f"best epoch {result.best_epoch + 1}: val defect recall {best['val_defect_recall']:.3f} "
        f"at false-reject rate ≤ {goal:g} (threshold {best['val_threshold']:.4f}), "
        f"val accuracy {best['val_accuracy']:.3f}"
        + ("  [dim](stopped early)[/dim]" if result.stopped_early else "")
    )
    console.print(f"model: {result.model_path}")


def _fit_anomaly(
    data: str,
    config: Path | None,
    overrides: dict[str, Any],
    resume: bool,
    tracking_uri: str | None,
    out: Path | None,
    project_dir: Path | None,
) -> None:
    """`train --method anomaly`: the anomaly fit, tracked in the same MLflow experiment."""
    refused = [k for k, v in overrides.items() if v is not None and k not in _ANOMALY_OPTIONS]
    if resume:
        refused.append("resume")
    if refused:
        given = ", ".join(f"--{name.replace('_', '-')}" for name in refused)
        raise ConfigError(
            f"{given} only apply to supervised training; drop them for --method anomaly "
            "(its settings are AnomalyConfig fields in --config)."
        )
    from visionline.anomaly import load_anomaly_config
    from visionline.cli._anomaly import run_fit

    shared = {k: overrides[k] for k in _ANOMALY_OPTIONS}
    run_fit(load_anomaly_config(config, **shared), data, None, tracking_uri, out, project_dir)
