"""Deep entries: a linear head on frozen pooled embeddings of an offline backbone (the probe),
and a fine-tuned backbone through `visionline.train.fit` with its current defaults.

The probe's logistic regression is folded into the `InspectionModel`'s linear head, so a probe is
an ordinary visionline model.pt: tracked, registered, exported and served like a trained one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from visionline.leaderboard._entry import (
    Context,
    Outcome,
    file_size,
    measure_latency_ms,
    start_tracking,
)

if TYPE_CHECKING:
    from PIL import Image

    from visionline.preprocessing import Preprocessing
    from visionline.train import InspectionModel

BATCH = 32
MISSING_CLASS_LOGIT = -30.0
"""Head bias of a class with no training images: its probability is effectively zero."""


def _batched_outputs(
    images: Sequence[Image.Image],
    preprocessing: Preprocessing,
    forward: Callable,
    check: Callable[[], None],
) -> np.ndarray:
    import torch

    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            check()
            batch = torch.from_numpy(preprocessing(images[start : start + BATCH]))
            outputs.append(forward(batch).float().numpy())
    return np.concatenate(outputs).astype(np.float64)


def _fold_head(model: InspectionModel, estimator, num_classes: int) -> None:
    """Copy StandardScaler + LogisticRegression into the model's linear head (same softmax)."""
    import torch

    scaler, logistic = estimator[0], estimator[-1]
    coef = logistic.coef_ / scaler.scale_
    intercept = logistic.intercept_ - coef @ scaler.mean_
    if coef.shape[0] == 1:  # binary: p(class 1) = sigmoid(z) = softmax([0, z])[1]
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    weight = np.zeros((num_classes, coef.shape[1]))
    bias = np.full(num_classes, MISSING_CLASS_LOGIT)
    classes = logistic.classes_.astype(int)
    weight[classes], bias[classes] = coef, intercept
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight).float())
        model.head.bias.copy_(torch.from_numpy(bias).float())


def run_probe(ctx: Context, backbone: str) -> Outcome:
    """Embed every image once with the frozen backbone; fit a linear head on the train split."""
    import json

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from visionline.evaluate import softmax
    from visionline.preprocessing import Preprocessing
    from visionline.train import ModelSpec, TrainConfig, build_model, load_pretrained, save_model
    from visionline.train._backbones import IMAGENET, normalization_for

    data = ctx.data
    size = ctx.config.image_size or ctx.project.config.goals.image_size
    mean, std = normalization_for(backbone, IMAGENET)
    preprocessing = Preprocessing(
        size=size, resize_mode=TrainConfig().resize_mode, mean=mean, std=std
    )
    spec = ModelSpec(backbone, list(data.class_names), preprocessing, IMAGENET, dropout=0.0)
    model = build_model(spec)
    load_pretrained(model.backbone, backbone, IMAGENET)  # missing weights: one-sentence error
    model.eval()
    embedded = {
        split.name: _batched_outputs(split.images, preprocessing, model.embed, ctx.check)
        for split in (data.train, data.calib, data.test)
    }
    estimator = make_pipeline(
        StandardScaler(),
        LogisticRegression(
            C=0.1, max_iter=5000, class_weight="balanced", random_state=ctx.config.seed
        ),
    )
    name = f"probe/{backbone}"
    tracker = start_tracking(
        ctx,
        name,
        "probe",
        {
            "backbone": backbone,
            "pretrained": IMAGENET,
            "image_size": size,
            "resize_mode": preprocessing.resize_mode.value,
            "head": "logreg C=0.1",
        },
    )
    try:
        estimator.fit(embedded[data.train.name], data.train.labels)
        _fold_head(model, estimator, len(data.class_names))
        weight = model.head.weight.detach().double().numpy()
        bias = model.head.bias.detach().double().numpy()
        calib_p = softmax(embedded[data.calib.name] @ weight.T + bias)
        test_p = softmax(embedded[data.test.name] @ weight.T + bias)
        out = ctx.out_dir / "entries" / name.replace("/", "-")
        out.mkdir(parents=True, exist_ok=True)
        path = save_model(
            out / "model.pt", model, spec, dataset_version=data.version.id, run_id=tracker.run_id
        )
        (out / "preprocessing.json").write_text(json.dumps(preprocessing.to_dict(), indent=2))
        latency = measure_latency_ms(
            lambda image: model(torch.from_numpy(preprocessing([image]))),
            data.calib.images,
            ctx.config.latency_threads,
        )
        tracker.log_outputs(
            {"checkpoint": path, "": out / "preprocessing.json"},
            model,
            preprocessing([data.calib.images[0]] * 2),  # two rows: a dynamic batch dimension
        )
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return Outcome(
        calib_scores=1.0 - calib_p[:, 0],
        test_scores=1.0 - test_p[:, 0],
        size_bytes=file_size(path),
        latency_ms=latency,
        run_id=tracker.run_id,
        calib_probabilities=calib_p,
        test_probabilities=test_p,
        exportable=True,
        model_path=path,
        details={"image_size": size, "embedding_dim": int(model.embedding_dim)},
    )


def run_finetune(ctx: Context, backbone: str) -> Outcome:
    """`visionline.train.fit` with its current defaults (plus `finetune` overrides), stopped at
    the budget's deadline between epochs; the best epoch is then scored."""
    import torch
    from pydantic import ValidationError

    from visionline.config import describe_validation_error
    from visionline.errors import ConfigError
    from visionline.evaluate import softmax
    from visionline.train import TrainConfig, fit, load_model

    data = ctx.data
    try:
        config = TrainConfig.model_validate(
            {"device": "cpu", "seed": ctx.config.seed, **ctx.config.finetune, "backbone": backbone}
        )
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "leaderboard finetune settings")) from exc
    name = f"finetune/{backbone}"
    result = fit(
        config,
        data.version,
        ctx.project,
        out_dir=ctx.out_dir / "entries" / name.replace("/", "-"),
        tracking_uri=ctx.tracking_uri,
        on_epoch_end=ctx.epoch_callback(),
        run_name=ctx.run_name(name),
        tags=ctx.tags("finetune"),
        progress=ctx.progress,
    )
    model, spec = load_model(result.model_path)
    preprocessing = spec.preprocessing

    def forward(batch):
        return model(batch)

    calib_logits = _batched_outputs(data.calib.images, preprocessing, forward, ctx.check)
    test_logits = _batched_outputs(data.test.images, preprocessing, forward, ctx.check)
    calib_p = softmax(calib_logits, spec.temperature)
    test_p = softmax(test_logits, spec.temperature)
    latency = measure_latency_ms(
        lambda image: model(torch.from_numpy(preprocessing([image]))),
        data.calib.images,
        ctx.config.latency_threads,
    )
    return Outcome(
        calib_scores=1.0 - calib_p[:, 0],
        test_scores=1.0 - test_p[:, 0],
        size_bytes=file_size(result.model_path),
        latency_ms=latency,
        run_id=result.run_id,
        calib_probabilities=calib_p,
        test_probabilities=test_p,
        exportable=True,
        model_path=result.model_path,
        details={
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "image_size": preprocessing.size,
        },
    )
