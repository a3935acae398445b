"""Running `visionline` as a user does (a real subprocess) and checking its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VISIONLINE = Path(sys.executable).parent / "visionline"


def run_visionline(
    *args: str | Path, cwd: Path, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    """`visionline ARGS` in `cwd`; a wide terminal keeps each error message on one line."""
    return subprocess.run(
        [str(VISIONLINE), *map(str, args)],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A non-zero exit, no traceback, and one `error:` line holding every needle."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
