"""The deployment files parse and carry what operators rely on (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
