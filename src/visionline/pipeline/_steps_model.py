"""Model steps: (tune →) train → evaluate → gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionline.errors import ConfigError, GateFailedError
from visionline.pipeline._graph import Artifact, StepContext, file_digest, relative


def train_config(settings: dict[str, Any], tuned: dict[str, Any] | None = None) -> Any:
    """`pipeline.train` (+ tuned values, which win) as a validated `TrainConfig`."""
    from pydantic import ValidationError

    from visionline.config import describe_validation_error
    from visionline.config._pipeline import TRAIN_METHOD_KEYS
    from visionline.train import TrainConfig

    settings = {k: v for k, v in settings.items() if k not in TRAIN_METHOD_KEYS}
    try:
        return TrainConfig.model_validate({**settings, **(tuned or {})})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "pipeline.train in visionline.yaml")) from exc


def tune(ctx: StepContext) -> dict[str, Artifact]:
    """An Optuna study over the search space; its best settings feed the train step."""
    import yaml

    from visionline.train import load_tune_config
    from visionline.train import tune as run_tune

    settings = ctx.settings
    config_path = settings.get("config")
    config = load_tune_config(ctx.project.root / config_path if config_path else None)
    dataset = ctx.artifact("dataset")
    best_path = ctx.workdir / "best.yaml"
    result = run_tune(
        ctx.project,
        dataset.id,
        settings["trials"],
        study_name=f"pipeline-{dataset.id[:12]}",
        storage=settings.get("storage"),
        config=config,
        best_config_path=best_path,
        progress=ctx.progress,
    )
    if result.best_config is None:
        raise ConfigError(
            f"Study {result.study_name} finished no trial; raise pipeline.tune.trials or check the log."
        )
    tuned = result.best_config.model_dump(mode="json")
    best_path.write_text(yaml.safe_dump(tuned, sort_keys=True))
    return {
        "params": Artifact(
            "params",
            file_digest(best_path),
            relative(ctx.project, best_path),
            {"study": result.study_name, "best_value": result.best_value, "values": tuned},
        )
    }


def train(ctx: StepContext) -> dict[str, Artifact]:
    """`fit` into the step's work folder; an interrupted attempt resumes from its last epoch.
    With `method: leaderboard` the leaderboard runs instead (see `leaderboard_train`), with
    `anomaly` the anomaly fit, and with `both` the two, whose anomaly model the register step
    registers and judges beside the supervised one."""
    from dataclasses import replace

    from visionline.config._pipeline import TrainMethod

    if ctx.settings.get("method") == TrainMethod.LEADERBOARD.value:
        return leaderboard_train(ctx)
    if ctx.settings.get("method") == TrainMethod.ANOMALY.value:
        return anomaly_train(ctx)
    if ctx.settings.get("method") == TrainMethod.BOTH.value:
        anomaly = anomaly_train(ctx, ctx.workdir / "anomaly")["model"]
        return {**supervised_train(ctx), "anomaly_model": replace(anomaly, kind="anomaly_model")}
    return supervised_train(ctx)


def supervised_train(ctx: StepContext) -> dict[str, Artifact]:
    """One `visionline train` run with the pipeline's TrainConfig settings (and tuned values)."""
    from visionline.train import fit

    tuned = ctx.optional("params")
    config = train_config(ctx.settings, tuned.meta["values"] if tuned else None)
    dataset = ctx.artifact("dataset")
    resume = (ctx.workdir / "last.pt").is_file()
    result = fit(
        config,
        dataset.id,
        ctx.project,
        out_dir=ctx.workdir,
        resume=resume,
        run_name=f"pipeline-train-{dataset.id[:8]}",
        tags={"visionline.pipeline_step": "train"},
        progress=ctx.progress,
    )
    return {
        "model": Artifact(
            "model",
            file_digest(result.model_path),
            relative(ctx.project, result.model_path),
            {
                "run_id": result.run_id,
                "best_epoch": result.best_epoch,
                "backbone": config.backbone.value,
                "resumed": resume,
                **{k: float(v) for k, v in result.best_metrics.items()},
            },
        )
    }


def leaderboard_train(ctx: StepContext) -> dict[str, Artifact]:
    """Run the leaderboard on the split; its best-ranked exportable entry (a probe or fine-tuned
    model.pt) is the model that evaluate, export and register take on. The register step, not
    the leaderboard, registers it, so a pipeline registers one model per run."""
    from visionline.errors import TrainingError
    from visionline.leaderboard import load_leaderboard_config, run_leaderboard

    config = load_leaderboard_config(ctx.settings.get("leaderboard"), register_best=False)
    dataset = ctx.artifact("dataset")
    result = run_leaderboard(
        ctx.project, dataset.id, config, out_dir=ctx.workdir / "leaderboard", progress=ctx.progress
    )
    exportable = [e for e in result.ranked if e.outcome.exportable]
    if not exportable:
        raise TrainingError(
            "No probe or fine-tuned leaderboard entry finished, so the pipeline has no model to "
            "export; raise pipeline.train.leaderboard.budget_min or include those families."
        )
    chosen, best = exportable[0], result.ranked[0]
    return {
        "model": Artifact(
            "model",
            file_digest(chosen.outcome.model_path),
            relative(ctx.project, chosen.outcome.model_path),
            {
                "run_id": chosen.outcome.run_id,
                "method": "leaderboard",
                "entry": chosen.name,
                "leaderboard_best": best.name,
                "no_ml_needed": result.no_ml_needed,
                "verdict": result.verdict,
                "leaderboard": relative(ctx.project, result.paths["json"]),
            },
        )
    }


def anomaly_train(ctx: StepContext, out_dir: Path | None = None) -> dict[str, Artifact]:
    """Fit an anomaly detector on the split's good train images (AnomalyConfig settings under
    `pipeline.train.anomaly`), tracked in MLflow like a supervised run."""
    from pydantic import ValidationError

    from visionline.anomaly import AnomalyConfig, fit_anomaly
    from visionline.config import describe_validation_error

    try:
        config = AnomalyConfig.model_validate(ctx.settings.get("anomaly") or {})
    except ValidationError as exc:
        raise ConfigError(
            describe_validation_error(exc, "pipeline.train.anomaly in visionline.yaml")
        ) from exc
    dataset = ctx.artifact("dataset")
    result = fit_anomaly(
        config, dataset.id, ctx.project, out_dir=out_dir or ctx.workdir, progress=ctx.progress
    )
    return {
        "model": Artifact(
            "model",
            file_digest(result.model_path),
            relative(ctx.project, result.model_path),
            {
                "run_id": result.run_id,
                "method": "anomaly",
                "kind": "anomaly",
                "backbone": config.backbone,
                "bank_size": result.stats.bank_size,
                "val_threshold": float(result.operating_point.threshold),
            },
        )
    }


def is_anomaly(model: Artifact) -> bool:
    return model.meta.get("kind") == "anomaly"


def model_uri(model: Artifact, project: Any) -> str:
    run_id = model.meta.get("run_id")
    return f"runs:/{run_id}" if run_id else str(model.resolve(project))


def evaluate(ctx: StepContext) -> dict[str, Artifact]:
    """Test-split metrics with bootstrap CIs, the operating threshold and the gates' verdicts."""
    from visionline.evaluate import evaluate_model

    model = ctx.artifact("model")
    dataset = ctx.artifact("dataset")
    if is_anomaly(model):  # image and pixel metrics, a heatmap gallery, the same gates
        from visionline.anomaly import evaluate_anomaly

        result = evaluate_anomaly(
            ctx.project,
            model_uri(model, ctx.project),
            dataset.id,
            ctx.settings["split"],
            ctx.workdir,
            ctx.settings["bootstrap"],
        )
    else:
        result = evaluate_model(
            ctx.project,
            model_uri(model, ctx.project),
            dataset.id,
            split=ctx.settings["split"],
            output_dir=ctx.workdir,
            bootstrap=ctx.settings["bootstrap"],
            progress=ctx.progress,
        )
    keep = ("defect_recall", "false_reject_rate", "accuracy", "roc_auc", "escape_rate")
    return {
        "evaluation": Artifact(
            "evaluation",
            file_digest(result.metrics_path),
            relative(ctx.project, result.metrics_path),
            {
                "threshold": float(result.operating_point.threshold),
                "gates_passed": result.gates.passed,
                "gates": result.gates.summary(),
                **{k: result.metrics[k] for k in keep if isinstance(result.metrics.get(k), float)},
                "report": relative(ctx.project, result.report_path) if result.report_path else None,
            },
        )
    }


def gate(ctx: StepContext) -> dict[str, Artifact]:
    """Stop the pipeline on a failed quality gate unless `gate.enforce` is off."""
    evaluation = ctx.artifact("evaluation")
    passed = bool(evaluation.meta["gates_passed"])
    if not passed and ctx.settings["enforce"]:
        raise GateFailedError(
            f"Quality gates failed: {evaluation.meta['gates']} Improve the model or data, or set "
            "pipeline.gate.enforce: false to go on knowingly."
        )
    return {
        "gate": Artifact(
            "gate", f"{evaluation.id[:16]}:{'pass' if passed else 'fail'}",
            meta={"passed": passed, "summary": evaluation.meta["gates"]},
        )
    }
