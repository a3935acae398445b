"""Pictures of near-duplicate groups a person can check: a contact sheet PNG and an HTML page.

One row per group, the largest first, with up to `per_row` thumbnails labelled by path; a wrong
group (two different objects) is then seen at a glance, which no count can show.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from visionline.preprocessing import decode_image

if TYPE_CHECKING:
    from visionline.data._dedupe_store import DedupeReport
    from visionline.data._repo import DatasetRepo

__all__ = ["write_contact_sheet", "write_html"]

_THUMB = 96
_LABEL = 14


def write_contact_sheet(
    repo: DatasetRepo,
    report: DedupeReport,
    path: Path,
    max_groups: int = 20,
    per_row: int = 8,
) -> Path | None:
    """Write the PNG (None when there is no group of two or more images)."""
    groups = report.groups()[:max_groups]
    if not groups:
        return None
    cell = _THUMB + _LABEL
    sheet = Image.new("RGB", (per_row * _THUMB + 70, len(groups) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for row, members in enumerate(groups):
        y = row * cell
        draw.text((4, y + _THUMB // 2), f"#{row + 1}\n{len(members)} img", fill="black")
        for col, record in enumerate(members[:per_row]):
            thumb = decode_image(repo.blobs.get(record.sha256)).convert("RGB")
            thumb.thumbnail((_THUMB, _THUMB))
            x = 70 + col * _THUMB
            sheet.paste(thumb, (x, y))
            draw.text((x + 2, y + _THUMB), Path(record.path).name[:15], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "PNG")
    return path


def write_html(report: DedupeReport, sheet: Path | None, path: Path, title: str) -> Path:
    """Write an HTML page: the groups as a table (largest first) and the contact sheet inline."""
    groups = report.groups()
    rows = "\n".join(
        f"<tr><td>{i + 1}</td><td>{len(g)}</td>"
        f"<td>{html.escape(', '.join(sorted({r.model_class for r in g})))}</td>"
        f"<td>{html.escape(', '.join(sorted({r.split or '-' for r in g})))}</td>"
        f"<td>{html.escape(', '.join(r.path for r in g[:6]))}{' …' if len(g) > 6 else ''}</td></tr>"
        for i, g in enumerate(groups)
    )
    image = ""
    if sheet is not None:
        encoded = base64.b64encode(sheet.read_bytes()).decode()
        image = (
            f'<h2>Contact sheet (largest groups)</h2><img src="data:image/png;base64,{encoded}">'
        )
    notes = "".join(f"<p><b>note:</b> {html.escape(n)}</p>" for n in report.notes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>{len(report.records)} images, {len(groups)} near-duplicate groups holding
{sum(len(g) for g in groups)} images; each group must stay inside one split.</p>{notes}
<table><tr><th>#</th><th>images</th><th>classes</th><th>splits</th><th>paths</th></tr>
{rows}</table>{image}</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
