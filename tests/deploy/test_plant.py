"""The plant stack (deploy/plant/) holds together: compose, Prometheus, Grafana and the images.

Nothing here starts a container (there is no Docker engine on the development machines); each
test compares the files with the compose specification, with each other, and with the code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml
from deploy_support import (
    DEPLOY,
    compose_variables,
    dockerfile_entrypoint,
    dockerfile_instructions,
    exported_metrics,
    import_within,
    interpolate,
    parse_click,
    parse_visionline,
    promql_problems,
    read_env_file,
    requirements_closure,
    schema_errors,
    vendored_schema,
)

PLANT = DEPLOY / "plant"
COMPOSE_FILE = PLANT / "docker-compose.yaml"
DATASOURCE_FILE = PLANT / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDER_FILE = PLANT / "grafana" / "provisioning" / "dashboards" / "visionline.yaml"
DASHBOARD_FILE = PLANT / "grafana" / "dashboards" / "visionline.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(PLANT / ".env.example")


@pytest.fixture(scope="module")
def resolved(compose: dict, env_example: dict[str, str]) -> dict:
    """The compose file as `docker compose config` would see it with .env.example as .env."""
    return interpolate(compose, env_example)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def _volume_source(entry: str | dict) -> tuple[str, str]:
    """(source, target) of a volume entry; colons inside `${VAR:-default}` do not split it."""
    if isinstance(entry, dict):
        return entry.get("source", ""), entry["target"]
    parts = re.split(r":(?![^{]*\})", entry)
    return parts[0], parts[1]


def _entrypoint(service: dict) -> list[str]:
    if "entrypoint" in service:
        entry = service["entrypoint"]
        return entry if isinstance(entry, list) else entry.split()
    return dockerfile_entrypoint(
        PLANT / service["build"]["context"] / service["build"]["dockerfile"]
    )


def _argv(service: dict) -> list[str]:
    command = service.get("command", [])
    return _entrypoint(service) + (command if isinstance(command, list) else command.split())


def _option(service: dict, flag: str) -> str:
    command = service["command"]
    return command[command.index(flag) + 1]


def test_compose_file_follows_the_compose_specification(compose):
    assert schema_errors(compose, vendored_schema("compose-spec")) == []


def test_every_service_has_an_image_or_a_build_whose_files_exist(compose):
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            context = (PLANT / service["build"]["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context} is missing"
            assert (context / service["build"]["dockerfile"]).is_file(), name
            assert (context / "pyproject.toml").is_file(), (
                f"{name}: context is not the repository root"
            )
        else:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin a tag for {image}"


def test_bind_mounted_files_exist_and_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for entry in service.get("volumes", []):
            source, target = _volume_source(entry)
            assert PurePosixPath(target).is_absolute(), f"{name}: {target}"
            if "$" in source:
                assert compose_variables(source), f"{name}: {source}"
            elif source.startswith((".", "/")):
                assert (PLANT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                used.add(source)
    assert used <= declared, f"undeclared volumes: {used - declared}"
    assert declared <= used, f"declared but unused volumes: {declared - used}"


def test_dependencies_exist_and_wait_for_healthchecks(compose):
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for target in depends:
            assert target in services, f"{name} depends on undefined service {target}"
            assert target != name
            condition = depends[target].get("condition") if isinstance(depends, dict) else None
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s healthcheck"
            if "profiles" not in service:
                assert "profiles" not in services[target], (
                    f"{name} needs {target}, which is off by default"
                )


def test_long_running_services_have_healthchecks(compose):
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_server_is_built_from_the_server_dockerfile_and_checks_readiness(compose):
    server = compose["services"]["server"]
    assert server["build"]["dockerfile"] == "deploy/server/Dockerfile"
    assert "/v2/health/ready" in " ".join(server["healthcheck"]["test"])
    assert any(_volume_source(v)[1] == "/models" for v in server["volumes"])


def test_retrain_runs_on_demand_only(compose):
    retrain = compose["services"]["retrain"]
    assert retrain["profiles"] == ["retrain"]
    assert retrain["restart"] == "no"
    assert retrain["command"][:2] == ["retrain", "--if-triggered"]


def test_every_variable_is_in_env_example_and_every_example_key_is_used(env_example):
    text = COMPOSE_FILE.read_text()
    used = compose_variables(text)
    assert used <= env_example.keys(), f"missing from .env.example: {used - env_example.keys()}"
    assert env_example.keys() <= used, f"unused in docker-compose.yaml: {env_example.keys() - used}"
    assert compose_variables("$${INSIDE} ${A:-x} ${B:?set B} $C") == {"A", "B", "C"}


def test_env_example_resolves_every_required_variable(resolved):
    postgres = resolved["services"]["postgres"]["environment"]
    assert all(postgres.values()), postgres
    url = _option(resolved["services"]["server"], "--log-db")
    assert re.fullmatch(r"postgresql://\w+:[\w-]+@postgres:5432/\w+", url), url


@pytest.mark.parametrize("name", ["server", "dashboard", "retrain"])
def test_visionline_commands_parse_as_the_real_cli(resolved, name):
    path, params = parse_visionline(_argv(resolved["services"][name]))
    if name == "server":
        assert path == ["serve"] and params["repository"] == Path("/models")
        assert params["log_db"].startswith("postgresql://") and params["poll_s"] == 30
    if name == "dashboard":
        assert path == ["monitor", "serve"] and params["bundle"].parts[1] == "models"


def test_server_runs_closed_with_both_keys_from_env_file(resolved, env_example, monkeypatch):
    from visionline.cli._serve import server_config
    from visionline.errors import ConfigError
    from visionline.serve._security import is_loopback

    server = resolved["services"]["server"]
    for name in [n for n in os.environ if n.startswith("VISIONLINE_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="needs a management key"):
        server_config(parse_visionline(_argv(server))[1])
    for name, value in server["environment"].items():
        monkeypatch.setenv(name, value)
    config = server_config(parse_visionline(_argv(server))[1])
    assert not is_loopback(config.host) and not config.public_inference
    assert config.inference_key.get_secret_value() == env_example["VISIONLINE_API_KEY"]
    assert config.management_key.get_secret_value() == env_example["VISIONLINE_ADMIN_KEY"]


def test_mlflow_command_parses_as_the_installed_mlflow_cli(resolved):
    from mlflow.cli import cli

    argv = _argv(resolved["services"]["mlflow"])
    assert argv[0] == "mlflow"
    path, params = parse_click(cli, "mlflow", argv[1:])
    assert path == ["server"]
    assert params["backend_store_uri"].startswith("postgresql+psycopg://")
    assert params["artifacts_destination"] == "/mlartifacts"
    mounts = {_volume_source(v)[1] for v in resolved["services"]["mlflow"]["volumes"]}
    assert "/mlartifacts" in mounts
    assert "mlflow:5000" in params["allowed_hosts"].split(",")


def test_prometheus_scrapes_compose_services_on_the_ports_they_listen_on(resolved):
    config = yaml.safe_load((PLANT / "prometheus.yml").read_text())
    listening = {
        "server": parse_visionline(_argv(resolved["services"]["server"]))[1]["http_port"],
        "dashboard": parse_visionline(_argv(resolved["services"]["dashboard"]))[1]["port"],
    }
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"])
    scraped = set()
    for job in jobs.values():
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                port = int(port)
                if host == "localhost":
                    assert job["job_name"] == "prometheus" and port == 9090
                    continue
                assert host in resolved["services"], f"{target} is not a compose service"
                assert port == listening[host], f"{host} listens on {listening[host]}, not {port}"
                assert job.get("metrics_path", "/metrics") == "/metrics"
                scraped.add(host)
    assert scraped == {"server", "dashboard"}


def test_prometheus_config_files_are_mounted_where_it_reads_them(resolved):
    prometheus = resolved["services"]["prometheus"]
    mounts = {_volume_source(v)[1]: _volume_source(v)[0] for v in prometheus["volumes"]}
    config = yaml.safe_load((PLANT / "prometheus.yml").read_text())
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert mounts[config_flag.partition("=")[2]] == "./prometheus.yml"
    for rule_file in config["rule_files"]:
        assert (PLANT / mounts[rule_file]).is_file()


def test_alert_rules_use_exported_metrics():
    rules = [
        r
        for g in yaml.safe_load((PLANT / "prometheus-alerts.yml").read_text())["groups"]
        for r in g["rules"]
    ]
    assert rules
    for rule in rules:
        assert rule["alert"] and rule["annotations"]["summary"]
        assert promql_problems(rule["expr"]) == [], rule["alert"]


def test_grafana_provisions_the_stack_prometheus_and_the_mounted_dashboards(resolved):
    grafana = resolved["services"]["grafana"]
    mounts = {_volume_source(v)[1]: _volume_source(v)[0] for v in grafana["volumes"]}
    assert (
        PLANT / mounts["/etc/grafana/provisioning"] / "datasources" / DATASOURCE_FILE.name
    ).is_file()
    [source] = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    host, _, port = source["url"].removeprefix("http://").partition(":")
    assert host == "prometheus" and host in resolved["services"] and port == "9090"
    [provider] = yaml.safe_load(PROVIDER_FILE.read_text())["providers"]
    dashboards_dir = PLANT / mounts[provider["options"]["path"]]
    assert DASHBOARD_FILE.parent.resolve() == dashboards_dir.resolve()


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_every_panel_queries_the_provisioned_datasource(dashboard):
    [source] = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    wanted = {"type": source["type"], "uid": source["uid"]}
    for panel in _panels(dashboard):
        assert panel["datasource"] == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", wanted) == wanted, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == wanted


def test_every_panel_uses_metrics_and_labels_visionline_exports(dashboard):
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            assert promql_problems(target["expr"]) == [], panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert promql_problems(variable["query"]["query"]) == [], variable["name"]


def test_dashboard_covers_serving_and_monitoring(dashboard):
    exprs = " ".join(t["expr"] for p in _panels(dashboard) for t in p["targets"])
    for needed in (
        "visionline_requests_total",
        "visionline_request_duration_seconds_bucket",
        "visionline_step_duration_seconds_bucket",
        "visionline_batch_size",
        "visionline_queue_rows",
        "visionline_rejected_requests_total",
        "visionline_flag_rate",
        "visionline_drift_alarms",
        "visionline_estimated_false_reject_rate",
    ):
        assert needed in exprs, needed
    quantiles = set(re.findall(r"histogram_quantile\((0\.\d+), sum by \(le, step\)", exprs))
    assert quantiles == {"0.5", "0.95", "0.99"}


def test_dashboard_layout_has_unique_ids_and_no_overlaps(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    boxes = [(p["title"], p["gridPos"]) for p in dashboard["panels"]]
    for title, box in boxes:
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24, title
    for i, (first, a) in enumerate(boxes):
        for second, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{first!r} overlaps {second!r}"


def test_metric_check_catches_wrong_names_and_labels():
    assert promql_problems("rate(visionline_request_total[5m])") == [
        "visionline_request_total is not exported by visionline"
    ]
    assert promql_problems('sum by (step) (rate(visionline_requests_total{route="x"}[5m]))') == [
        "label 'route' is not on ['visionline_requests_total']",
        "label 'step' is not on ['visionline_requests_total']",
    ]
    assert promql_problems("up") == ["'up' uses no visionline metric"]
    assert "le" in exported_metrics()["visionline_step_duration_seconds_bucket"]


def test_plant_image_runs_visionline_as_a_non_root_user():
    steps = dockerfile_instructions(PLANT / "Dockerfile")
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    users = [args for keyword, args in steps[last_from:] if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert dockerfile_entrypoint(PLANT / "Dockerfile") == ["visionline"]
    installs = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert "postgres" in installs


def test_postgres_init_script_creates_the_mlflow_database(resolved):
    postgres = resolved["services"]["postgres"]
    [script] = [
        _volume_source(v)[0] for v in postgres["volumes"] if "initdb" in _volume_source(v)[1]
    ]
    text = (PLANT / script).read_text()
    assert "CREATE DATABASE" in text and "$MLFLOW_DB" in text
    backend = _option(resolved["services"]["mlflow"], "--backend-store-uri")
    assert backend.rpartition("/")[2] == postgres["environment"]["MLFLOW_DB"]


@pytest.fixture(scope="module")
def server_image_distributions() -> set[str]:
    return requirements_closure(DEPLOY / "server" / "requirements.txt")


def test_server_image_environment_check_refuses_what_the_image_lacks(server_image_distributions):
    assert import_within(server_image_distributions, ["visionline.serve"]).returncode == 0
    refused = import_within(server_image_distributions, ["torch"])
    assert refused.returncode != 0 and "torch" in refused.stderr


def test_server_image_can_log_predictions_to_postgresql(server_image_distributions, compose):
    assert "--log-db" in compose["services"]["server"]["command"]
    result = import_within(server_image_distributions, ["visionline.monitor", "psycopg"])
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
