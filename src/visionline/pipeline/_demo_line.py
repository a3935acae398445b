"""The demo's packing line: a server with its prediction log, a camera client that streams
deliveries over HTTP, the drift check, and an operator who labels a sample of logged images."""

from __future__ import annotations

import csv
import hashlib
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Self

from visionline.config import Project
from visionline.errors import ConfigError


class PackingLine:
    """Server + prediction logger + camera client; records what was sent and what was logged."""

    def __init__(
        self, project: Project, repository: Path, pubkey: Path, line_dir: Path, seed: int = 0
    ) -> None:
        self.project = project
        self.seed = seed
        self.repository = repository
        self.pubkey = pubkey
        self.line_dir = line_dir
        self.records: list[Any] = []
        self.truth: dict[str, tuple[str, str | None]] = {}
        self.url = ""
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        from visionline.data import BlobStore
        from visionline.monitor import PredictionLogger
        from visionline.serve import InferenceServer, ServerConfig

        logger = PredictionLogger(
            self.project.monitor_db_url,
            BlobStore(self.project.blob_store_uri),
            sample_rate=0.3,
            seed=self.seed,
        )
        self._stack.callback(logger.close)

        def hook(batch: list[Any]) -> None:
            self.records.extend(batch)
            logger(batch)

        server = InferenceServer(
            ServerConfig(repository=self.repository, http_port=0, grpc_port=None, pubkey=self.pubkey),
            hook=hook,
        )
        running = self._stack.enter_context(server.running())
        self.url = f"http://127.0.0.1:{running.http_port}"
        self.logger = logger
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def stream(self, rows: list[dict[str, str]]) -> dict[str, Any]:
        """Send each image as a camera client would; wait until the log holds them all."""
        import httpx

        name = self.project.config.name
        start = len(self.records)
        latencies = []
        with httpx.Client(base_url=self.url, timeout=60) as client:
            wait_ready(client, name)
            for row in rows:
                data = (self.line_dir / row["file"]).read_bytes()
                self.truth[hashlib.sha256(data).hexdigest()] = (row["label"], row["subtype"] or None)
                started = time.perf_counter()
                response = client.post(
                    f"/v1/models/{name}:predict",
                    params={"delivery": row["delivery"], "supplier": row["supplier"]},
                    files=[("files", (Path(row["file"]).name, data, "image/jpeg"))],
                )
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
        _wait_for(lambda: len(self.records) >= start + len(rows))
        self.logger.flush()
        latencies.sort()
        return {
            "records": self.records[start:],
            "latency_ms": {
                "p50": statistics.median(latencies),
                "p95": latencies[int(0.95 * (len(latencies) - 1))],
                "requests": len(latencies),
            },
        }


def line_rows(out: Path) -> list[dict[str, str]]:
    """The generated stream in camera order."""
    with open(out / "images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sorted(rows, key=lambda row: int(row["index"]))


def wait_ready(client: Any, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/v2/models/{name}/ready").status_code == 200:
            return
        time.sleep(0.2)
    raise ConfigError(f"Model {name} did not become ready within {timeout:.0f} s; see the server log.")


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
