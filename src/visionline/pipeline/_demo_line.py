"""The demo's packing line run through the line agent: a camera of generated deliveries, verdicts
in process, reject bits to a PLC over OPC UA, the outbox synced to the central prediction log,
new models through the fleet channel; the drift check, and an operator who labels a sample of
logged images."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from visionline.config import Project
from visionline.edge._frames import Frame
from visionline.errors import ConfigError

DEMO_LINE = "packing-1"
"""The line name the demo's agent reports to the central log and watches in the channel."""


@dataclass(frozen=True)
class LoggedVerdict:
    """A verdict as the central log holds it, in the terms the per-delivery estimate reads."""

    version: str
    defect_score: float
    is_defect: bool
    extra: dict[str, Any]
    probabilities: dict[str, float]


class DeliverySource:
    """The generated deliveries as a camera that writes JPEGs: items back to back, in camera
    order, each tagged with its delivery and supplier (what a PLC's batch tag would give)."""

    def __init__(self, rows: list[dict[str, str]], line_dir: Path) -> None:
        self.rows, self.line_dir = rows, line_dir
        self.captured: dict[str, float] = {}

    def __iter__(self) -> Iterator[Frame]:
        for row in self.rows:
            data = (self.line_dir / row["file"]).read_bytes()
            item = Path(row["file"]).stem
            frame = Frame(item, time.time(), data=data,
                          meta={"delivery_id": row["delivery"], "supplier_id": row["supplier"]})
            self.captured[item] = frame.captured_at
            yield frame

    def close(self) -> None:
        pass


class CentralLog:
    """The plant server's `visionline monitor serve` app (prediction log + blob store) on
    127.0.0.1 in a thread: the agent's sync posts its verdicts to `/api/ingest`."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> CentralLog:
        import uvicorn

        from visionline.data import BlobStore
        from visionline.monitor import MonitorDB
        from visionline.monitor._dashboard import create_app

        self.db = MonitorDB(self.project.monitor_db_url)
        app = create_app(self.db, BlobStore(self.project.blob_store_uri))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, name="central-log", daemon=True)
        self._thread.start()
        _wait_for(lambda: self._server.started, timeout=60)
        if not self._server.started:
            raise ConfigError("The central log did not start within 60 s; see the log above.")
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self.db.close()
            self._server = None


class AgentLine:
    """The packing line as a plant runs it: the line agent (`visionline.edge`) decides each apple
    in process with the signed bundle, writes the reject bit to the PLC (an OPC UA server),
    commits every verdict to its SQLite outbox, and its sync worker feeds the central log; new
    models arrive through the fleet channel (verify → shadow → switch)."""

    def __init__(
        self,
        project: Project,
        bundle_dir: Path,
        pubkey: Path,
        line_dir: Path,
        *,
        shadow_items: int = 30,
        min_agreement: float = 0.85,
        deadline_ms: float = 100.0,
    ) -> None:
        self.project, self.bundle_dir, self.pubkey, self.line_dir = (
            project, bundle_dir, pubkey, line_dir
        )
        self.shadow_items, self.min_agreement, self.deadline_ms = (
            shadow_items, min_agreement, deadline_ms
        )
        self.edge_dir = project.root / ".visionline" / "edge"
        self.channel = project.root / "channel"
        self.truth: dict[str, tuple[str, str | None]] = {}
        self.items = 0
        self._published: dict[str, str] = {}
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        from visionline.edge import (
            BufferedSink,
            Decider,
            ImageStore,
            Outbox,
            Rollout,
            SyncWorker,
            open_sink,
        )
        from visionline.edge._simulator import SimulatedPlc
        from visionline_edge import load_bundle

        logging.getLogger("asyncua").setLevel(logging.ERROR)  # its notes on open endpoints
        (self.channel / DEMO_LINE).mkdir(parents=True, exist_ok=True)
        self.central = CentralLog(self.project).start()
        self._stack.callback(self.central.stop)
        self.plc = SimulatedPlc().start()
        self._stack.callback(self.plc.stop)
        model = load_bundle(self.bundle_dir, self.pubkey, require_signature=True)
        model.version = self.bundle_dir.name  # the registry version, as the server names it
        self.decider = Decider(model, self.deadline_ms, line=DEMO_LINE)
        self._stack.callback(self.decider.close)
        self.outbox = Outbox(self.edge_dir / "outbox.db")
        self._stack.callback(self.outbox.close)
        self.sink = BufferedSink(open_sink(self.plc.url))
        self._stack.callback(self.sink.close)
        self.images = ImageStore(self.edge_dir / "outbox-images", 200 * 1024 * 1024)
        self.rollout = Rollout(self.decider, self.channel, pubkey=self.pubkey,
                               shadow_items=self.shadow_items, min_agreement=self.min_agreement,
                               max_latency_ms=self.deadline_ms,
                               poll_s=0.2, active_path=self.bundle_dir,
                               on_load=self._registry_version)
        self.sync = SyncWorker(self.edge_dir / "outbox.db", self.central.url, batch=200,
                               interval_s=0.1, max_backoff_s=2.0).start()
        self._stack.callback(self.sync.stop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _registry_version(self, name: str, model: Any) -> None:
        """A published bundle runs under its registry version (the repository folder it was
        installed in), as the server would name it, so the log and the rates line up."""
        model.version = self._published.get(name, model.version)

    def publish(self, bundle_dir: Path) -> Path:
        """Put a bundle on the line's channel the way the central side does: copied under a
        hidden name, then renamed into place, so the agent never sees half a bundle."""
        name = bundle_dir.parent.name + "-" + bundle_dir.name
        self._published[name] = bundle_dir.name
        staging = self.channel / DEMO_LINE / f".{name}.partial"
        shutil.copytree(bundle_dir, staging)
        target = self.channel / DEMO_LINE / name
        staging.rename(target)
        self.rollout.poll_soon()
        return target

    def stream(self, rows: list[dict[str, str]]) -> dict[str, Any]:
        """Run the rows through the agent; wait until the PLC has every signal and the central
        log has acknowledged every verdict; return what the log holds and what the PLC did."""
        from visionline.edge import LineAgent

        source = DeliverySource(rows, self.line_dir)
        for row in rows:
            self.truth[hashlib.sha256((self.line_dir / row["file"]).read_bytes()).hexdigest()] = (
                row["label"], row["subtype"] or None
            )
        before = len(self.plc.received())
        events = len(self.rollout.events)
        agent = LineAgent(source, self.decider, self.outbox, self.sink, self.images,
                          sample_every=3, rollout=self.rollout, keep_margin=0.1,
                          upload_images=True)
        stats = agent.run()
        self.sink.flush(30.0)
        _wait_for(lambda: self.outbox.backlog()[0] == 0, timeout=60.0)
        backlog, _ = self.outbox.backlog()
        if backlog:
            raise ConfigError(
                f"{backlog} verdicts are still waiting for the central log after 60 s "
                f"({self.sync.last_error}); see the log above."
            )
        writes = self.plc.received()[before:]
        ids = [Path(row["file"]).stem for row in rows]
        records = self._logged(ids)
        latencies = sorted(
            (w.received_at - source.captured[w.item_id]) * 1000
            for w in writes if w.item_id in source.captured
        )
        self.items += len(rows)
        return {
            "records": records,
            "latency_ms": {
                "p50": statistics.median(latencies),
                "p95": latencies[int(0.95 * (len(latencies) - 1))],
                "requests": len(latencies),
            },
            "ejected": _ejected(rows, writes),
            "fail_safe": dict(stats.fail_safe),
            "sync": {**self.outbox.status(), "central": self.central.url},
            "rollout": [
                {"event": e.kind, "version": e.version, "detail": e.detail}
                for e in self.rollout.events[events:]
            ],
        }

    def _logged(self, ids: list[str]) -> list[LoggedVerdict]:
        """The central log's rows for these items, in camera order (what the sync delivered)."""
        frame = self.central.db.frame(model=self.project.config.name)
        frame = frame[frame["request_id"].isin(set(ids))].set_index("request_id")
        if len(frame) != len(ids):
            raise ConfigError(
                f"The central log holds {len(frame)} of {len(ids)} verdicts; see the sync log."
            )
        return [
            LoggedVerdict(
                version=str(frame.at[item, "version"]),
                defect_score=float(frame.at[item, "defect_score"]),
                is_defect=bool(frame.at[item, "flagged"]),
                probabilities=dict(frame.at[item, "probabilities"]),
                extra={"parameters": {"delivery": frame.at[item, "delivery_id"],
                                      "supplier": frame.at[item, "supplier_id"]}},
            )
            for item in ids
        ]


def _ejected(rows: list[dict[str, str]], writes: list[Any]) -> list[dict[str, Any]]:
    """Per delivery: apples the PLC received a verdict for and how many it was told to eject."""
    delivery = {Path(row["file"]).stem: row["delivery"] for row in rows}
    counts: dict[str, dict[str, int]] = {}
    for write in writes:
        if write.item_id in delivery:
            entry = counts.setdefault(delivery[write.item_id], {"signals": 0, "ejected": 0})
            entry["signals"] += 1
            entry["ejected"] += int(write.reject)
    return [{"delivery": d, **c} for d, c in sorted(counts.items())]


def line_rows(out: Path) -> list[dict[str, str]]:
    """The generated stream in camera order."""
    with open(out / "images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sorted(rows, key=lambda row: int(row["index"]))


def _wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def check_drift(project: Project, bundle_dir: Path, drift_start: int, images: int) -> dict[str, Any]:
    """Windows of the logged stream against the bundle's reference statistics (what
    `visionline monitor drift` does); the delay counts images from the drift's start."""
    from visionline.monitor import DriftConfig, MonitorDB, Reference, check_drift

    window = max(20, min(100, images // 9))
    windows = check_drift(
        MonitorDB(project.monitor_db_url), Reference.from_bundle(bundle_dir), DriftConfig(size=window)
    )
    alarms = [
        {
            "image": w.end_index,
            "cause": w.alarm.cause,
            "kind": w.alarm.details.get("cause_kind"),
            "detectors": w.alarm.detectors,
        }
        for w in windows
        if w.alarm is not None
    ]
    after = [a for a in alarms if a["image"] >= drift_start]
    return {
        "window": window,
        "windows": len(windows),
        "drift_start": drift_start,
        "alarms": alarms,
        "delay_images": after[0]["image"] - drift_start if after else None,
    }


def operator_feedback(project: Project, truth: dict[str, tuple[str, str | None]], count: int) -> int:
    """The operator judges the `count` kept images that active learning picks (the `mixed`
    strategy: half nearest the threshold, half spread over the logged embeddings), as a quality
    inspector at the line would; labels go where they teach the next model most."""
    from visionline.data import Strategy, select_from_monitor
    from visionline.monitor import MonitorDB

    db = MonitorDB(project.monitor_db_url)
    picks, _ = select_from_monitor(db, project.config.name, Strategy.MIXED, count)
    for pick in picks:
        label, subtype = truth[pick.sha256]
        db.add_feedback(pick.prediction_id, label, subtype, "operator")
    return len(picks)


def served_rates(project: Project, bundle_dir: Path, pubkey: Path, dataset_id: str,
                 strata: dict[str, str] | None = None, batch: int = 64) -> dict[str, Any]:
    """The error rates of what the line runs: the bundle's deployed model (INT8 when accepted)
    at the bundle's threshold, counted on the test split of `dataset_id` and, for the good
    apples, also on its calib split (the split-conformal rank that set the threshold there makes
    calib's false-reject count at it an honest one, and ~180 test goods with 0 false rejects
    under-state a 1% rate that the line then shows), overall and, with
    `strata` (image path -> stratum, such as the apple variety), per stratum under `by`; and the
    confusion matrix of the classes it calls (good when not flagged, else its likeliest defect
    class; rows true, columns called). The evaluation's rates are the FP32 model's at the
    evaluation's threshold; a delivery's flags come from the bundle, and the correction is
    unbiased only with the rates of the rule that flagged."""
    import numpy as np

    from visionline.data import DatasetRepo
    from visionline.evaluate import defect_decision, operating_rates
    from visionline_edge import load_bundle

    model = load_bundle(bundle_dir, pubkey, require_signature=True)
    repo = DatasetRepo(project)
    version = repo.get(dataset_id)
    records = version.split_records("test")
    records += [r for r in version.split_records("calib") if r.label == "good"]
    probabilities = np.concatenate([
        model.predict([repo.blobs.get(r.sha256) for r in records[start : start + batch]])
        .probabilities
        for start in range(0, len(records), batch)
    ])
    # the bundle flags 1 - p(good) > its threshold, the rule defect_decision applies
    predicted = defect_decision(probabilities, model.threshold)
    index = {name: i for i, name in enumerate(model.classes)}
    labels = np.array([index[r.subtype or r.label] for r in records])
    stratum = np.array([(strata or {}).get(r.path) or "" for r in records])

    def rates(keep: np.ndarray) -> dict[str, Any]:
        return operating_rates(labels[keep], predicted[keep], model.classes, model.threshold)

    return {
        **rates(np.ones(len(records), dtype=bool)),
        "by": {s: rates(stratum == s) for s in sorted(set(stratum) - {""})},
    }


def called_class(probabilities: dict[str, float], flagged: bool, classes: Sequence[str]) -> str:
    """The class a logged verdict calls: good (the model's first class) when not flagged, else
    its likeliest defect class; `defect_decision`'s rule for a verdict whose flag the line
    already decided, counted per delivery against `served_rates`' matrix."""
    if not flagged:
        return classes[0]
    return max(classes[1:], key=lambda name: probabilities.get(name, 0.0))
