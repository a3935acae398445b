"""`visionline estimate`: the share of bad apples per delivery, supplier, day or line."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from visionline.cli._common import console, err_console
from visionline.errors import DataError


class GroupBy(str, Enum):
    """How predictions are grouped."""

    DELIVERY = "delivery"
    SUPPLIER = "supplier"
    DAY = "day"
    LINE = "line"


def estimate_command(
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions",
            help="CSV or Parquet: one row per image with a group column and a flag or defect_score column.",
        ),
    ],
    by: Annotated[GroupBy, typer.Option("--by", help="Column to group by.")] = GroupBy.DELIVERY,
    rates: Annotated[
        Path | None,
        typer.Option(
            "--rates", help="metrics.json from 'visionline eval' with the validated TPR/FPR."
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Defect-score threshold when the file has scores; default: the one in --rates."
        ),
    ] = None,
    confidence: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="Interval confidence.")
    ] = 0.90,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the table as JSON here.")
    ] = None,
) -> None:
    """Raw flagged rate and the Rogan–Gladen corrected defect rate with an interval per group."""
    from rich.table import Table

    from visionline.evaluate import ValidatedRates, estimate_by_group, jsonable, load_predictions

    validated = None
    if rates is not None:
        try:
            validated = ValidatedRates.from_metrics(json.loads(rates.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(
                f"Cannot read rates file {rates} ({type(exc).__name__}); pass the metrics.json from 'visionline eval'."
            ) from exc
    rows = estimate_by_group(
        load_predictions(predictions), by.value, validated, threshold, confidence
    )
    title = f"Defect rate by {by.value}"
    if validated is not None:
        title += f" (validated TPR {validated.tpr:.1%}, FPR {validated.fpr:.1%})"
    table = Table(title=title)
    columns = [by.value, "images", "flagged", "raw rate"]
    if validated is not None:
        columns += ["corrected", f"{confidence:.0%} CI"]
    has_subtypes = any("subtypes" in row for row in rows)
    if has_subtypes:
        columns.append("subtypes")
    for column in columns:
        table.add_column(column)
    for row in rows:
        cells = [row[by.value], str(row["n"]), str(row["flagged"]), f"{row['raw_rate']:.1%}"]
        if validated is not None:
            cells += [f"{row['estimate']:.1%}", f"{row['low']:.1%} – {row['high']:.1%}"]
        if has_subtypes:
            cells.append(
                ", ".join(
                    f"{name} {values.get('estimate', values['raw_rate']):.1%}"
                    for name, values in row.get("subtypes", {}).items()
                )
            )
        table.add_row(*cells)
    console.print(table)
    if validated is None:
        err_console.print(
            "[yellow]warning:[/yellow] no --rates given: raw flagged rates are biased by false rejects and escapes."
        )
    if output is not None:
        output.write_text(json.dumps(jsonable(rows), indent=2))
        console.print(f"Wrote {output}")
