"""`visionline demo`: the whole loop on the embedded synthetic apple line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import console


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Fresh directory for the demo project.")] = Path(
        "demo-project"
    ),
    images: Annotated[int, typer.Option(help="Synthetic training images.")] = 1000,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 8,
    deliveries: Annotated[int, typer.Option(help="Deliveries streamed through the server.")] = 6,
    delivery_size: Annotated[int, typer.Option(help="Apples per delivery.")] = 150,
    feedback: Annotated[int, typer.Option(help="Logged images the simulated operator labels.")] = 150,
    retrain_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of the challenger.")] = 3,
    force: Annotated[bool, typer.Option(help="Replace an earlier demo in --dir.")] = False,
) -> None:
    """Synthesise apples, run the pipeline, serve, detect drift, retrain, and estimate bad apples per delivery."""
    from pydantic import ValidationError

    from visionline.cli._eval import quiet_mlflow

    from visionline.config import describe_validation_error
    from visionline.errors import ConfigError
    from visionline.pipeline import DemoSettings, run_demo

    try:
        settings = DemoSettings(
            directory=directory,
            images=images,
            image_size=image_size,
            epochs=epochs,
            deliveries=deliveries,
            delivery_size=delivery_size,
            feedback=feedback,
            retrain_epochs=retrain_epochs,
            drift_from_delivery=max(1, deliveries // 2 + 1),
            force=force,
        )
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "demo options")) from exc
    quiet_mlflow()
    run_demo(settings, console)
