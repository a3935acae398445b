"""`visionline serve` as a user meets it: a real subprocess, one-line errors, graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

VISIONLINE = Path(sys.executable).parent / "visionline"


def _serve_fixtures():
    """The server tests' fixtures (tiny ONNX model, bundle writer), loaded under their own name."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "serve" / "conftest.py"
    spec = importlib.util.spec_from_file_location("visionline_serve_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixtures = _serve_fixtures()
onnx_model = fixtures.onnx_model


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLINE_")} | (env or {})
    return subprocess.run(
        [str(VISIONLINE), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=environment, check=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MANAGEMENT_KEY = "management-key-0123456789"


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["serve", ".", "--host", "0.0.0.0"], {}, "Listening on 0.0.0.0 needs a management key"),
        (["serve", ".", "--host", "0.0.0.0"], {"VISIONLINE_ADMIN_KEY": MANAGEMENT_KEY}, "or pass --public-inference"),
        (["serve", ".", "--management-key-file", "admin.key"], {"VISIONLINE_ADMIN_KEY": MANAGEMENT_KEY}, "given twice"),
        (["serve", ".", "--inference-key-file", "none.key"], {}, "Cannot read the inference key file none.key"),
        (["serve", ".", "--tls-cert", "server.crt"], {}, "--tls-cert and --tls-key go together"),
    ],
)
def test_an_open_or_half_configured_server_refuses_to_start(tmp_path, args, env, message):
    (tmp_path / "admin.key").write_text(MANAGEMENT_KEY + "\n")
    result = run(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split())
    assert len(result.stderr.strip().splitlines()) <= 3  # rich wraps at 80 columns


def _serve_options(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """`visionline serve ARGS` parsed by the real command, with `env` as the environment."""
    import typer.main

    from visionline.cli import app

    for name in [n for n in os.environ if n.startswith("VISIONLINE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = typer.main.get_command(app).commands["serve"]
    return command.make_context("visionline serve", args).params


def test_keys_come_from_files_or_environment_variables(tmp_path, monkeypatch):
    from visionline.cli._serve import server_config

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api-key").write_text("inference-key-0123456789\n")  # as `kubectl create secret` or an editor leaves it
    (secrets / "admin-key").write_text(MANAGEMENT_KEY)
    from_files = server_config(_serve_options(
        [".", "--host", "0.0.0.0", "--inference-key-file", str(secrets / "api-key"),
         "--management-key-file", str(secrets / "admin-key")], {}, monkeypatch,
    ))
    from_env_files = server_config(_serve_options(
        [".", "--host", "0.0.0.0"],
        {"VISIONLINE_API_KEY_FILE": str(secrets / "api-key"), "VISIONLINE_ADMIN_KEY_FILE": str(secrets / "admin-key")},
        monkeypatch,
    ))
    from_env = server_config(_serve_options(
        [".", "--host", "0.0.0.0"],
        {"VISIONLINE_API_KEY": "inference-key-0123456789", "VISIONLINE_ADMIN_KEY": MANAGEMENT_KEY},
        monkeypatch,
    ))
    for config in (from_files, from_env_files, from_env):
        assert config.inference_key.get_secret_value() == "inference-key-0123456789"
        assert config.management_key.get_secret_value() == MANAGEMENT_KEY
    public = server_config(_serve_options(
        [".", "--host", "0.0.0.0", "--public-inference"], {"VISIONLINE_ADMIN_KEY": MANAGEMENT_KEY}, monkeypatch,
    ))
    assert public.public_inference and public.inference_key is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["serve", "missing"], "Model repository missing does not exist"),
        (["serve", ".", "--canary", "apples:2"], "MODEL:VERSION:PERCENT"),
        (["serve", ".", "--canary", "apples:2:150"], "between 0 and 100"),
        (["serve", ".", "--version-policy", "newest"], "latest:N, all or specific"),
        (["serve", ".", "--max-batch-size", "0"], "--max-batch-size"),
        (["serve", ".", "--pubkey", "nokey.pub"], "No public key at nokey.pub"),
        (["serve", ".", "--require-signature"], "no key is trusted; pass --trust-store DIR"),
        (["serve", ".", "--trust-store", "nostore"], "No trust store at nostore"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    result = run(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split())
    assert len(result.stderr.strip().splitlines()) <= 2  # rich wraps at 80 columns


def test_help_lists_the_options(tmp_path):
    result = run("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--max-batch-size", "--canary", "--shadow", "--poll-s", "--management-key-file", "--inference-key-file", "--public-inference", "--tls-cert"):
        assert option in result.stdout


@pytest.mark.slow
def test_serves_then_drains_on_sigterm(tmp_path, onnx_model):
    image_bytes = fixtures.image_bytes
    fixtures.write_bundle(onnx_model, tmp_path / "repo" / "apples" / "1", "1")
    http_port, grpc_port = _free_port(), _free_port()
    log_file = (tmp_path / "server.log").open("w")  # a file, not a pipe: a full pipe would block the server
    process = subprocess.Popen(
        [str(VISIONLINE), "serve", "repo", "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        statuses: list[int] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    try:
                        files = [("files", ("a.png", image_bytes(0), "image/png"))]
                        statuses.append(c.post("/v1/models/apples:predict", files=files).status_code)
                    except httpx.TransportError:
                        return  # the listener closed: new requests are refused, none is cut off

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        stop.set()
        thread.join(30)
    finally:
        if process.poll() is None:
            process.kill()
    log_file.close()
    stderr = (tmp_path / "server.log").read_text()
    assert process.returncode == 0, stderr
    assert statuses and set(statuses) == {200}
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(entry.get("path") == "/v1/models/apples:predict" and entry.get("request_id") for entry in logged)


def test_a_refused_option_is_named_as_the_command_line_spells_it(monkeypatch):
    """ServerConfig's field max_body_bytes had been named as the option --max-body-bytes."""
    from visionline.cli._serve import server_config
    from visionline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^--max-body-mb: .*1024 bytes \(--max-body-mb"):
        server_config(_serve_options([".", "--max-body-mb", "0"], {}, monkeypatch))
