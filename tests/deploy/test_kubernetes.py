"""The Kubernetes manifests validate against the Kubernetes schemas and fit together.

kubernetes-validate ships the JSON schemas of every Kubernetes release, so the strict check (no
unknown fields, right types) runs offline. No cluster is involved.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_support import DEPLOY, load_documents, parse_visionline

KUBERNETES = DEPLOY / "kubernetes"
# The oldest release the manifests target: CronJob.spec.timeZone is GA since 1.27.
KUBERNETES_VERSION = "1.29"
MANIFESTS = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
ALL_MANIFESTS = [*MANIFESTS, DEPLOY / "server" / "kubernetes.yaml"]
GPU = "nvidia.com/gpu"


def _documents(paths: list[Path]) -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in paths for doc in load_documents(path)]


def _pod_spec(doc: dict) -> dict | None:
    kind = doc["kind"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def _workloads(paths: list[Path]) -> list[tuple[str, dict, dict]]:
    return [(name, doc, spec) for name, doc in _documents(paths) if (spec := _pod_spec(doc))]


@pytest.mark.parametrize(
    ("name", "doc"), _documents(ALL_MANIFESTS), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_manifest_is_valid_for_kubernetes(name, doc):
    import kubernetes_validate

    assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), name
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_strict_validation_rejects_a_misspelt_field():
    import kubernetes_validate

    job = load_documents(KUBERNETES / "training-job.yaml")[0]
    job["spec"]["template"]["spec"]["containers"][0]["comand"] = ["visionline"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_in_its_folder():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    for resource in resources:
        assert (KUBERNETES / resource).resolve().is_relative_to(KUBERNETES), (
            f"{resource}: kustomize refuses files outside its folder"
        )
    assert sorted(resources) == sorted(p.name for p in MANIFESTS)
    images = {i["name"] for i in kustomization.get("images", [])}
    used = {
        c["image"].partition(":")[0]
        for _, _, spec in _workloads(MANIFESTS)
        for c in spec["containers"]
    }
    assert images <= used, f"image overrides that match no container: {images - used}"


def test_every_claimed_volume_is_a_defined_persistent_volume_claim():
    claims = {
        doc["metadata"]["name"]
        for _, doc in _documents(ALL_MANIFESTS)
        if doc["kind"] == "PersistentVolumeClaim"
    }
    for name, doc, spec in _workloads(ALL_MANIFESTS):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}: mount {mount['name']} has no volume"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    shared = [doc for _, doc in _documents(MANIFESTS) if doc["kind"] == "PersistentVolumeClaim"]
    assert all(doc["spec"]["accessModes"] == ["ReadWriteMany"] for doc in shared)


@pytest.mark.parametrize("name", ["training-job.yaml", "retrain-cronjob.yaml"])
def test_training_runs_on_a_gpu_node_as_a_one_shot_job(name):
    [(_, _doc, spec)] = _workloads([KUBERNETES / name])
    [container] = spec["containers"]
    assert container["resources"]["limits"][GPU] >= 1
    assert container["resources"]["requests"][GPU] == container["resources"]["limits"][GPU]
    assert any(key.startswith("nvidia.com/") for key in spec["nodeSelector"])
    assert any(t["key"] == GPU and t["effect"] == "NoSchedule" for t in spec["tolerations"])
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert (
        volumes[mounts[container["workingDir"]]]["persistentVolumeClaim"]["claimName"]
        == "visionline-project"
    )
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    server = next(
        d
        for _, d in _documents([DEPLOY / "server" / "kubernetes.yaml"])
        if d["kind"] == "Deployment"
    )
    server_claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in server["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"] in server_claims


def test_retraining_is_scheduled_and_never_overlaps():
    [cronjob] = load_documents(KUBERNETES / "retrain-cronjob.yaml")
    fields = cronjob["spec"]["schedule"].split()
    assert len(fields) == 5
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("training-job.yaml", ["pipeline", "run"]), ("retrain-cronjob.yaml", ["retrain"])],
)
def test_container_commands_are_real_visionline_commands(name, expected):
    [(_, _, spec)] = _workloads([KUBERNETES / name])
    [container] = spec["containers"]
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[0] == "visionline"
    path, _ = parse_visionline(command)
    assert path == expected
