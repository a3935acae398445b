"""The monitoring dashboard: a FastAPI app with one self-contained HTML page and its JSON endpoints.

The page is rendered on the server from a Jinja2 template with autoescaping and inline SVG charts
(no CDN, no JavaScript), so it works on an offline plant network, every number on it comes
straight from the prediction log, and a logged id can never inject markup.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
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
from visionline.monitor._ingest import FleetState, fleet_summary, register_ingest

RECENT = 5000
BINS = np.linspace(0.0, 1.0, 21)


class DashboardData:
    """Everything the page shows, computed from the log (and the bundle's reference, if given)."""

    def __init__(self, db: MonitorDB, reference: Reference | None = None, rates: Any | None = None,
                 fleet: FleetState | None = None):
        self.db = db
        self.reference = reference
        self.rates = rates
        self.fleet = fleet

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


def render_page(data: DashboardData, by: str = "delivery_id") -> str:
    """The whole dashboard as one HTML document (templates/dashboard.html.j2)."""
    from visionline._templates import render

    summary = data.summary()
    drift = data.drift()
    confidence = data.confidence()
    groups = []
    for rows, key, label in (
        (data.deliveries(by), "delivery_id", "delivery"),
        (data.deliveries("supplier_id"), "supplier_id", "supplier"),
    ):
        chart = interval_chart(
            [str(r[key]) for r in rows],
            [r.get("estimate", r["raw_rate"]) for r in rows],
            [r.get("low", r["raw_rate"]) for r in rows],
            [r.get("high", r["raw_rate"]) for r in rows],
            f"defect rate per {label}",
        )
        table = [
            {
                "name": str(r[key]),
                "n": r["n"],
                "flagged": r["flagged"],
                "raw": _pct(r["raw_rate"]),
                "estimate": _pct(r.get("estimate")),
                "interval": f"{_pct(r.get('low'))} – {_pct(r.get('high'))}" if "low" in r else "–",
            }
            for r in rows
        ]
        groups.append({"label": label, "chart": chart, "rows": table})
    series = {k: [(w, neg_log10(p)) for w, p in v] for k, v in drift["series"].items()}
    alpha_line = neg_log10(DriftConfig().alpha) if series else None
    return render(
        "dashboard.html.j2",
        summary=summary,
        groups=groups,
        corrected=data.rates is not None,
        detectors=[
            {
                "name": name,
                "window": st["window"],
                "statistic": f"{st['statistic']:.4g}",
                "adjusted_p": f"{st['adjusted_p']:.3g}",
                "drifted": st["drifted"],
            }
            for name, st in drift["status"].items()
        ],
        drift_chart=line_chart(
            series, "drift: -log10(adjusted p) per window", hline=alpha_line, y_label="-log10 p"
        ),
        alarms=[
            {
                "when": _when(a["ts"]),
                "model": a["model"],
                "version": a["version"],
                "window": a["window"],
                "detectors": ", ".join(a["detectors"]),
                "cause": a["cause"],
            }
            for a in drift["alarms"][:20]
        ],
        confidence_chart=histogram_chart(
            confidence["edges"], confidence["series"], "defect score histogram"
        ),
        flagged=[
            {
                "sha": f["image_sha256"],
                "id": f["id"][:8],
                "decision": f["decision"],
                "score": f"{f['defect_score']:.2f}",
            }
            for f in data.flagged()
        ],
        fleet=[
            {
                "line": f["line"],
                "running": f["running"] or (f"{f['model']}:{f['version']}" if f["model"] else "–"),
                "backlog": "–" if f["backlog"] is None else f["backlog"],
                "last_sync": _when(f["last_sync"]) if f["last_sync"] else "–",
                "last_verdict": _when(f["last_verdict_ts"]) if f["last_verdict_ts"] else "–",
                "verdicts": f["verdicts"],
                "fail_safe": f["fail_safe"],
                "rollout": (f"{f['rollout'].get('event')} {f['rollout'].get('version')}"
                            if f["rollout"] else "–"),
            }
            for f in fleet_summary(data.db, data.fleet)
        ],
        versions=[
            {
                "model": v["model"],
                "version": v["version"],
                "predictions": v["predictions"],
                "flagged": v["flagged"],
                "last_seen": _when(v["last_ts"]),
                "accuracy": _pct(v["expected_accuracy"]),
                "frr": _pct(v["expected_false_reject_rate"]),
                "escape": _pct(v["expected_escape_rate"]),
            }
            for v in summary["versions"]
        ],
        assumptions=CBPE_ASSUMPTIONS,
        rendered=_when(time.time()),
        source=data.db.safe_url,
    )


def create_app(
    db: MonitorDB,
    blobs: Any | None = None,
    reference: Reference | None = None,
    rates: Any | None = None,
    channel: Any | None = None,
) -> Any:
    """The dashboard's FastAPI app: `/` (HTML), `/api/*` (JSON), `/images/{sha}`, `/metrics`;
    with `channel` (a folder) also each line's assigned bundle at `/api/channel/{line}`."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    fleet = FleetState()
    data = DashboardData(db, reference, rates, fleet)
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

    register_ingest(app, db, blobs, fleet, channel)

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
