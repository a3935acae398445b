"""The deployment files parse and carry what operators rely on (no Docker engine runs here)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
import yaml

from visionline.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "server"


def _instructions(path: Path) -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current = f"{current} {line[:-1]}" if line.endswith("\\") else f"{current} {line}"
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.jetson"])
def test_dockerfile_runs_as_non_root_with_readiness_healthcheck(name):
    steps = _instructions(DEPLOY / name)
    users = [arg for kw, arg in steps if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = [arg for kw, arg in steps if kw == "HEALTHCHECK"]
    assert health and "/v2/health/ready" in health[0]
    entry = [arg for kw, arg in steps if kw == "ENTRYPOINT"]
    assert entry and '"serve"' in entry[0]
    last_from = max(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    assert any(kw == "USER" for kw, _ in steps[last_from:])


def test_runtime_requirements_leave_out_training_stack():
    lines = (DEPLOY / "requirements.txt").read_text().splitlines()
    requirements = "\n".join(line for line in lines if not line.startswith("#"))
    for package in ("onnxruntime", "fastapi", "uvicorn", "grpcio", "tritonclient", "prometheus-client"):
        assert package in requirements
    for heavy in ("torch", "mlflow", "timm"):
        assert heavy not in requirements


def test_kubernetes_manifest_has_probes_service_and_hpa():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert pod["securityContext"]["runAsNonRoot"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001}
    service_ports = {p["port"] for p in kinds["Service"]["spec"]["ports"]}
    assert service_ports == {8000, 8001}
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 1 and hpa["maxReplicas"] > hpa["minReplicas"]


def _exec_form(path: Path, keyword: str) -> list[str]:
    found = [arg for kw, arg in _instructions(path) if kw == keyword]
    return json.loads(found[-1]) if found else []


def _serve_config(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """What `visionline serve` would run with, given this command line and environment."""
    import typer.main

    from visionline.cli import app
    from visionline.cli._serve import server_config

    assert argv[:2] == ["visionline", "serve"], argv
    for name in [n for n in os.environ if n.startswith("VISIONLINE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = typer.main.get_command(app).commands["serve"]
    return server_config(command.make_context("visionline serve", argv[2:]).params)


KEYS_FROM_SECRETS = {"VISIONLINE_API_KEY": secrets.token_urlsafe(24), "VISIONLINE_ADMIN_KEY": secrets.token_urlsafe(24)}


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.jetson"])
def test_server_images_refuse_to_run_open_and_start_with_keys_from_env(name, monkeypatch):
    from visionline.serve._security import is_loopback

    argv = _exec_form(DEPLOY / name, "ENTRYPOINT") + _exec_form(DEPLOY / name, "CMD")
    with pytest.raises(ConfigError, match="needs a management key"):
        _serve_config(argv, {}, monkeypatch)
    config = _serve_config(argv, KEYS_FROM_SECRETS, monkeypatch)
    assert not is_loopback(config.host)
    assert config.inference_key.get_secret_value() == KEYS_FROM_SECRETS["VISIONLINE_API_KEY"]
    assert config.management_key.get_secret_value() == KEYS_FROM_SECRETS["VISIONLINE_ADMIN_KEY"]


def test_kubernetes_server_takes_both_keys_from_a_secret(monkeypatch):
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    for name in KEYS_FROM_SECRETS:
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"], name
    argv = _exec_form(DEPLOY / "Dockerfile", "ENTRYPOINT") + container["args"]
    config = _serve_config(argv, KEYS_FROM_SECRETS, monkeypatch)
    assert config.inference_key is not None and config.management_key is not None
    assert not config.public_inference
    with pytest.raises(ConfigError, match="needs a management key"):
        _serve_config(argv, {}, monkeypatch)


def test_kubernetes_and_compose_servers_load_only_bundles_signed_by_a_trusted_key(monkeypatch):
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    entrypoint = _exec_form(DEPLOY / "Dockerfile", "ENTRYPOINT")
    config = _serve_config(entrypoint + container["args"], KEYS_FROM_SECRETS, monkeypatch)
    assert config.require_signature and config.trust_store is not None
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    mount = mounts[str(config.trust_store)]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"]

    compose = yaml.safe_load((DEPLOY.parent / "plant" / "docker-compose.yaml").read_text())
    server = compose["services"]["server"]
    config = _serve_config(entrypoint + server["command"], KEYS_FROM_SECRETS, monkeypatch)
    assert config.require_signature and config.trust_store is not None
    assert any(v.endswith(f":{config.trust_store}:ro") for v in server["volumes"])
