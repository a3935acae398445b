"""`visionline synth`: render the synthetic apple line (datasets, deliveries, preview sheet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import ProjectOption, console
from visionline.errors import ConfigError

app = typer.Typer(
    help="Synthetic apple packing line: datasets, supplier deliveries, drift and a preview.",
    no_args_is_help=True,
)

_DRIFTS = "dirty_lens, lighting, new_variety, camera_shift"

OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder.", show_default=False)]
SeedOption = Annotated[
    int | None,
    typer.Option(
        help="Random seed (default 0); the same seed gives the same bytes.", show_default=False
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML/JSON file with SynthConfig keys (camera, varieties, severity...); "
        "options given on the command line override it.",
        show_default=False,
    ),
]
ForceOption = Annotated[
    bool, typer.Option(help="Replace an output folder that synth wrote before.")
]


def _at_least(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}; pass a larger value.")


def _config(config_file: Path | None, image_size: int | None, seed: int | None, **values: object):
    """SynthConfig from an optional YAML/JSON file, overridden by the options that were given."""
    import yaml

    from visionline.synth import MAX_SIZE, MIN_SIZE, SynthConfig, build_config

    if image_size is not None and not MIN_SIZE <= image_size <= MAX_SIZE:
        raise ConfigError(
            f"image size {image_size} is out of range; pass a size from {MIN_SIZE} to {MAX_SIZE}."
        )
    if seed is not None:
        _at_least("--seed", seed, 0)
    base: dict = {}
    source = "synth options"
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"Synth config {config_file} does not exist; pass an existing file.")
        try:
            base = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError:
            raise ConfigError(
                f"Synth config {config_file} is not valid YAML or JSON; fix its syntax."
            ) from None
        if not isinstance(base, dict):
            raise ConfigError(f"Synth config {config_file} must be a mapping of SynthConfig keys.")
        source = str(config_file)
    overrides = {"size": image_size, "seed": seed, **values}
    base.update({key: value for key, value in overrides.items() if value is not None})
    return build_config(SynthConfig, source=source, **base)


@app.command()
def dataset(
    out: OutOption,
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 2000,
    defect_rate: Annotated[
        float | None,
        typer.Option(help="Share of defect images, 0-1 (default 0.3).", show_default=False),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(help="Image side in pixels, 32-512 (default 128).", show_default=False),
    ] = None,
    seed: SeedOption = None,
    config_file: ConfigOption = None,
    add: Annotated[
        bool, typer.Option("--add", help="Ingest the result as a dataset version.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Dataset version name (with --add).")] = None,
    masks: Annotated[
        bool,
        typer.Option(
            "--masks",
            help="Also write each defect's mask as <image>_mask.png (ingest with data add --masks).",
        ),
    ] = False,
    force: ForceOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Write an ImageFolder tree (good/ + one folder per defect subtype) with a manifest."""
    from visionline.synth import generate_dataset

    _at_least("--n", n)
    if defect_rate is not None and not 0.0 <= defect_rate <= 1.0:
        raise ConfigError(f"--defect-rate must be between 0 and 1, not {defect_rate}.")
    repo = None
    if add:
        from visionline.cli._common import load_project
        from visionline.data import DatasetRepo

        repo = DatasetRepo(load_project(project))
    config = _config(config_file, size, seed, defect_rate=defect_rate)
    summary = generate_dataset(config, out, n, force=force, progress=True, masks=masks)
    counts = ", ".join(f"{label} {count}" for label, count in summary.counts.items())
    console.print(f"[green]Wrote[/green] {n} images to {summary.out} ({counts}).")
    console.print(f"Manifest: {summary.manifest} (+ .parquet), config: {summary.out}/synth.json")
    if repo is not None:
        default_name = f"synth-{config.seed}-{n}"
        report = repo.add(
            summary.out, name=name or default_name, masks=masks, show_progress=True
        )
        version = report.version
        state = "created" if report.created else "already existed"
        console.print(
            f"[green]Dataset version {version.short_id}[/green] ({version.name}) {state}: "
            f"{len(version.records)} images."
        )


@app.command()
def deliveries(
    out: OutOption,
    suppliers: Annotated[int, typer.Option(help="Number of suppliers (growers).")] = 3,
    deliveries: Annotated[int, typer.Option(help="Number of deliveries in the stream.")] = 10,
    size: Annotated[int, typer.Option(help="Images per delivery.")] = 500,
    drift: Annotated[
        str | None,
        typer.Option(help=f"Switch on a drift: {_DRIFTS}.", metavar="KIND", show_default=False),
    ] = None,
    drift_start: Annotated[int, typer.Option(help="Stream index where the drift starts.")] = 0,
    drift_ramp: Annotated[
        int, typer.Option(help="Images until the drift reaches full strength.")
    ] = 200,
    image_size: Annotated[
        int | None,
        typer.Option(help="Image side in pixels, 32-512 (default 128).", show_default=False),
    ] = None,
    seed: SeedOption = None,
    config_file: ConfigOption = None,
    force: ForceOption = False,
) -> None:
    """Write a stream of deliveries with per-image and per-delivery ground truth."""
    from rich.table import Table

    from visionline.synth import Drift, DriftConfig, build_config, generate_deliveries

    drift_config = None
    if drift is not None:
        try:
            kind = Drift(drift)
        except ValueError:
            raise ConfigError(f"Unknown drift {drift!r}; use one of {_DRIFTS}.") from None
        _at_least("--drift-start", drift_start, 0)
        _at_least("--drift-ramp", drift_ramp)
        drift_config = build_config(DriftConfig, kind=kind, start=drift_start, ramp=drift_ramp)
    config = _config(config_file, image_size, seed, drift=drift_config)
    summary = generate_deliveries(config, out, suppliers, deliveries, size, force, progress=True)
    table = Table(title=f"{summary.images} images in {len(summary.deliveries)} deliveries")
    for column in ("delivery", "supplier", "variety", "defect rate", "drift strength"):
        table.add_column(column)
    for row in summary.deliveries:
        table.add_row(
            row["delivery"],
            row["supplier"],
            row["main_variety"],
            f"{row['defect_rate']:.1%}",
            f"{row['drift_strength_first']:.2f}-{row['drift_strength_last']:.2f}",
        )
    console.print(table)
    console.print(
        f"[green]Wrote[/green] {summary.out}: images/, images.csv|parquet, "
        "deliveries.csv|parquet, deliveries.json"
    )


@app.command()
def preview(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path(
        "synth-preview.png"
    ),
    size: Annotated[
        int | None,
        typer.Option(help="Cell side in pixels, 32-512 (default 128).", show_default=False),
    ] = None,
    columns: Annotated[int, typer.Option(help="Images per row.")] = 8,
    seed: SeedOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Render a labelled contact sheet: varieties, defect subtypes and drift conditions."""
    from visionline.synth import contact_sheet

    _at_least("--columns", columns, 2)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out} must end in .png; the sheet is written as PNG.")
    path = contact_sheet(_config(config_file, size, seed), out, columns)
    console.print(f"[green]Wrote[/green] {path}")
