"""The GitHub Actions template validates against the workflow schema and wires its jobs correctly.

The schema is SchemaStore's github-workflow schema as vendored by check-jsonschema; actionlint
itself installs on PyPI only by downloading a binary at build time, which these machines cannot.
"""

from __future__ import annotations

import re

import pytest
from deploy_support import (
    DEPLOY,
    ROOT,
    load_yaml12,
    parse_visionline,
    schema_errors,
    shell_commands,
    vendored_schema,
)

WORKFLOW_FILE = DEPLOY / "github-actions" / "visionline.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return load_yaml12(WORKFLOW_FILE)


def _steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def _uses(workflow: dict, job: str, action: str) -> dict:
    [step] = [s for s in _steps(workflow, job) if s.get("uses", "").startswith(f"{action}@")]
    return step


def test_workflow_follows_the_github_workflow_schema(workflow):
    assert schema_errors(workflow, vendored_schema("github-workflows")) == []


def test_schema_check_rejects_a_misspelt_step_key(workflow):
    broken = {**workflow, "jobs": {**workflow["jobs"], "test": {**workflow["jobs"]["test"]}}}
    broken["jobs"]["test"]["steps"] = [{"uses": "actions/checkout@v6", "whith": {}}]
    assert schema_errors(broken, vendored_schema("github-workflows"))


def test_triggers_cover_pushes_pull_requests_and_a_schedule(workflow):
    triggers = workflow["on"]
    assert triggers["push"]["branches"] == ["main"]
    assert "pull_request" in triggers and "workflow_dispatch" in triggers
    for entry in triggers["schedule"]:
        fields = entry["cron"].split()
        assert len(fields) == 5 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields), entry


def test_jobs_depend_on_tests_and_run_on_the_right_events(workflow):
    jobs = workflow["jobs"]
    for name, job in jobs.items():
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in jobs, f"{name} needs undefined job {need}"
    assert "if" not in jobs["test"]
    assert jobs["train"]["needs"] == "test" and jobs["image"]["needs"] == "test"
    assert "schedule" in jobs["train"]["if"] and "pull_request" not in jobs["train"]["if"]
    assert "refs/heads/main" in jobs["image"]["if"] and "'push'" in jobs["image"]["if"]


def test_only_the_image_job_may_write_packages(workflow):
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        writes = {k for k, v in job.get("permissions", {}).items() if v == "write"}
        assert writes == ({"packages"} if name == "image" else set()), name


def test_every_action_is_pinned(workflow):
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(
                    r"[\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", step["uses"]
                ), step["uses"]


def test_test_job_lints_and_runs_tests(workflow):
    scripts = " ".join(s.get("run", "") for s in _steps(workflow, "test"))
    assert "ruff check" in scripts and "pytest" in scripts
    assert "Project.load" in scripts


def test_training_fails_the_run_on_a_failed_gate(workflow):
    steps = _steps(workflow, "train")
    [run] = [
        s
        for s in steps
        if any(
            c[1:3] == ["pipeline", "run"] for c in shell_commands(s.get("run", ""), "visionline")
        )
    ]
    assert not run.get("continue-on-error") and "if" not in run
    assert "set +e" not in run["run"] and "|| true" not in run["run"]
    upload = _uses(workflow, "train", "actions/upload-artifact")
    assert upload["if"] == "always()" and steps.index(upload) > steps.index(run)


def test_image_is_built_from_the_server_dockerfile_and_pushed(workflow):
    build = _uses(workflow, "image", "docker/build-push-action")
    assert build["with"]["push"] is True
    assert (ROOT / build["with"]["context"] / build["with"]["file"]).is_file()
    checkout = _uses(workflow, "image", "actions/checkout")
    assert checkout["with"]["repository"] == "${{ env.VISIONLINE_REPOSITORY }}"
    login = _uses(workflow, "image", "docker/login-action")
    assert (
        login["with"]["registry"]
        in _uses(workflow, "image", "docker/metadata-action")["with"]["images"]
    )


def test_env_references_are_defined(workflow):
    text = WORKFLOW_FILE.read_text()
    defined = set(workflow.get("env", {}))
    for job in workflow["jobs"].values():
        defined |= set(job.get("env", {}))
    used = set(re.findall(r"\$\{\{\s*env\.(\w+)\s*\}\}", text))
    assert used and used <= defined, f"undefined: {used - defined}"


def test_visionline_commands_in_run_steps_are_real():
    workflow = load_yaml12(WORKFLOW_FILE)
    commands = [
        command
        for job in workflow["jobs"].values()
        for step in job["steps"]
        for command in shell_commands(step.get("run", ""), "visionline")
    ]
    assert [c[1:3] for c in commands] == [["pipeline", "show"], ["pipeline", "run"]]
    for command in commands:
        parse_visionline(command)
