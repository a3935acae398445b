"""`visionline label`: export → (simulated) annotation → import round trip, and bad input."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from visionline.config import Project, init_project
from visionline.data import DatasetRepo, ImageRecord

VISIONLINE = Path(sys.executable).with_name("visionline")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real console script, wide enough that a one-line error stays one line."""
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    env.pop("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", None)
    return subprocess.run(
        [str(VISIONLINE), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    init_project(tmp_path / "proj")
    return Project.load(tmp_path / "proj")


@pytest.fixture
def version(project: Project, tmp_path: Path) -> tuple[DatasetRepo, object, dict[str, Path]]:
    """A version of five tiny images; their source files stay on disk under tmp/imgs."""
    repo = DatasetRepo(project)
    labels = {
        "a": ("good", None),
        "b": ("defect", "bruise"),
        "c": ("defect", None),
        "d": ("good", None),
        "e": ("defect", "rot"),
    }
    files: dict[str, Path] = {}
    records = []
    for i, (key, (label, subtype)) in enumerate(labels.items()):
        data = _png((40 * i, 10, 200 - 30 * i))
        files[key] = tmp_path / "imgs" / f"{key}.png"
        files[key].parent.mkdir(exist_ok=True)
        files[key].write_bytes(data)
        sha = repo.blobs.put(data)
        records.append(
            ImageRecord(
                sha256=sha,
                path=f"imgs/{key}.png",
                bytes=len(data),
                width=8,
                height=6,
                mode="RGB",
                label=label,
                subtype=subtype,
                source="test",
                split=None,
            )
        )
    return repo, repo.create_version(records, name="v1", parent=None, metadata={}), files


def _choice(value: str, by: int, ground_truth: bool = False, cancelled: bool = False) -> dict:
    return {
        "completed_by": by,
        "was_cancelled": cancelled,
        "ground_truth": ground_truth,
        "result": [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [value]},
            }
        ],
    }


def test_export_annotate_import_round_trip(version, project: Project, tmp_path: Path) -> None:
    repo, v1, files = version
    by_path = {r.path: r for r in v1.records}
    predictions = tmp_path / "preds.csv"
    predictions.write_text("path,good,bruise,rot\nimgs/b.png,0.2,0.3,0.5\nimgs/c.png,0.1,0.8,0.1\n")
    out = tmp_path / "ls" / "tasks.json"
    result = run(
        "label",
        "export",
        v1.short_id,
        "--out",
        out,
        "--predictions",
        predictions,
        "--document-root",
        project.root,
        "--model-version",
        "m7",
        "-p",
        project.root,
    )
    assert result.returncode == 0, result.stderr
    assert "5 tasks" in result.stdout and "2 with predictions" in result.stdout
    assert "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" in result.stdout and "'m7'" in result.stdout
    assert (out.parent / "label_config.xml").read_text().count("<Choice ") == 6
    tasks = json.loads(out.read_text())
    assert all(
        t["data"]["image"].startswith("/data/local-files/?d=.visionline/store/") for t in tasks
    )
    assert {t["data"]["dataset_version"] for t in tasks} == {v1.id}
    predicted = {t["data"]["path"]: t["predictions"][0] for t in tasks if "predictions" in t}
    assert predicted["imgs/b.png"]["model_version"] == "m7"
    assert predicted["imgs/b.png"]["result"][0]["value"]["choices"] == ["rot"]

    unlabelled = tmp_path / "ls" / "todo.json"
    result = run(
        "label", "export", v1.short_id, "--out", unlabelled, "--only-unlabelled", "-p", project.root
    )
    assert result.returncode == 0, result.stderr
    assert [t["data"]["path"] for t in json.loads(unlabelled.read_text())] == ["imgs/c.png"]

    # Label Studio's export: the same tasks plus annotations
    annotations = {
        "imgs/a.png": [_choice("good", 1)],  # unchanged
        "imgs/b.png": [_choice("rot", 1), _choice("rot", 2), _choice("bruise", 3)],  # majority
        "imgs/c.png": [_choice("bruise", 1), _choice("scab", 2, ground_truth=True)],
        "imgs/e.png": [_choice("cut", 1), _choice("good", 2), _choice("rot", 3, cancelled=True)],
    }
    for i, task in enumerate(tasks, start=1):
        task["id"] = i
        task["annotations"] = annotations.get(task["data"]["path"], [])
    # d: no sha256, an absolute path to a copy inside the document root → mapped back by its bytes
    d_copy = project.root / "originals" / "d.png"
    d_copy.parent.mkdir()
    d_copy.write_bytes(files["d"].read_bytes())
    d_task = next(t for t in tasks if t["data"]["path"] == "imgs/d.png")
    d_task["data"] = {"image": str(d_copy), "dataset_version": v1.id}
    d_task["annotations"] = [_choice("cut", 1), _choice("cut", 2)]
    # a new image that Label Studio served from the document root
    new_file = project.root / "incoming" / "f.png"
    new_file.parent.mkdir()
    new_file.write_bytes(_png((1, 2, 3)))
    tasks.append(
        {
            "id": 99,
            "data": {"image": "/data/local-files/?d=incoming/f.png"},
            "annotations": [_choice("insect_hole", 4)],
        }
    )
    # the same image imported twice into Label Studio and labelled differently: first one wins
    b_sha = by_path["imgs/b.png"].sha256
    tasks.append(
        {
            "id": 100,
            "data": {"image": "copy-of-b", "sha256": b_sha},
            "annotations": [_choice("good", 5)],
        }
    )
    export = tmp_path / "ls" / "export.json"
    export.write_text(json.dumps(tasks))

    result = run(
        "label",
        "import",
        export,
        "--parent",
        v1.short_id,
        "--name",
        "relabelled",
        "--document-root",
        project.root,
        "-p",
        project.root,
    )
    assert result.returncode == 0, result.stderr
    assert "bruise → rot" in result.stdout and "defect → scab" in result.stdout
    assert "copy-of-b: same image as" in result.stdout
    assert "tie" in result.stdout and "cut (1) vs good (1)" in result.stdout

    versions = DatasetRepo(project).list()
    assert len(versions) == 2
    v2 = next(v for v in versions if v.id != v1.id)
    assert v2.parent == v1.id and v2.name == "relabelled"
    labels = {r.path: (r.label, r.subtype) for r in v2.records}
    assert labels["imgs/a.png"] == ("good", None)
    assert labels["imgs/b.png"] == ("defect", "rot")
    assert labels["imgs/c.png"] == ("defect", "scab")
    assert labels["imgs/d.png"] == ("defect", "cut")
    assert labels["imgs/e.png"] == ("defect", "rot")  # the tie leaves it as it was
    added = next(r for r in v2.records if r.path.endswith("incoming/f.png"))
    assert (added.label, added.subtype, added.source) == ("defect", "insect_hole", "labelstudio")
    assert repo.blobs.get(added.sha256) == new_file.read_bytes()
    provenance = v2.metadata["labels"]
    assert provenance["ties"] == 1 and provenance["cancelled_annotations"] == 1
    assert provenance["ground_truth_decisions"] == 1
    assert v2.metadata["changed"] == 3 and v2.metadata["added"] == 1
    assert v2.metadata["conflicts"] == 1
    assert {r.path: r.label for r in DatasetRepo(project).get(v1.id).records} == {
        p: r.label for p, r in by_path.items()
    }

    again = run(
        "label",
        "import",
        export,
        "--parent",
        v2.short_id,
        "-p",
        project.root,
        "--document-root",
        project.root,
    )
    assert again.returncode == 0, again.stderr
    assert "no new version was made" in again.stdout
    assert len(DatasetRepo(project).list()) == 2


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_import_bad_input_leaves_data_intact(version, project: Project, tmp_path: Path) -> None:
    _, v1, _ = version
    malformed = tmp_path / "bad.json"
    malformed.write_text('[{"data": ')
    good = tmp_path / "ok.json"
    good.write_text("[]")
    _one_line_error(
        run(
            "label",
            "import",
            tmp_path / "missing.json",
            "--parent",
            v1.short_id,
            "-p",
            project.root,
        ),
        "does not exist",
    )
    _one_line_error(
        run("label", "import", malformed, "--parent", v1.short_id, "-p", project.root),
        "not valid JSON",
    )
    _one_line_error(
        run("label", "import", good, "--parent", "deadbeef", "-p", project.root),
        "No dataset version 'deadbeef'",
    )
    _one_line_error(
        run("label", "export", "deadbeef", "--out", tmp_path / "t.json", "-p", project.root),
        "No dataset version",
    )
    bad_predictions = tmp_path / "p.json"
    bad_predictions.write_text(json.dumps([{"path": "imgs/a.png", "label": "mould"}]))
    _one_line_error(
        run(
            "label",
            "export",
            v1.short_id,
            "--out",
            tmp_path / "t.json",
            "--predictions",
            bad_predictions,
            "-p",
            project.root,
        ),
        "'mould'",
    )
    assert not (tmp_path / "t.json").exists()
    assert [v.id for v in DatasetRepo(project).list()] == [v1.id]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_push_and_pull_without_server_name_url_and_fix(version, project: Project) -> None:
    _, v1, _ = version
    url = f"http://127.0.0.1:{_closed_port()}"
    push = run("label", "push", v1.short_id, "--url", url, "--api-key", "k", "-p", project.root)
    _one_line_error(push, url, "label-studio start")
    pull = run(
        "label",
        "pull",
        "--project-id",
        "1",
        "--parent",
        v1.short_id,
        "--url",
        url,
        "--api-key",
        "k",
        "-p",
        project.root,
    )
    _one_line_error(pull, url, "label-studio start")


def test_import_skips_bad_and_outside_files_with_reasons(
    version, project: Project, tmp_path
) -> None:
    _, v1, _ = version
    root = project.root / "incoming"
    root.mkdir()
    (root / "ok.png").write_bytes(_png((1, 250, 3)))
    (root / "bad.png").write_bytes(b"not an image")
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps(
            [
                {
                    "data": {"image": f"/data/local-files/?d={name}"},
                    "annotations": [_choice("rot", 1)],
                }
                for name in ("ok.png", "bad.png", "../../imgs/a.png")
            ]
        )
    )
    result = run(
        "label",
        "import",
        export,
        "--parent",
        v1.short_id,
        "-p",
        project.root,
        "--document-root",
        root,
    )
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "skipped (outside the root, unreadable or not an image) │ 2" in out
    assert "added (new images) │ 1" in out
    assert "d=bad.png: " in out and "cannot be decoded" in out
    assert "d=../../imgs/a.png: " in out and "lies outside the document root" in out
    assert len(DatasetRepo(project).list()) == 2


# --- against a real Label Studio server (its own venv; see tests/labelstudio_support.py) ---


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory):
    """One real server for this module; its local-files document root holds every tmp_path."""
    from labelstudio_support import start

    server = start(tmp_path_factory.mktemp("label-studio"), tmp_path_factory.getbasetemp())
    yield server
    server.stop()


def _ls(server, *args: str | Path, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return run(*args, "--url", server.url, "--api-key", token or server.token)


def _project_id(stdout: str) -> int:
    words = " ".join(stdout.split()).split("Label Studio project ", 1)[1]
    return int(words.split(" ", 1)[0])


def _answer(choice: str, box: bool = False) -> list[dict]:
    """What the labelling page submits: the class choice, and a rectangle for a defect."""
    result = [
        {
            "id": "c1",
            "from_name": "choice",
            "to_name": "image",
            "type": "choices",
            "origin": "manual",
            "value": {"choices": [choice]},
        }
    ]
    if box:
        result.append(
            {
                "id": "r1",
                "from_name": "region",
                "to_name": "image",
                "type": "rectanglelabels",
                "origin": "manual",
                "original_width": 8,
                "original_height": 6,
                "image_rotation": 0,
                "value": {
                    "x": 10.0,
                    "y": 20.0,
                    "width": 30.0,
                    "height": 40.0,
                    "rotation": 0,
                    "rectanglelabels": [choice],
                },
            }
        )
    return result


@pytest.mark.slow
def test_push_annotate_pull_against_real_label_studio(
    label_studio, version, project: Project, tmp_path: Path
) -> None:
    """The whole loop as a user runs it: push with pre-annotations, annotators submit through
    the REST call the browser makes, pull refuses a partial result, then makes a version whose
    metadata says who labelled what, when, and where they disagreed."""
    repo, v1, _ = version
    predictions = tmp_path / "preds.csv"
    predictions.write_text("path,good,bruise,rot\nimgs/b.png,0.2,0.3,0.5\nimgs/c.png,0.1,0.8,0.1\n")
    root = label_studio.document_root
    push = _ls(
        label_studio,
        "label",
        "push",
        v1.short_id,
        "--predictions",
        predictions,
        "--document-root",
        root,
        "-p",
        project.root,
    )
    assert push.returncode == 0, push.stderr
    assert "Created" in push.stdout and "5 new tasks (2 with predictions)" in " ".join(
        push.stdout.split()
    )
    pid = _project_id(push.stdout)
    config = label_studio.api("GET", f"/api/projects/{pid}")["label_config"]
    assert '<RectangleLabels name="region"' in config and '<Choice value="bruise"' in config
    tasks = {t["data"]["path"]: t for t in label_studio.tasks(pid)}
    assert set(tasks) == {f"imgs/{k}.png" for k in "abcde"}
    # the image is served by Label Studio itself from the blob store, byte for byte
    record = next(r for r in v1.records if r.path == "imgs/b.png")
    request = urllib.request.Request(
        label_studio.url + tasks["imgs/b.png"]["data"]["image"],
        headers={"Authorization": f"Token {label_studio.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.read() == repo.blobs.get(record.sha256)
    shown = label_studio.api("GET", f"/api/predictions/?task={tasks['imgs/b.png']['id']}")
    assert shown[0]["score"] == 0.5 and shown[0]["result"][0]["value"]["choices"] == ["rot"]

    # pushing again reuses the project and adds nothing twice
    again = _ls(
        label_studio, "label", "push", v1.short_id, "--document-root", root, "-p", project.root
    )
    assert again.returncode == 0, again.stderr
    assert "Reused" in again.stdout and _project_id(again.stdout) == pid
    assert "imported 0 new tasks" in " ".join(again.stdout.split())

    second = label_studio.add_user_token(f"second-{pid}@visionline.test")
    label_studio.annotate(tasks["imgs/a.png"]["id"], _answer("good"))
    label_studio.annotate(tasks["imgs/b.png"]["id"], _answer("bruise", box=True))
    label_studio.annotate(tasks["imgs/c.png"]["id"], _answer("cut", box=True))
    label_studio.annotate(tasks["imgs/d.png"]["id"], _answer("rot", box=True))
    label_studio.annotate(tasks["imgs/e.png"]["id"], _answer("mould"))  # not a class of ours
    label_studio.token, first = second, label_studio.token
    label_studio.annotate(tasks["imgs/a.png"]["id"], _answer("good"))
    label_studio.annotate(tasks["imgs/b.png"]["id"], _answer("rot", box=True))
    label_studio.token = first

    pull_args = (
        "label",
        "pull",
        "--project-id",
        str(pid),
        "--parent",
        v1.short_id,
        "--document-root",
        root,
        "-p",
        project.root,
    )
    partial = _ls(label_studio, *pull_args)
    assert partial.returncode != 0 and "Traceback" not in partial.stderr
    assert (
        "--allow-partial" in partial.stderr
        and "0 unlabelled, 1 tied, 1 with unknown classes" in partial.stderr
    )
    assert len(DatasetRepo(project).list()) == 1

    pulled = _ls(label_studio, *pull_args, "--allow-partial")
    assert pulled.returncode == 0, pulled.stderr
    out = " ".join(pulled.stdout.split())
    assert "tie bruise (1) vs rot (1)" in out or "tie rot (1) vs bruise (1)" in out
    assert "choice 'mould' is not a class of this project" in out
    new = max(DatasetRepo(project).list(), key=lambda v: v.created_at)
    assert new.parent == v1.id
    labels = {r.path: (r.label, r.subtype) for r in new.records}
    assert labels["imgs/c.png"] == ("defect", "cut") and labels["imgs/d.png"] == ("defect", "rot")
    assert labels["imgs/b.png"] == ("defect", "bruise")  # the tie left the old label
    assert labels["imgs/e.png"] == ("defect", "rot")  # the unknown class was skipped
    entries = {e["image"].rsplit("/", 1)[-1]: e for e in new.metadata["labelled"]}
    a_sha = next(r.sha256 for r in v1.records if r.path == "imgs/a.png")
    a = next(e for e in new.metadata["labelled"] if e["sha256"] == a_sha)
    assert sorted(a["annotators"]) == sorted(
        ["annotator@visionline.test", f"second-{pid}@visionline.test"]
    )
    assert a["agreement"] == 1.0 and a["annotated_at"].startswith("20")
    assert len(entries) == 3
    assert new.metadata["labels"]["agreement"] == 1.0 and new.metadata["labels"]["ties"] == 1


@pytest.mark.slow
def test_label_studio_errors_name_the_fix(label_studio, version, project: Project) -> None:
    _, v1, _ = version
    wrong = _ls(label_studio, "label", "push", v1.short_id, "-p", project.root, token="not-a-token")
    _one_line_error(wrong, "refused the API key", "label-studio start", "LABEL_STUDIO_API_KEY")
    url = f"http://127.0.0.1:{_closed_port()}"
    down = run(
        "label",
        "pull",
        "--project-id",
        "1",
        "--parent",
        v1.short_id,
        "--url",
        url,
        "--api-key",
        "k",
        "-p",
        project.root,
    )
    _one_line_error(down, "label-studio start", "LABEL_STUDIO_API_KEY")
    other = label_studio.api(
        "POST",
        "/api/projects/",
        {
            "title": "someone else's",
            "label_config": '<View><Image name="image" value="$image"/>'
            '<Choices name="choice" toName="image"><Choice value="apple"/></Choices></View>',
        },
    )
    clash = _ls(
        label_studio,
        "label",
        "push",
        v1.short_id,
        "--project-title",
        other["title"],
        "-p",
        project.root,
    )
    _one_line_error(clash, "differs from this project's classes", "--project-title")


@pytest.mark.slow
def test_select_uncertain_images_and_push_them(
    label_studio, version, project: Project, tmp_path: Path
) -> None:
    import pandas as pd

    _, v1, _ = version
    scores = tmp_path / "score-v1.parquet"
    by_path = {r.path: r.sha256 for r in v1.records}
    # c.png is the only image without a model class (defect, subtype unknown): the pool
    pd.DataFrame(
        {
            "path": list(by_path),
            "sha256": list(by_path.values()),
            "predicted_class": ["good", "rot", "bruise", "good", "rot"],
            "p_good": [0.9, 0.3, 0.35, 0.8, 0.1],
            "p_bruise": [0.05, 0.2, 0.45, 0.1, 0.1],
            "p_rot": [0.05, 0.5, 0.2, 0.1, 0.8],
            "defect_score": [0.1, 0.7, 0.65, 0.2, 0.9],
        }
    ).to_parquet(scores)
    (tmp_path / "score-v1.summary.json").write_text(json.dumps({"threshold": 0.6}))
    out = tmp_path / "sel.json"
    chosen = _ls(
        label_studio,
        "label",
        "select",
        "--data",
        v1.short_id,
        "--strategy",
        "uncertainty",
        "--budget",
        "2",
        "--scores",
        scores,
        "--include-labelled",
        "--out",
        out,
        "--push",
        "--project-title",
        f"selection {tmp_path.name}",
        "--document-root",
        label_studio.document_root,
        "-p",
        project.root,
    )
    assert chosen.returncode == 0, chosen.stderr
    picked = [row["path"] for row in json.loads(out.read_text())["selected"]]
    assert picked == ["imgs/c.png", "imgs/b.png"]  # 0.05 and 0.10 from the threshold
    pid = _project_id(chosen.stdout)
    tasks = label_studio.tasks(pid)
    assert sorted(t["data"]["path"] for t in tasks) == sorted(picked)
    c_task = next(t for t in tasks if t["data"]["path"] == "imgs/c.png")
    shown = label_studio.api("GET", f"/api/predictions/?task={c_task['id']}")
    assert shown[0]["result"][0]["value"]["choices"] == ["bruise"] and shown[0]["score"] == 0.45

    diverse = run(
        "label",
        "select",
        "--data",
        v1.short_id,
        "--strategy",
        "diversity",
        "--budget",
        "3",
        "--out",
        out,
        "-p",
        project.root,
    )
    assert diverse.returncode == 0, diverse.stderr
    assert [row["path"] for row in json.loads(out.read_text())["selected"]] == ["imgs/c.png"]


def test_select_bad_input_names_the_fix(version, project: Project) -> None:
    _, v1, _ = version
    no_scores = run("label", "select", "--data", v1.short_id, "--budget", "2", "-p", project.root)
    _one_line_error(no_scores, "needs model scores", "--scores")
    # every image labelled: an empty pool
    relabelled = [r for r in v1.records if r.path != "imgs/c.png"]
    repo = DatasetRepo(project)
    v2 = repo.create_version(relabelled, name="all-labelled", parent=v1.id, metadata={})
    empty = run(
        "label",
        "select",
        "--data",
        v2.short_id,
        "--strategy",
        "random",
        "--budget",
        "2",
        "-p",
        project.root,
    )
    _one_line_error(empty, "pool is empty", "--include-labelled")
    no_token = run(
        "label",
        "select",
        "--data",
        v1.short_id,
        "--strategy",
        "random",
        "--budget",
        "1",
        "--push",
        "-p",
        project.root,
    )
    _one_line_error(no_token, "LABEL_STUDIO_API_KEY", "label-studio start")


def test_select_disagreement_between_two_models(version, project: Project, tmp_path: Path) -> None:
    import pandas as pd

    _, v1, _ = version
    shas = {r.path: r.sha256 for r in v1.records}
    files = []
    for name, scores in (
        ("champion", [0.1, 0.7, 0.2, 0.3, 0.9]),
        ("challenger", [0.2, 0.3, 0.25, 0.8, 0.95]),
    ):
        path = tmp_path / f"{name}.csv"
        pd.DataFrame({"sha256": list(shas.values()), "defect_score": scores}).to_csv(
            path, index=False
        )
        files += ["--scores", path]
    out = tmp_path / "sel.json"
    result = run(
        "label",
        "select",
        "--data",
        v1.short_id,
        "--strategy",
        "disagreement",
        "--budget",
        "2",
        *files,
        "--threshold",
        "0.5",
        "--include-labelled",
        "--out",
        out,
        "-p",
        project.root,
    )
    assert result.returncode == 0, result.stderr
    selected = json.loads(out.read_text())["selected"]
    # b and d are the images whose decisions differ at 0.5; d's scores are further apart
    assert [row["path"] for row in selected] == ["imgs/d.png", "imgs/b.png"]
    assert selected[0]["reason"] == "champion 0.300 vs challenger 0.800 (decisions differ)"


@pytest.mark.slow
def test_select_from_monitor_push_and_pull_adds_the_images(
    label_studio, version, project: Project
) -> None:
    """Kept production images nobody labelled go to Label Studio; their labels come back as
    new images of a version."""
    from visionline.monitor import MonitorDB

    repo, v1, _ = version
    db = MonitorDB(project.monitor_db_url)
    rows = []
    for i, score in enumerate([0.2, 0.45, 0.9]):
        sha = repo.blobs.put(_png((10 + 60 * i, 200, 30)))
        rows.append(
            {
                "id": f"p{i}",
                "ts": 1000.0 + i,
                "model": project.config.name,
                "version": "1",
                "route": "primary",
                "probabilities": {"good": 1 - score, "rot": score},
                "predicted_class": "rot" if score >= 0.5 else "good",
                "defect_score": score,
                "flagged": score >= 0.5,
                "decision": "accept",
                "threshold": 0.5,
                "image_sha256": sha,
            }
        )
    db.insert_predictions(rows)
    chosen = _ls(
        label_studio,
        "label",
        "select",
        "--from-monitor",
        "--strategy",
        "uncertainty",
        "--budget",
        "1",
        "--push",
        "--project-title",
        f"monitor {project.root.parent.name}",
        "--document-root",
        label_studio.document_root,
        "-p",
        project.root,
    )
    assert chosen.returncode == 0, chosen.stderr
    assert "prediction p1: score 0.450, 0.050 from the threshold 0.500" in chosen.stdout
    pid = _project_id(chosen.stdout)
    (task,) = label_studio.tasks(pid)
    assert task["data"]["sha256"] == rows[1]["image_sha256"]
    label_studio.annotate(task["id"], _answer("scab", box=True))
    pulled = _ls(
        label_studio,
        "label",
        "pull",
        "--project-id",
        str(pid),
        "--parent",
        v1.short_id,
        "--document-root",
        label_studio.document_root,
        "-p",
        project.root,
    )
    assert pulled.returncode == 0, pulled.stderr
    new = max(DatasetRepo(project).list(), key=lambda v: v.created_at)
    added = [r for r in new.records if r.sha256 == rows[1]["image_sha256"]]
    assert [(r.label, r.subtype) for r in added] == [("defect", "scab")]
    assert len(new.records) == len(v1.records) + 1


@pytest.mark.slow
def test_push_with_an_anomaly_model_pre_annotates_heatmap_regions(label_studio, tmp_path: Path):
    """`label push --anomaly-model`: the regions of the heatmap above the threshold arrive in a
    real Label Studio as rectangle pre-annotations an annotator can correct."""
    from anomaly_lifecycle_support import fitted_apples

    from visionline.data._labelstudio_regions import heatmap_regions, open_anomaly_model
    from visionline.preprocessing import decode_image

    fitted = fitted_apples(tmp_path / "apples", threshold_frr=0.5)
    version = DatasetRepo(fitted.project).get(fitted.dataset)
    push = _ls(
        label_studio, "label", "push", version.short_id, "--anomaly-model", fitted.model,
        "--document-root", label_studio.document_root, "-p", fitted.project.root,
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    detector = open_anomaly_model(str(fitted.model), fitted.project.tracking_uri)
    expected = {}
    for record in version.records:
        image = decode_image(DatasetRepo(fitted.project).blobs.get(record.sha256))
        _, maps = detector([image])
        found = heatmap_regions(maps[0], detector.threshold, detector.preprocessing, *image.size)
        if found:
            expected[record.sha256] = found
    assert expected, "the fitted apple model flags no region at all"
    n = len(expected)
    assert f"defect regions on {n} of {len(version.records)} images" in " ".join(push.stdout.split())
    pid = _project_id(push.stdout)
    for task in label_studio.tasks(pid):
        shown = label_studio.api("GET", f"/api/predictions/?task={task['id']}")
        boxes = [r for p in shown for r in p["result"] if r["type"] == "rectanglelabels"]
        want = expected.get(task["data"]["sha256"], [])
        assert [(b["value"]["x"], b["value"]["y"], b["value"]["width"]) for b in boxes] == [
            (r.x, r.y, r.width) for r in want
        ]
        assert all(b["value"]["rectanglelabels"] == ["bruise"] for b in boxes)
