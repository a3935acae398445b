"""One way for every benchmark to write its result: the figures plus where they came from.

Each result JSON gets a ``provenance`` block (git commit, whether the code that ran was committed,
the exact command line, the machine: CPU model, cores, load, Python, and the time), so a figure in
the README can always be traced to the code, command and machine that produced it.

A result is written only by committed code: if the benchmark script or any visionline module it
imported differs from ``HEAD``, ``write_result`` refuses, naming the files to commit.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _code_that_ran() -> set[str]:
    """Repository-relative paths of the running script and every module imported from the repo."""
    files = {Path(sys.argv[0]).resolve()} if sys.argv and sys.argv[0] else set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            files.add(Path(path).resolve())
    return {
        str(p.relative_to(REPO)) for p in files if p.is_relative_to(REPO) and ".venv" not in p.parts
    }


def uncommitted_code() -> list[str]:
    """The code that ran in this process and differs from HEAD (modified or untracked)."""
    status = _git("status", "--porcelain", "--untracked-files=all")
    # line[2:].lstrip(): _git strips the output, and with it the first line's leading blank
    changed = {line[2:].lstrip().split(" -> ")[-1] for line in status.splitlines() if line}
    return sorted(changed & _code_that_ran())


def provenance() -> dict[str, Any]:
    """Git commit, command line, machine and time of this run."""
    load1, load5, _ = os.getloadavg()
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_model": _cpu_model(),
            "cores": os.cpu_count(),
            "load_average_1m_5m": [round(load1, 2), round(load5, 2)],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, result: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``result`` with its provenance to ``benchmarks/results/<name>.json`` (or ``out``)."""
    dirty = uncommitted_code()
    if dirty:
        raise SystemExit(
            "Refusing to write a result from uncommitted code; commit these files and rerun: "
            + ", ".join(dirty)
        )
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "provenance": provenance()}, indent=2) + "\n")
    return path
