"""Shared pieces of the line agent tests: a signed tiny bundle, a recording sink, and a real
`visionline monitor serve` process on 127.0.0.1 that a test can stop and restart."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from edge_support import make_bundle

from visionline.edge import Verdict

VISIONLINE = Path(sys.executable).parent / "visionline"


def signed_bundle(base: Path) -> tuple[Path, Path]:
    """(bundle folder, trust store folder) for the tiny bundle signed by a fresh key."""
    from visionline.export import generate_keys

    private, public = generate_keys(base / "keys")
    store = base / "trusted-keys"
    store.mkdir()
    shutil.copyfile(public, store / "plant.pub")
    return make_bundle(base / "bundle", private), store


class RecordingSink:
    """A SignalSink that keeps what it was sent (the PLC in unit tests)."""

    def __init__(self) -> None:
        self.sent: list[Verdict] = []
        self.closed = False

    def send(self, verdict: Verdict) -> None:
        self.sent.append(verdict)

    def close(self) -> None:
        self.closed = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CentralLog:
    """`visionline monitor serve` over a SQLite prediction log, as a child process."""

    def __init__(self, db_path: Path) -> None:
        self.db_url = f"sqlite:///{db_path}"  # serve creates the empty log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(VISIONLINE), "monitor", "serve", "--db", self.db_url, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/api/summary", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("visionline monitor serve did not come up")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def item_ids(self) -> list[str]:
        """Every logged item id (request_id), with repeats."""
        from sqlalchemy import select

        from visionline.monitor import MonitorDB
        from visionline.monitor._db import predictions

        db = MonitorDB(self.db_url)
        try:
            with db.engine.connect() as conn:
                return list(conn.execute(select(predictions.c.request_id)).scalars())
        finally:
            db.close()
