"""`visionline demo`: the whole loop on the embedded synthetic apple line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import console


def demo(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Fresh directory for the demo project.")
    ] = None,
    images: Annotated[int | None, typer.Option(help="Synthetic training images.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Image side in pixels.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of the head on cached embeddings.")] = None,
    deliveries: Annotated[int | None, typer.Option(help="Deliveries streamed through the server.")] = None,
    delivery_size: Annotated[int | None, typer.Option(help="Apples per delivery.")] = None,
    feedback: Annotated[
        int | None, typer.Option(help="Logged images the simulated operator labels.")
    ] = None,
    retrain_epochs: Annotated[
        int | None, typer.Option(help="Fine-tuning epochs of the challenger.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an earlier demo in --dir.")] = False,
) -> None:
    """Synthesise apples, run the pipeline, serve, detect drift, retrain, and estimate bad apples
    per delivery. Options left out take the demo's budget (`DemoSettings`): a few minutes here."""
    from pydantic import ValidationError

    from visionline.cli._eval import quiet_mlflow
    from visionline.config import describe_validation_error
    from visionline.errors import ConfigError
    from visionline.pipeline import DemoSettings, run_demo

    given = {
        "directory": directory,
        "images": images,
        "image_size": image_size,
        "epochs": epochs,
        "deliveries": deliveries,
        "delivery_size": delivery_size,
        "feedback": feedback,
        "retrain_epochs": retrain_epochs,
    }
    options = {key: value for key, value in given.items() if value is not None}
    if deliveries is not None:
        options["drift_from_delivery"] = max(1, deliveries // 2 + 1)
    try:
        settings = DemoSettings(**options, force=force)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "demo options")) from exc
    quiet_mlflow()
    run_demo(settings, console)
