"""The line agent's systemd unit and slim image (deploy/edge/) run a `visionline edge run` that
the CLI accepts, with the example site values, and may write only where the agent keeps its
state; the image holds no torch, and the agent runs with only what the image installs. No Docker
engine runs here: the image itself is built by nobody in these tests (untested as an image)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from deploy_support import (
    DEPLOY,
    ROOT,
    dockerfile_entrypoint,
    dockerfile_instructions,
    parse_visionline,
    requirements_closure,
)

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
        assert state in Path(written).parents  # inside ReadWritePaths and StateDirectory
    assert unit["Service"]["ReadWritePaths"] == str(state)
    assert unit["Service"]["StateDirectory"] == state.name
    assert unit["Service"]["Restart"] == "always" and unit["Service"]["KillSignal"] == "SIGTERM"
    assert int(unit["Service"]["Nice"]) < 0  # the line's deadline first
    assert set(env) == set(re.findall(r"\$\{(\w+)\}", unit["Service"]["ExecStart"]))


_RUN_WITHIN = """
import importlib.abc, importlib.metadata, sys
from packaging.utils import canonicalize_name
allowed = set(sys.argv[1].split(","))
owners = importlib.metadata.packages_distributions()
class OnlyAllowed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {canonicalize_name(d) for d in owners.get(top, [])}
        if top in sys.stdlib_module_names or not dists or dists & allowed:
            return None
        raise ModuleNotFoundError(f"{top} comes from {sorted(dists)}, not in the image", name=name)
sys.meta_path.insert(0, OnlyAllowed())
sys.argv = ["visionline", *sys.argv[2:]]
from visionline.cli import app
app()
"""


def test_edge_image_is_slim_and_starts_the_agent_from_its_config() -> None:
    steps = dockerfile_instructions(EDGE / "Dockerfile")
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    users = [args for keyword, args in steps[last_from:] if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    installs = [args for keyword, args in steps if keyword == "RUN"]
    assert any("--no-deps" in args and args.rstrip().endswith(" .") for args in installs)
    assert any("-r requirements.txt" in args for args in installs)
    entrypoint = dockerfile_entrypoint(EDGE / "Dockerfile")
    assert entrypoint[0] == "visionline"
    path, params = parse_visionline(entrypoint[1:])
    assert path == ["edge", "run"] and params["config"] == Path("/etc/visionline/edge.yaml")
    from visionline.edge import load_edge_config

    config = load_edge_config(EDGE / "edge.yaml")  # the example validates
    assert config.metrics_port is not None and f"EXPOSE {config.metrics_port}" in " ".join(
        f"{k} {a}" for k, a in steps
    )
    open_sink(config.plc).close()
    closure = requirements_closure(EDGE / "requirements.txt")
    assert {"onnxruntime", "asyncua", "watchdog", "httpx"} <= closure
    assert not closure & {"torch", "torchvision", "timm", "mlflow", "pandas", "sqlalchemy",
                          "scikit-learn", "scipy", "fastapi"}


@pytest.mark.slow
def test_the_agent_runs_with_only_the_images_distributions(tmp_path: Path) -> None:
    """A hot folder through the CLI and --config in an interpreter that can import only the
    image's requirements (plus the standard library and visionline itself, which the image
    installs with --no-deps): the run path needs no torch, pandas or SQLAlchemy."""
    import subprocess
    import sys

    import yaml
    from edge_agent_support import signed_bundle
    from edge_support import png

    bundle, store = signed_bundle(tmp_path)
    camera = tmp_path / "camera"
    camera.mkdir()
    for i, colour in enumerate([(230, 230, 230), (10, 10, 10)]):
        (camera / f"item{i}.png").write_bytes(png(colour))
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "bundle": str(bundle), "trust_store": str(store), "source": str(camera),
        "outbox": str(tmp_path / "outbox.db"), "max_items": 2, "line": "slim",
    }))
    allowed = requirements_closure(EDGE / "requirements.txt") | {"visionline"}
    done = subprocess.run(
        [sys.executable, "-c", _RUN_WITHIN, ",".join(sorted(allowed)), "edge", "run",
         "--config", str(config)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"verdicts": 2' in done.stdout and '"rejected": 1' in done.stdout
