"""The leaderboard as rows: printed with rich, written as JSON, Markdown and HTML."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionline.leaderboard._entry import Entry
from visionline.leaderboard._scoring import ranked

if TYPE_CHECKING:
    from rich.console import Console

    from visionline.leaderboard._run import LeaderboardResult


def entry_row(entry: Entry, rank: int | None) -> dict[str, Any]:
    """One entry as plain JSON values."""
    row: dict[str, Any] = {
        "rank": rank,
        "name": entry.name,
        "kind": entry.kind,
        "status": entry.status,
        "reason": entry.reason,
        "seconds": round(entry.seconds, 1),
    }
    if entry.outcome is not None:
        row.update(
            run_id=entry.outcome.run_id,
            latency_ms=entry.outcome.latency_ms,
            size_mb=entry.outcome.size_bytes / 1e6,
            exportable=entry.outcome.exportable,
            details=entry.outcome.details,
        )
    if entry.finished:
        metrics = entry.metrics
        row.update(
            threshold=entry.operating_point.threshold,
            threshold_recall=entry.calib_recall,
            threshold_roc_auc=entry.calib_auroc,
            certified=entry.operating_point.certified,
            test_defect_recall=metrics["defect_recall"],
            test_defect_recall_ci=list(metrics["defect_recall_exact_ci"]),
            test_false_reject_rate=metrics["false_reject_rate"],
            test_false_reject_rate_ci=list(metrics["false_reject_rate_exact_ci"]),
            test_roc_auc=metrics["roc_auc"],
            test_subtype_recall=metrics["subtype_recall"],
            gates_passed=entry.gates.passed,
            gates=entry.gates.summary(),
        )
    return row


def rows(entries: list[Entry]) -> list[dict[str, Any]]:
    """Finished entries in rank order, then the ones that did not finish."""
    order = ranked(entries)
    rest = [e for e in entries if e not in order]
    return [entry_row(e, i + 1) for i, e in enumerate(order)] + [entry_row(e, None) for e in rest]


def _pct(value: Any) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _cells(row: dict[str, Any], subtypes: list[str]) -> list[str]:
    if row["status"] != "finished":
        return [str(row["rank"] or "-"), row["name"], f"{row['status']}: {row['reason']}"] + [
            ""
        ] * (7 + len(subtypes))
    low, high = row["test_defect_recall_ci"]
    return [
        str(row["rank"]),
        row["name"],
        "finished" + ("" if row["gates_passed"] else " (gates fail)"),
        _pct(row["threshold_recall"]),
        f"{_pct(row['test_defect_recall'])} [{_pct(low)}, {_pct(high)}]",
        _pct(row["test_false_reject_rate"]),
        f"{row['test_roc_auc']:.3f}"
        if row["test_roc_auc"] is not None and math.isfinite(row["test_roc_auc"])
        else "-",
        *[_pct(row["test_subtype_recall"].get(s)) for s in subtypes],
        f"{row['latency_ms']:.1f}",
        f"{row['size_mb']:.2f}",
        f"{row['seconds']:.0f}",
    ]


def headers(threshold_split: str, subtypes: list[str]) -> list[str]:
    return [
        "#",
        "entry",
        "status",
        f"recall ({threshold_split})",
        "test recall [95% CI]",
        "test FRR",
        "AUROC",
        *[f"recall {s}" for s in subtypes],
        "ms/img (b1, 2 thr)",
        "MB",
        "s",
    ]


def to_markdown(result: LeaderboardResult) -> str:
    table = result.table()
    lines = [
        f"# Leaderboard of {result.dataset_version[:12]}",
        "",
        *[f"- {line}" for line in result.summary_lines()],
        "",
        "| " + " | ".join(table["headers"]) + " |",
        "|" + "---|" * len(table["headers"]),
        *["| " + " | ".join(cells) + " |" for cells in table["cells"]],
        "",
    ]
    return "\n".join(lines)


def to_html(result: LeaderboardResult) -> str:
    table = result.table()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table["headers"])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for cells in table["cells"]
    )
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in result.summary_lines())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>visionline leaderboard</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(2),"
        "td:nth-child(3){text-align:left}</style></head><body>"
        f"<h1>Leaderboard of {html.escape(result.dataset_version[:12])}</h1><ul>{notes}</ul>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>"
    )


def write_reports(result: LeaderboardResult, out_dir: Path) -> dict[str, Path]:
    """leaderboard.json, leaderboard.md and leaderboard.html under `out_dir`."""
    from visionline.evaluate import jsonable

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "leaderboard.json",
        "markdown": out_dir / "leaderboard.md",
        "html": out_dir / "leaderboard.html",
    }
    paths["json"].write_text(json.dumps(jsonable(result.to_dict()), indent=2))
    paths["markdown"].write_text(to_markdown(result))
    paths["html"].write_text(to_html(result))
    return paths


def print_table(result: LeaderboardResult, console: Console) -> None:
    from rich.table import Table

    table = result.table()
    shown = Table(title=f"Leaderboard of {result.dataset_version[:12]}")
    for header in table["headers"]:
        shown.add_column(header, overflow="fold")
    for cells in table["cells"]:
        shown.add_row(*cells)
    console.print(shown)
    for line in result.summary_lines():
        console.print(line, highlight=False, soft_wrap=True)
