"""The demo's HTML summary: per-delivery estimates vs the truth, with the plot embedded."""

from __future__ import annotations

import base64
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


def demo_page(result: DemoResult) -> str:
    """The summary page as HTML (templates/demo.html.j2): self-contained, no network needed."""
    from visionline._templates import render

    return render(
        "demo.html.j2",
        model=result.project.config.name,
        model_version=result.model_version,
        run_id=str(result.run_id),
        dataset_version=result.dataset_version[:12],
        gates_passed=result.gates_passed,
        p50=f"{result.latency_ms['p50']:.1f}",
        p95=f"{result.latency_ms['p95']:.1f}",
        drift=_drift_sentence(result.drift),
        retraining=result.retraining.get("sentence", ""),
        triggers=result.retraining.get("triggers", []),
        plot=_delivery_plot(result),
        deliveries=[
            (
                r["delivery"], r["supplier"], f"v{r['version']}", r["n"], f"{r['raw_rate']:.1%}",
                f"{r['estimate']:.1%}", f"{r['low']:.1%} – {r['high']:.1%}", f"{r['true_rate']:.1%}",
            )
            for r in result.deliveries
        ],
        eval_report=str(result.eval_report) if result.eval_report else None,
        eval_report_uri=result.eval_report.as_uri() if result.eval_report else None,
        timings=[(step, f"{seconds:.1f}") for step, seconds in result.timings.items()],
    )


def write_demo_report(result: DemoResult) -> None:
    """Write `reports/demo.html`."""
    result.report_path.parent.mkdir(parents=True, exist_ok=True)
    result.report_path.write_text(demo_page(result), encoding="utf-8")
