"""Data steps: ingest → validate → split. Each passes a `dataset` artifact (the version id) on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionline.errors import ConfigError, DataError
from visionline.pipeline._graph import Artifact, StepContext


def _dataset(version: Any, **meta: Any) -> Artifact:
    counts = {"images": version.n_images, **dict(version.split_counts())}
    return Artifact("dataset", version.id, meta={"name": version.name, **counts, **meta})


def ingest(ctx: StepContext) -> dict[str, Artifact]:
    """Ingest `ingest.source` as a version (content-addressed: unchanged images, same id)."""
    from visionline.data import DatasetRepo

    source = ctx.settings.get("source")
    if not source:
        raise ConfigError(
            "The pipeline has no data: set pipeline.ingest.source in visionline.yaml "
            "or pass --data VERSION (or --source DIR)."
        )
    path = Path(source) if Path(source).is_absolute() else ctx.project.root / source
    if not path.exists():
        raise ConfigError(f"Ingest source {path} does not exist; fix pipeline.ingest.source.")
    report = DatasetRepo(ctx.project).add(path, name=ctx.settings.get("name"))
    return {
        "dataset": _dataset(
            report.version, created=report.created, skipped=len(report.skipped)
        )
    }


def validate(ctx: StepContext) -> dict[str, Artifact]:
    """Blobs intact, every project class present often enough: fail before hours of training."""
    from visionline.data import DatasetRepo

    repo = DatasetRepo(ctx.project)
    version = repo.get(ctx.artifact("dataset").id)
    if ctx.settings["verify_blobs"]:
        report = repo.verify(version.id)
        if not report.ok:
            raise DataError(
                f"Dataset version {version.short_id} has {len(report.missing)} missing and "
                f"{len(report.corrupt)} corrupt blobs; restore the store or ingest again."
            )
    counts = version.class_counts()
    minimum = ctx.settings["min_images_per_class"]
    short = {
        name: counts.get(name, 0)
        for name in ctx.project.config.model_classes()
        if counts.get(name, 0) < minimum
    }
    if short:
        listed = ", ".join(f"{k} ({v})" for k, v in short.items())
        raise DataError(
            f"Dataset version {version.short_id} has fewer than {minimum} images of {listed}; "
            "add images of those classes or lower pipeline.validate.min_images_per_class."
        )
    return {"dataset": _dataset(version, classes=dict(counts))}


def split(ctx: StepContext) -> dict[str, Artifact]:
    """A leak-free stratified split; a version whose images all have a split keeps it, so a
    retraining version keeps the champion's test images."""
    from visionline.data import DatasetRepo

    repo = DatasetRepo(ctx.project)
    version = repo.get(ctx.artifact("dataset").id)
    if all(r.split for r in version.records) and version.split_records("test"):
        return {"dataset": _dataset(version, kept_existing_split=True)}
    settings = ctx.settings
    version = repo.split(
        version.id,
        val=settings["val"],
        test=settings["test"],
        seed=settings["seed"],
        group_by=settings.get("group_by"),
        calib=settings.get("calib", 0.0),
    )
    return {"dataset": _dataset(version, kept_existing_split=False)}
