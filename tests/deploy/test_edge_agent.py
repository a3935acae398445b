"""The line agent's systemd unit (deploy/edge/) runs a `visionline edge run` that the CLI
accepts, with the example site values, and may write only where the agent keeps its state."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from deploy_support import DEPLOY, parse_visionline

from visionline.edge import open_sink

EDGE = DEPLOY / "edge"


def _unit(path: Path) -> dict[str, dict[str, str]]:
    """Sections of a systemd unit, with backslash-continued lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, value = line.split("=", 1)
            current[key] = value
    return sections


def _env(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def test_exec_start_is_a_valid_edge_run() -> None:
    unit = _unit(EDGE / "visionline-edge-agent.service")
    env = _env(EDGE / "edge.env")
    command = re.sub(r"\$\{(\w+)\}", lambda m: shlex.quote(env[m.group(1)]),
                     unit["Service"]["ExecStart"])
    words = shlex.split(command)
    assert words[0].endswith("/visionline")
    path, params = parse_visionline(words[1:])
    assert path == ["edge", "run"]
    assert params["deadline_ms"] == 80.0
    open_sink(params["plc"]).close()  # the PLC URL parses (nothing connects yet)
    assert params["trust_store"] is not None and params["channel"] is not None
    state = Path("/var/lib/visionline")
    for written in (params["outbox"], params["channel"], params["bundle"]):
        assert state in written.parents  # inside ReadWritePaths and StateDirectory
    assert unit["Service"]["ReadWritePaths"] == str(state)
    assert unit["Service"]["StateDirectory"] == state.name
    assert unit["Service"]["Restart"] == "always" and unit["Service"]["KillSignal"] == "SIGTERM"
    assert set(env) == set(re.findall(r"\$\{(\w+)\}", unit["Service"]["ExecStart"]))
