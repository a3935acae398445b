"""The demo's HTML summary: per-delivery estimates vs the truth, with the plot embedded."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from visionline.pipeline._demo import DemoResult


def _delivery_plot(result: DemoResult) -> str:
    """Estimated defect rate with its 90% interval, the raw flag rate and the truth, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.deliveries
    x = range(len(rows))
    estimate = [r["estimate"] * 100 for r in rows]
    errors = [
        [(r["estimate"] - r["low"]) * 100 for r in rows],
        [(r["high"] - r["estimate"]) * 100 for r in rows],
    ]
    figure, axis = plt.subplots(figsize=(7, 3.2), dpi=110)
    axis.errorbar(x, estimate, yerr=errors, fmt="o", capsize=4, label="corrected estimate (90% CI)")
    axis.scatter(x, [r["raw_rate"] * 100 for r in rows], marker="x", label="raw flag rate")
    axis.scatter(x, [r["true_rate"] * 100 for r in rows], marker="_", s=400, c="k", label="truth")
    axis.set_xticks(
        list(x), [f"{r['delivery']}\n{r['supplier']} v{r['version']}" for r in rows], fontsize=8
    )
    axis.set_ylabel("defective apples (%)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _drift_sentence(drift: dict) -> str:
    alarms = "; ".join(f"image {a['image']}: {a['cause']}" for a in drift["alarms"]) or "none"
    delay = (
        f"first alarm {drift['delay_images']} images after it"
        if drift["delay_images"] is not None
        else "no alarm after it"
    )
    return (
        f"The dirty lens starts at image {drift['drift_start']} ({delay}). Alarms in "
        f"{drift['windows']} windows of {drift['window']} images: {alarms}."
    )


def write_demo_report(result: DemoResult) -> None:
    """Write `reports/demo.html`: self-contained, no network needed to open it."""
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                r["delivery"], r["supplier"], f"v{r['version']}", r["n"], f"{r['raw_rate']:.1%}",
                f"{r['estimate']:.1%}", f"{r['low']:.1%} – {r['high']:.1%}", f"{r['true_rate']:.1%}",
            )
        )
        + "</tr>"
        for r in result.deliveries
    )
    timings = "".join(
        f"<tr><td>{html.escape(step)}</td><td>{seconds:.1f} s</td></tr>"
        for step, seconds in result.timings.items()
    )
    eval_link = (
        f'<p>Evaluation report: <a href="{result.eval_report.as_uri()}">{html.escape(str(result.eval_report))}</a></p>'
        if result.eval_report
        else ""
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>visionline demo</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}}</style>
</head><body>
<h1>visionline demo: bad apples per delivery</h1>
<p>Model <b>{html.escape(result.project.config.name)} v{html.escape(result.model_version)}</b>,
MLflow run <code>{html.escape(str(result.run_id))}</code>, dataset version
<code>{html.escape(result.dataset_version[:12])}</code>; quality gates
<b>{"passed" if result.gates_passed else "FAILED"}</b>.</p>
<p>Serving latency over HTTP: p50 {result.latency_ms["p50"]:.1f} ms, p95 {result.latency_ms["p95"]:.1f} ms.</p>
<h2>Drift</h2><p>{html.escape(_drift_sentence(result.drift))}</p>
<h2>Continuous training</h2><p>{html.escape(result.retraining.get("sentence", ""))}</p>
<ul>{"".join(f"<li>{html.escape(t)}</li>" for t in result.retraining.get("triggers", []))}</ul>
<h2>Defect rate per delivery</h2>
<img alt="defect rate per delivery" src="data:image/png;base64,{_delivery_plot(result)}">
<table><tr><th>delivery</th><th>supplier</th><th>model</th><th>apples</th><th>flagged</th><th>estimate</th><th>90% CI</th><th>true</th></tr>{rows}</table>
{eval_link}
<h2>Steps</h2><table>{timings}</table>
</body></html>
"""
    result.report_path.parent.mkdir(parents=True, exist_ok=True)
    result.report_path.write_text(page)
