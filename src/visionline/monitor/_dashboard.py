"""The monitoring dashboard: a FastAPI app with one self-contained HTML page and its JSON endpoints.

The page is rendered on the server with inline SVG charts (no CDN, no JavaScript), so it works on
an offline plant network and every number on it comes straight from the prediction log.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from html import escape
from typing import Any

import numpy as np

from visionline.errors import DataError, NotFoundError, VisionlineError
from visionline.monitor._adapter import Reference
from visionline.monitor._alerts import MonitorMetrics
from visionline.monitor._analysis import (
    CBPE_ASSUMPTIONS,
    estimate_deliveries,
    estimate_from_log,
    realised_performance,
)
from visionline.monitor._charts import histogram_chart, interval_chart, line_chart, neg_log10
from visionline.monitor._db import MonitorDB
from visionline.monitor._drift import DriftConfig

RECENT = 5000
BINS = np.linspace(0.0, 1.0, 21)


class DashboardData:
    """Everything the page shows, computed from the log (and the bundle's reference, if given)."""

    def __init__(self, db: MonitorDB, reference: Reference | None = None, rates: Any | None = None):
        self.db = db
        self.reference = reference
        self.rates = rates

    def summary(self) -> dict[str, Any]:
        frame = self.db.frame(columns=["ts", "model", "version", "flagged", "probabilities"])
        versions = []
        if not frame.empty:
            estimates = estimate_from_log(frame)
            for (model, version), part in frame.groupby(["model", "version"], sort=True):
                est = estimates[(str(model), str(version))]
                versions.append(
                    {
                        "model": model,
                        "version": version,
                        "predictions": len(part),
                        "flagged": int(part["flagged"].sum()),
                        "first_ts": float(part["ts"].min()),
                        "last_ts": float(part["ts"].max()),
                        "expected_accuracy": est.expected_accuracy,
                        "expected_false_reject_rate": est.expected_false_reject_rate,
                        "expected_escape_rate": est.expected_escape_rate,
                    }
                )
        alarms = self.db.alarms_frame()
        return {
            "predictions": len(frame),
            "flagged": int(frame["flagged"].sum()) if len(frame) else 0,
            "alarms": len(alarms),
            "versions": versions,
            "cbpe_assumptions": CBPE_ASSUMPTIONS,
        }

    def deliveries(self, by: str = "delivery_id") -> list[dict[str, Any]]:
        try:
            return estimate_deliveries(self.db, by, self.rates)
        except DataError:
            return []

    def drift(self) -> dict[str, Any]:
        windows = self.db.windows_frame()
        alarms = self.db.alarms_frame()
        series: dict[str, list[tuple[float, float]]] = {}
        status: dict[str, dict[str, Any]] = {}
        if not windows.empty:
            for detector, part in windows.groupby("detector", sort=True):
                part = part.sort_values("id")
                series[str(detector)] = [
                    (float(w), float(p)) for w, p in zip(part["window"], part["adjusted_p"])
                ]
                last = part.iloc[-1]
                status[str(detector)] = {
                    "window": int(last["window"]),
                    "adjusted_p": float(last["adjusted_p"]),
                    "statistic": float(last["statistic"]),
                    "drifted": bool(last["drifted"]),
                }
        return {
            "status": status,
            "series": series,
            "alarms": [
                {
                    "id": int(a["id"]),
                    "ts": float(a["ts"]),
                    "window": int(a["window"]),
                    "model": a["model"],
                    "version": a["version"],
                    "detectors": a["detectors"],
                    "cause": a["cause"],
                }
                for _, a in alarms.iloc[::-1].iterrows()
            ],
        }

    def confidence(self) -> dict[str, Any]:
        frame = self.db.frame(columns=["ts", "defect_score"], limit=RECENT, newest_first=True)
        out: dict[str, Any] = {"edges": BINS.tolist(), "series": {}}
        if len(frame):
            counts, _ = np.histogram(frame["defect_score"].to_numpy(), bins=BINS)
            out["series"]["production"] = (counts / counts.sum()).tolist()
        if self.reference is not None:
            counts, _ = np.histogram(self.reference.scores, bins=BINS)
            out["series"]["reference"] = (counts / counts.sum()).tolist()
        return out

    def flagged(self, n: int = 12) -> list[dict[str, Any]]:
        frame = self.db.frame(
            columns=[
                "id",
                "ts",
                "model",
                "version",
                "delivery_id",
                "defect_score",
                "decision",
                "image_sha256",
                "flagged",
            ],
            newest_first=True,
            limit=2000,
        )
        frame = frame[frame["flagged"].astype(bool) & frame["image_sha256"].notna()].head(n)
        return [
            {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}
            for row in frame.drop(columns=["flagged"]).to_dict("records")
        ]


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


CSS = """
body{font-family:system-ui,sans-serif;margin:20px;color:#111;background:#fafafa}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}.cards{display:flex;gap:16px}
.card{background:#fff;border:1px solid #ddd;padding:10px 16px;border-radius:6px}
.card b{font-size:22px;display:block}.ok{color:#16a34a}.bad{color:#dc2626;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;font-size:11px}
.grid img{width:96px;height:96px;object-fit:cover;border:1px solid #ccc}
.row{display:flex;flex-wrap:wrap;gap:24px}.note{font-size:12px;color:#555;max-width:900px}
"""


def render_page(data: DashboardData, by: str = "delivery_id") -> str:
    """The whole dashboard as one HTML document."""
    summary = data.summary()
    deliveries = data.deliveries(by)
    suppliers = data.deliveries("supplier_id")
    drift = data.drift()
    confidence = data.confidence()
    flagged = data.flagged()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>visionline monitor</title>",
        "<meta http-equiv='refresh' content='60'>",
        f"<style>{CSS}</style></head><body><h1>visionline monitor</h1>",
        "<div class='cards'>",
        f"<div class='card'>predictions<b id='total-predictions'>{summary['predictions']}</b></div>",
        f"<div class='card'>flagged<b id='total-flagged'>{summary['flagged']}</b></div>",
        f"<div class='card'>drift alarms<b id='total-alarms'>{summary['alarms']}</b></div>",
        "</div>",
    ]
    # deliveries
    parts.append("<h2>Deliveries: corrected defect rate with 90% interval</h2><div class='row'>")
    for rows, key, label in (
        (deliveries, "delivery_id", "delivery"),
        (suppliers, "supplier_id", "supplier"),
    ):
        est = [r.get("estimate", r["raw_rate"]) for r in rows]
        parts.append(
            "<div>"
            + interval_chart(
                [str(r[key]) for r in rows],
                est,
                [r.get("low", r["raw_rate"]) for r in rows],
                [r.get("high", r["raw_rate"]) for r in rows],
                f"defect rate per {label}",
            )
            + f"<table id='{label}-table'><tr><th>{label}</th><th>images</th><th>flagged</th>"
            "<th>raw</th><th>estimate</th><th>interval</th></tr>"
        )
        for r in rows:
            interval = f"{_pct(r.get('low'))} – {_pct(r.get('high'))}" if "low" in r else "–"
            parts.append(
                f"<tr data-{label}='{escape(str(r[key]))}'><td>{escape(str(r[key]))}</td>"
                f"<td class='n'>{r['n']}</td><td class='flagged'>{r['flagged']}</td>"
                f"<td>{_pct(r['raw_rate'])}</td><td class='estimate'>{_pct(r.get('estimate'))}</td>"
                f"<td>{interval}</td></tr>"
            )
        parts.append("</table></div>")
    parts.append("</div>")
    if data.rates is None:
        parts.append(
            "<p class='note'>No validated rates: showing raw flagged shares. Start the dashboard "
            "with --bundle to correct them.</p>"
        )
    # drift
    parts.append(
        "<h2>Drift</h2><table id='drift-status'><tr><th>detector</th><th>window</th>"
        "<th>statistic</th><th>Holm-adjusted p</th><th>status</th></tr>"
    )
    for name, st in drift["status"].items():
        cls, word = ("bad", "DRIFT") if st["drifted"] else ("ok", "ok")
        parts.append(
            f"<tr data-detector='{escape(name)}'><td>{escape(name)}</td><td>{st['window']}</td>"
            f"<td>{st['statistic']:.4g}</td><td>{st['adjusted_p']:.3g}</td>"
            f"<td class='{cls}'>{word}</td></tr>"
        )
    parts.append("</table>")
    series = {k: [(w, neg_log10(p)) for w, p in v] for k, v in drift["series"].items()}
    alpha_line = neg_log10(DriftConfig().alpha) if series else None
    parts.append(
        line_chart(
            series, "drift: -log10(adjusted p) per window", hline=alpha_line, y_label="-log10 p"
        )
    )
    parts.append(
        "<table id='alarms'><tr><th>time</th><th>model</th><th>window</th>"
        "<th>detectors</th><th>likely cause</th></tr>"
    )
    for a in drift["alarms"][:20]:
        parts.append(
            f"<tr><td>{_when(a['ts'])}</td><td>{escape(a['model'])} v{escape(str(a['version']))}</td>"
            f"<td>{a['window']}</td><td>{escape(', '.join(a['detectors']))}</td>"
            f"<td style='text-align:left'>{escape(a['cause'])}</td></tr>"
        )
    parts.append("</table>")
    # confidence
    parts.append("<h2>Defect score: production (latest) vs reference</h2>")
    parts.append(
        histogram_chart(confidence["edges"], confidence["series"], "defect score histogram")
    )
    # flagged images
    parts.append("<h2>Recent flagged images</h2><div class='grid' id='flagged'>")
    for f in flagged:
        parts.append(
            f"<figure><img src='/images/{f['image_sha256']}' alt='flagged {f['id'][:8]}'>"
            f"<figcaption>{escape(str(f['decision']))} {f['defect_score']:.2f}<br>{f['id'][:8]}"
            "</figcaption></figure>"
        )
    parts.append("</div>")
    # versions
    parts.append(
        "<h2>Model versions</h2><table id='versions'><tr><th>model</th><th>version</th>"
        "<th>predictions</th><th>flagged</th><th>last seen</th><th>expected accuracy</th>"
        "<th>expected FRR</th><th>expected escape</th></tr>"
    )
    for v in summary["versions"]:
        parts.append(
            f"<tr data-version='{escape(str(v['version']))}'><td>{escape(v['model'])}</td>"
            f"<td>{escape(str(v['version']))}</td><td class='n'>{v['predictions']}</td>"
            f"<td>{v['flagged']}</td><td>{_when(v['last_ts'])}</td>"
            f"<td>{_pct(v['expected_accuracy'])}</td><td>{_pct(v['expected_false_reject_rate'])}</td>"
            f"<td>{_pct(v['expected_escape_rate'])}</td></tr>"
        )
    parts.append(f"</table><p class='note'>{escape(CBPE_ASSUMPTIONS)}</p>")
    parts.append(
        f"<p class='note'>Rendered {_when(time.time())} UTC from {escape(data.db.safe_url)}.</p>"
    )
    parts.append("</body></html>")
    return "".join(parts)


def create_app(
    db: MonitorDB,
    blobs: Any | None = None,
    reference: Reference | None = None,
    rates: Any | None = None,
) -> Any:
    """The dashboard's FastAPI app: `/` (HTML), `/api/*` (JSON), `/images/{sha}`, `/metrics`."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    data = DashboardData(db, reference, rates)
    metrics = MonitorMetrics()
    app = FastAPI(title="visionline monitor", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page(by: str = "delivery_id") -> str:
        return render_page(data, by)

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        return data.summary()

    @app.get("/api/deliveries")
    def deliveries(by: str = "delivery_id") -> list[dict[str, Any]]:
        if by not in ("delivery_id", "supplier_id"):
            raise HTTPException(400, "by must be delivery_id or supplier_id.")
        return data.deliveries(by)

    @app.get("/api/drift")
    def drift() -> dict[str, Any]:
        return data.drift()

    @app.get("/api/confidence")
    def confidence() -> dict[str, Any]:
        return data.confidence()

    @app.get("/api/flagged")
    def flagged(n: int = 12) -> list[dict[str, Any]]:
        return data.flagged(max(1, min(n, 200)))

    @app.get("/api/performance")
    def performance() -> list[dict[str, Any]]:
        return realised_performance(db)

    @app.get("/images/{sha}")
    def image(sha: str) -> Response:
        if blobs is None:
            raise HTTPException(404, "This dashboard has no blob store.")
        try:
            body = blobs.get(sha)
        except (NotFoundError, VisionlineError) as exc:
            raise HTTPException(404, str(exc)) from exc
        media = "image/png" if body[:4] == b"\x89PNG" else "image/jpeg"
        return Response(body, media_type=media)

    @app.get("/metrics")
    def prometheus() -> Response:
        summary = data.summary()
        for v in summary["versions"]:
            labels = (v["model"], v["version"])
            metrics.expected_accuracy.labels(*labels).set(v["expected_accuracy"])
            metrics.expected_frr.labels(*labels).set(v["expected_false_reject_rate"])
            metrics.flag_rate.labels(*labels).set(v["flagged"] / max(v["predictions"], 1))
            metrics.predictions.labels(*labels).set(v["predictions"])
        windows = db.windows_frame()
        if not windows.empty:
            latest = windows.sort_values("id").groupby(["model", "version", "detector"]).tail(1)
            for _, w in latest.iterrows():
                labels = (w["model"], w["version"], w["detector"])
                metrics.p_value.labels(*labels).set(w["adjusted_p"])
                metrics.statistic.labels(*labels).set(w["statistic"])
                metrics.drifted.labels(*labels).set(1.0 if w["drifted"] else 0.0)
        alarms = db.alarms_frame()
        if not alarms.empty:
            for (model, version), part in alarms.groupby(["model", "version"]):
                metrics.alarms.labels(model, version).set(len(part))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
