"""Rows for the prediction log from edge agents' outbox records (`POST /api/ingest`).

A record carries the prediction table's columns, with the embedding as base64 float16 bytes and
the image-quality statistics as a list, and optionally the item's encoded image as base64 (kept
in the central blob store, so flagged and sampled edge images can be labelled); anything malformed
is refused as a whole batch, so an agent never sees a partial acknowledgement.
"""

import base64
import binascii
import hashlib
import io
import math
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from visionline.errors import DataError
from visionline.monitor._db import PREDICTION_COLUMNS, MonitorDB, predictions
from visionline_edge import QUALITY_STATS

__all__ = ["MAX_BATCH", "FleetState", "assigned_bundle", "fleet_summary", "ingest_rows", "register_ingest", "store_images"]

MAX_BATCH = 5000
_LATEST_TS = 32503680000.0
"""The year 3000 in Unix seconds: a later (or non-finite) capture time broke every reader of
the log (`monitor recent`, the dashboard) once stored."""
_REQUIRED = ("id", "ts", "model", "version", "probabilities", "predicted_class",
             "defect_score", "flagged", "decision", "threshold")


def _row(record: Any, n: int) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"records[{n}] is not an object; send one JSON object per verdict.")
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise DataError(f"records[{n}] lacks {', '.join(missing)}; send complete outbox records.")
    rid = record["id"]
    if not isinstance(rid, str) or not 1 <= len(rid) <= 32:
        raise DataError(f"records[{n}] has an id that is not a 1-32 character string.")
    probabilities = record["probabilities"]
    if not isinstance(probabilities, dict) or not all(
        isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p)
        for p in probabilities.values()
    ):
        raise DataError(
            f"records[{n}].probabilities must be an object of class: probability (finite numbers)."
        )
    row = {k: record.get(k) for k in PREDICTION_COLUMNS if k not in ("embedding", "image_sha256")}
    row["route"] = row.get("route") or "edge"
    try:
        for key in ("ts", "defect_score", "threshold"):
            row[key] = float(row[key])
        row["latency_ms"] = None if row["latency_ms"] is None else float(row["latency_ms"])
        if not math.isfinite(row["defect_score"]):
            row["defect_score"] = -1.0
        if not (math.isfinite(row["ts"]) and 0 <= row["ts"] <= _LATEST_TS):
            raise ValueError(f"ts {row['ts']!r} is not a Unix time in seconds")
        if not math.isfinite(row["threshold"]):
            raise ValueError(f"threshold {row['threshold']!r} is not a finite number")
        quality = record.get("quality") or [None] * len(QUALITY_STATS)
        for name, value in zip(QUALITY_STATS, quality):
            row[name] = None if value is None else float(value)
        embedding = record.get("embedding")
        row["embedding"] = base64.b64decode(embedding, validate=True) if embedding else None
    except (TypeError, ValueError, binascii.Error) as exc:
        raise DataError(f"records[{n}] has a malformed field ({exc}); resend the outbox record.")
    row["flagged"] = bool(row["flagged"])
    row["image_sha256"] = None
    image = record.get("image")
    if image is not None:
        try:
            row["image"] = base64.b64decode(image, validate=True)
        except (TypeError, ValueError, binascii.Error) as exc:
            raise DataError(f"records[{n}].image is not base64 ({exc}); resend the outbox record.")
    return row


def ingest_rows(body: Any) -> list[dict[str, Any]]:
    """Validated prediction rows from `{"records": [...]}`."""
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        raise DataError('The body must be {"records": [...]}; send the outbox batch.')
    if len(records) > MAX_BATCH:
        raise DataError(f"A batch holds at most {MAX_BATCH} records; send smaller batches.")
    rows = [_row(r, n) for n, r in enumerate(records)]
    if len({r["id"] for r in rows}) != len(rows):
        raise DataError("A batch repeats a record id; send each verdict once per batch.")
    return rows


class FleetState:
    """What each line's agent last said about itself with a sync (running bundle, outbox
    backlog, last roll-out event) and when: kept in memory, so after a restart of the central
    side a line shows again with its next sync or heartbeat (within seconds)."""

    def __init__(self) -> None:
        self._lines: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def report(self, agent: Any) -> None:
        if not isinstance(agent, dict) or not isinstance(agent.get("line"), str):
            return
        entry = {
            "running": agent.get("version") if isinstance(agent.get("version"), str) else None,
            "backlog": agent.get("backlog") if isinstance(agent.get("backlog"), int) else None,
            "rollout": agent.get("rollout") if isinstance(agent.get("rollout"), dict) else None,
            "last_sync": time.time(),
        }
        with self._lock:
            self._lines[agent["line"]] = entry

    def lines(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {line: dict(entry) for line, entry in self._lines.items()}


_UNREPORTED = {"running": None, "backlog": None, "rollout": None, "last_sync": None}


def fleet_summary(db: MonitorDB, state: FleetState | None = None) -> list[dict[str, Any]]:
    """Per line that sent verdicts: the model version of its newest verdict, when that verdict
    was captured, how many verdicts and fail-safes the log holds from it, and what its agent
    reported with its last sync (bundle it runs, backlog, last roll-out event, when)."""
    from sqlalchemy import case, func, select

    fail_safe = func.sum(case((predictions.c.route == "fail_safe", 1), else_=0))
    query = (
        select(predictions.c.line, func.count(), fail_safe, func.max(predictions.c.ts))
        .where(predictions.c.line.is_not(None))
        .group_by(predictions.c.line)
        .order_by(predictions.c.line)
    )
    lines = []
    with db.engine.connect() as conn:
        for line, n, failed, last in conn.execute(query).all():
            model, version = conn.execute(
                select(predictions.c.model, predictions.c.version)
                .where(predictions.c.line == line)
                .order_by(predictions.c.ts.desc())
                .limit(1)
            ).one()
            lines.append({"line": line, "model": model, "version": version, "verdicts": int(n),
                          "fail_safe": int(failed or 0), "last_verdict_ts": float(last)})
    reports = state.lines() if state is not None else {}
    known = {entry["line"] for entry in lines}
    lines += [{"line": line, "model": None, "version": None, "verdicts": 0, "fail_safe": 0,
               "last_verdict_ts": None} for line in sorted(set(reports) - known)]
    return [{**entry, **reports.get(entry["line"], _UNREPORTED)} for entry in lines]


def store_images(rows: list[dict[str, Any]], blobs: Any | None) -> None:
    """Move each row's uploaded image into the blob store (by sha256); without a store the image
    is dropped and the verdict is logged without it."""
    for row in rows:
        image = row.pop("image", None)
        if image is not None and blobs is not None:
            row["image_sha256"] = blobs.put(image)


def assigned_bundle(channel: Path, line: str) -> Path | None:
    """The bundle `channel` assigns to `line`: the newest folder (with bundle.json) or .tar.gz in
    `channel/<line>/`, else in `channel/` itself (a bundle for every line)."""
    if "/" in line or line.startswith("."):
        return None
    for folder in (channel / line, channel):
        if not folder.is_dir():
            continue
        found = [
            p for p in folder.iterdir()
            if not p.name.startswith(".")
            and ((p.is_dir() and (p / "bundle.json").is_file()) or p.name.endswith((".tar.gz", ".tgz")))
        ]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime_ns)
    return None


def _bundle_archive(path: Path) -> tuple[str, str, bytes | Path]:
    """(ETag, name, body) of a channel bundle: a folder is packed as .tar.gz; the ETag is the
    sha256 of its bundle.json (which lists the sha256 of every file), or of the archive."""
    if path.is_dir():
        manifest = (path / "bundle.json").read_bytes()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for item in sorted(path.iterdir()):
                archive.add(item, arcname=item.name)
        return hashlib.sha256(manifest).hexdigest(), path.name, buffer.getvalue()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, path.name.removesuffix(".tar.gz").removesuffix(".tgz"), path


def register_ingest(
    app: FastAPI,
    db: MonitorDB,
    blobs: Any | None = None,
    state: FleetState | None = None,
    channel: Path | None = None,
) -> None:
    """Add `POST /api/ingest`, `GET /api/fleet` and `GET /api/channel/{line}` (this module avoids
    postponed annotations so FastAPI sees `Request`)."""
    state = state if state is not None else FleetState()

    @app.get("/api/channel/{line}")
    def channel_bundle(line: str, request: Request) -> Response:
        """The signed bundle assigned to `line` (the agent verifies it; this side only serves)."""
        if channel is None:
            raise HTTPException(404, "This server publishes no bundles; start it with --channel DIR.")
        path = assigned_bundle(channel, line)
        if path is None:
            raise HTTPException(404, f"No bundle is assigned to line {line!r}; put one in "
                                     f"{channel}/{line}/.")
        etag, name, body = _bundle_archive(path)
        headers = {"ETag": f'"{etag}"', "X-Bundle-Name": name}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        if isinstance(body, Path):
            return FileResponse(body, media_type="application/gzip", headers=headers)
        return Response(body, media_type="application/gzip", headers=headers)

    @app.get("/api/fleet")
    def fleet() -> list[dict[str, Any]]:
        """Lines, the version each runs, backlog, last sync and their latest verdict."""
        return fleet_summary(db, state)

    @app.post("/api/ingest")
    async def ingest(request: Request) -> dict[str, Any]:
        """Edge agents' verdicts, inserted idempotently by record id (a resent batch is a no-op)."""
        try:
            body = await request.json()
            rows = ingest_rows(body)
        except ValueError as exc:
            raise HTTPException(422, "The body is not JSON; send the outbox batch.") from exc
        except DataError as exc:
            raise HTTPException(422, str(exc)) from exc
        await run_in_threadpool(store_images, rows, blobs)
        inserted = await run_in_threadpool(db.insert_predictions, rows, True) if rows else 0
        state.report(body.get("agent"))
        return {"acknowledged": [r["id"] for r in rows], "inserted": inserted}
