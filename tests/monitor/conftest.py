"""Fixtures for the monitor tests: a real PostgreSQL server, toy predictions, a toy reference."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from visionline.monitor import LoggedPrediction, Reference

PG_BIN = (
    next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
    if Path("/usr/lib/postgresql").is_dir()
    else None
)
CLASSES = ["good", "bruise", "rot"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp dir; as root it runs as the `postgres` user."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.sock.mkdir(parents=True)
        if self.prefix:
            shutil.chown(base, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "visionline", "--auth=trust", "-E", "UTF8")
        self.url = f"postgresql://visionline@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.prefix, str(PG_BIN / tool), *args], capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stderr or done.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.base / "log"),
            "-w",
            "start",
        )

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill9(self) -> None:
        """SIGKILL the postmaster and its backends (a crash, not a shutdown)."""
        pid = self.postmaster_pid()
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        os.kill(pid, 9)
        for child in children:
            try:
                os.kill(int(child), 9)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )


@pytest.fixture
def postgres():
    if PG_BIN is None or not (PG_BIN / "initdb").is_file():
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    # pytest's tmp dirs are private to root; the postgres user needs a directory it can enter.
    base = Path(tempfile.mkdtemp(prefix="visionline-pg-"))
    base.chmod(0o755)
    try:
        server = PostgresServer(base)
        server.start()
        yield server
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def make_predictions(
    n: int,
    *,
    seed: int = 0,
    model: str = "apples",
    version: str = "1",
    t0: float = 1_790_000_000.0,
    deliveries: int = 3,
    image: bool = False,
    defect_share: float = 0.2,
) -> list[LoggedPrediction]:
    """Toy predictions with embeddings and quality statistics."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        bad = rng.random() < defect_share
        p_good = float(np.clip(rng.beta(2, 8) if bad else rng.beta(8, 2), 0.001, 0.999))
        rest = (1 - p_good) * rng.dirichlet([1, 1])
        probs = {"good": p_good, "bruise": float(rest[0]), "rot": float(rest[1])}
        flagged = 1 - p_good > 0.5
        out.append(
            LoggedPrediction(
                model=model,
                version=version,
                probabilities=probs,
                defect_score=1 - p_good,
                flagged=flagged,
                decision=("bruise" if rest[0] > rest[1] else "rot") if flagged else "good",
                predicted_class=max(probs, key=probs.get),
                threshold=0.5,
                ts=t0 + i,
                latency_ms=3.0,
                delivery_id=f"D{i % deliveries}",
                supplier_id=f"S{i % 2}",
                quality=[
                    120 + rng.normal(0, 5),
                    40 + rng.normal(0, 3),
                    300 + rng.normal(0, 20),
                    60.0,
                ],
                embedding=rng.normal(size=8).astype(np.float32),
                image=f"image-{seed}-{i}".encode() if image else None,
            )
        )
    return out


def toy_reference(n: int = 400, seed: int = 1) -> Reference:
    rng = np.random.default_rng(seed)
    p_good = rng.beta(8, 2, n)
    rest = (1 - p_good)[:, None] * rng.dirichlet([1, 1], n)
    probs = np.column_stack([p_good, rest])
    quality = np.column_stack(
        [
            120 + rng.normal(0, 5, n),
            40 + rng.normal(0, 3, n),
            300 + rng.normal(0, 20, n),
            np.full(n, 60.0),
        ]
    )
    return Reference.from_arrays(
        probs,
        rng.normal(size=(n, 8)),
        quality,
        classes=CLASSES,
        threshold=0.5,
        model="apples",
        metrics={"defect_recall": 0.9, "false_reject_rate": 0.02, "n_defect": 100, "n_good": 300},
    )
