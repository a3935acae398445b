"""Label Studio interchange: config XML, export parsing, image refs and predictions."""

from __future__ import annotations

import hashlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from visionline.config import ProjectConfig
from visionline.data import ImageRecord
from visionline.data._labelstudio import (
    LabelDecision,
    ModelPrediction,
    build_tasks,
    image_ref_to_path,
    label_config_xml,
    load_predictions,
    local_files_url,
    parse_export,
    read_export,
)
from visionline.errors import ConfigError, DataError, ServiceUnavailableError

MAGNETIC_TILES = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "magnetic-tile-defect"
)


def _annotation(
    choice: str | None, *, ground_truth: bool = False, cancelled: bool = False, by: int = 1
) -> dict:
    result = (
        []
        if choice is None
        else [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ]
    )
    return {
        "id": by * 100,
        "completed_by": by,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": ground_truth,
    }


def _task(task_id: int, image: str, *annotations: dict, sha: str | None = None) -> dict:
    data = {"image": image}
    if sha:
        data["sha256"] = sha
    return {"id": task_id, "data": data, "annotations": list(annotations), "predictions": []}


@pytest.fixture
def config() -> ProjectConfig:
    return ProjectConfig()


@pytest.fixture
def export_file(tmp_path: Path) -> Path:
    tasks = [
        # ground truth wins over a 2-vote majority
        _task(
            1,
            "/data/local-files/?d=a.png",
            _annotation("rot", by=1),
            _annotation("rot", by=2),
            _annotation("bruise", ground_truth=True, by=3),
            sha="a" * 64,
        ),
        # plain majority
        _task(
            2,
            "/data/local-files/?d=b.png",
            _annotation("good", by=1),
            _annotation("good", by=2),
            _annotation("scab", by=3),
        ),
        # tie → reported, left out
        _task(3, "/abs/c.png", _annotation("cut", by=1), _annotation("rot", by=2)),
        # cancelled annotation skipped; the other one decides
        _task(
            4, "d.png", _annotation("good", cancelled=True, by=1), _annotation("insect_hole", by=2)
        ),
        # unknown choice → reported, left out
        _task(5, "e.png", _annotation("mould", by=1)),
        # no annotations at all: unlabelled, no issue
        _task(6, "f.png"),
        # only cancelled: unlabelled
        _task(7, "g.png", _annotation("good", cancelled=True, by=2)),
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    return path


def test_label_config_lists_model_classes_as_single_choice(config: ProjectConfig) -> None:
    root = ET.fromstring(label_config_xml(config))
    image = root.find("Image")
    choices = root.find("Choices")
    assert image is not None and image.get("value") == "$image"
    assert choices is not None
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == (
        "choice",
        "image",
        "single",
    )
    values = [c.get("value") for c in choices.findall("Choice")]
    assert values == config.model_classes()
    hints = {c.get("value"): c.get("hint") for c in choices.findall("Choice")}
    assert hints["bruise"] == "defect" and hints["good"] is None


def test_parse_export_applies_ground_truth_majority_and_skips(
    export_file: Path, config: ProjectConfig
) -> None:
    decisions, issues = parse_export(export_file, config)
    by_image = {d.image: d for d in decisions}
    assert by_image["/data/local-files/?d=a.png"] == LabelDecision(
        "/data/local-files/?d=a.png", "defect", "bruise", 3, "a" * 64
    )
    assert by_image["/data/local-files/?d=b.png"] == LabelDecision(
        "/data/local-files/?d=b.png", "good", None, 3
    )
    assert by_image["d.png"] == LabelDecision("d.png", "defect", "insect_hole", 1)
    assert set(by_image) == {"/data/local-files/?d=a.png", "/data/local-files/?d=b.png", "d.png"}
    assert len(issues) == 2
    tie = next(i for i in issues if "tie" in i)
    assert "cut (1)" in tie and "rot (1)" in tie and "/abs/c.png" in tie
    unknown = next(i for i in issues if "mould" in i)
    assert "visionline.yaml" in unknown


def test_read_export_counts_provenance(export_file: Path, config: ProjectConfig) -> None:
    summary = read_export(export_file, config)
    provenance = summary.provenance()
    assert provenance["tasks"] == 7
    assert provenance["decisions"] == 3
    assert provenance["ties"] == 1
    assert provenance["unknown_choices"] == 1
    assert provenance["cancelled_annotations"] == 2
    assert provenance["unlabelled"] == 2
    assert provenance["ground_truth_decisions"] == 1
    assert provenance["annotations_per_annotator"] == {"1": 4, "2": 4, "3": 2}


def test_read_export_lists_disagreements_and_agreement(
    tmp_path: Path, config: ProjectConfig
) -> None:
    """A 2:1 vote is decided by the majority but listed, never silently resolved."""
    votes = [_annotation("rot", by=1), _annotation("rot", by=2), _annotation("bruise", by=3)]
    for number, annotation in enumerate(votes):
        annotation["updated_at"] = f"2026-01-0{number + 1}T10:00:00Z"
    path = tmp_path / "e.json"
    path.write_text(
        json.dumps(
            [_task(1, "x.png", *votes, sha="a" * 64), _task(2, "y.png", _annotation("good"))]
        )
    )
    summary = read_export(path, config)
    assert [d.subtype or d.label for d in summary.decisions] == ["rot", "good"]
    (disagreement,) = summary.disagreements
    assert "1: rot, 2: rot, 3: bruise" in disagreement and "majority 'rot'" in disagreement
    x = summary.labelled[0]
    assert x["sha256"] == "a" * 64 and x["annotators"] == ["1", "2", "3"]
    assert x["agreement"] == 0.6667 and x["annotated_at"] == "2026-01-03T10:00:00Z"
    assert summary.agreement() == 0.6667  # y.png had one annotator, so it does not count
    provenance = summary.provenance()
    assert provenance["multi_annotated"] == 1 and provenance["disagreements"] == 1


def test_class_without_subtypes_maps_to_itself(tmp_path: Path) -> None:
    config = ProjectConfig(classes=[{"name": "good"}, {"name": "scratch"}])
    path = tmp_path / "e.json"
    path.write_text(json.dumps([_task(1, "x.png", _annotation("scratch"))]))
    decisions, issues = parse_export(path, config)
    assert decisions == [LabelDecision("x.png", "scratch", None, 1)] and issues == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('"just a string"', "expected a list of tasks"),
    ],
)
def test_parse_export_bad_files(
    tmp_path: Path, config: ProjectConfig, content: str | None, message: str
) -> None:
    path = tmp_path / "export.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        parse_export(path, config)


def test_task_without_image_is_reported(tmp_path: Path, config: ProjectConfig) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps([{"id": 9, "data": {}, "annotations": [_annotation("good")]}, 3]))
    decisions, issues = parse_export(path, config)
    assert decisions == [] and len(issues) == 2 and all("no data.image" in i for i in issues)


def test_image_ref_to_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert image_ref_to_path("/data/local-files/?d=store/ab/c%20d.png", root) == (
        root / "store/ab/c d.png"
    )
    assert image_ref_to_path("http://ls:8080/data/local-files/?d=x/y.png", root) == root / "x/y.png"
    assert image_ref_to_path("file:///srv/img.png", root) == Path("/srv/img.png")
    assert image_ref_to_path("/srv/img.png", root) == Path("/srv/img.png")
    assert image_ref_to_path("rel/img.png", root) == root / "rel/img.png"
    for remote in ("https://cdn.example.com/a.png", "s3://bucket/a.png", "blob:" + "a" * 64, ""):
        assert image_ref_to_path(remote, root) is None


def test_local_files_url_round_trips(tmp_path: Path) -> None:
    image = tmp_path / "store" / "ab" / "with space.png"
    url = local_files_url(image, tmp_path)
    assert url == "/data/local-files/?d=store/ab/with%20space.png"
    assert image_ref_to_path(url, tmp_path) == image
    with pytest.raises(ConfigError, match="document root"):
        local_files_url(image, tmp_path / "elsewhere")


def test_load_predictions_json_and_csv(tmp_path: Path, config: ProjectConfig) -> None:
    as_json = tmp_path / "preds.json"
    as_json.write_text(
        json.dumps(
            [
                {"sha256": "a" * 64, "probabilities": {"good": 0.1, "rot": 0.7, "bruise": 0.2}},
                {"path": "imgs/b.png", "label": "good", "score": 0.93, "model_version": "v7"},
            ]
        )
    )
    loaded = load_predictions(as_json, config)
    assert (loaded["a" * 64].choice, loaded["a" * 64].score) == ("rot", 0.7)
    assert loaded["imgs/b.png"].model_version == "v7"
    as_csv = tmp_path / "preds.csv"
    as_csv.write_text("sha256,good,bruise\n" + "b" * 64 + ",0.8,0.2\n")
    assert load_predictions(as_csv, config)["b" * 64].choice == "good"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"label": "good"}], "neither 'sha256' nor 'path'"),
        ([{"path": "x", "label": "mould"}], "not a class"),
        ([{"path": "x", "probabilities": {"mould": 1.0}}], "unknown classes"),
        ([{"path": "x", "label": "good", "score": "high"}], "not a number"),
        ({"rows": []}, "must be a list"),
    ],
)
def test_load_predictions_bad_rows(
    tmp_path: Path, config: ProjectConfig, rows: object, message: str
) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=message):
        load_predictions(path, config)


class _Blobs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def local_path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha


class _Repo:
    def __init__(self, root: Path) -> None:
        self.blobs = _Blobs(root)


def _record(sha: str, label: str, subtype: str | None) -> ImageRecord:
    return ImageRecord(
        sha256=sha,
        path=f"src/{sha[:4]}.png",
        bytes=1,
        width=1,
        height=1,
        mode="RGB",
        label=label,
        subtype=subtype,
        source="test",
        split=None,
    )


def _version() -> SimpleNamespace:
    records = [_record("a" * 64, "good", None), _record("b" * 64, "defect", None)]
    return SimpleNamespace(id="f" * 64, records=records)


def test_build_tasks_with_predictions_and_document_root(
    tmp_path: Path, config: ProjectConfig
) -> None:
    repo = _Repo(tmp_path / "store")
    predictions = {"src/bbbb.png": ModelPrediction("rot", 0.6)}
    tasks, n_predicted = build_tasks(
        _version(),
        repo,
        config,
        document_root=tmp_path,
        predictions=predictions,
        model_version="m1",
        only_unlabelled=True,
    )
    assert n_predicted == 1 and len(tasks) == 1
    task = tasks[0]
    assert task["data"]["image"] == f"/data/local-files/?d=store/bb/{'b' * 64}"
    assert task["data"]["sha256"] == "b" * 64 and task["data"]["dataset_version"] == "f" * 64
    prediction = task["predictions"][0]
    assert prediction["model_version"] == "m1" and prediction["score"] == 0.6
    assert prediction["result"][0]["value"] == {"choices": ["rot"]}
    tasks, _ = build_tasks(_version(), repo, config)
    assert [t["data"]["image"] for t in tasks] == [
        str((tmp_path / "store" / "aa" / ("a" * 64)).resolve()),
        str((tmp_path / "store" / "bb" / ("b" * 64)).resolve()),
    ]
    assert "predictions" not in tasks[0]


class _FakeLabelStudio:
    """Answers every call with one error status, for the error mapping only: the calls that
    succeed are proven against a real Label Studio in tests/cli/test_label.py."""

    def __init__(self, status: int) -> None:
        self.status = status

    def __call__(self, request):  # httpx.Request -> httpx.Response
        import httpx

        return httpx.Response(self.status, json={"detail": "no"})


def _server(fake: _FakeLabelStudio):
    import httpx

    from visionline.data._labelstudio_server import LabelStudioServer

    client = httpx.Client(transport=httpx.MockTransport(fake))
    return LabelStudioServer("http://ls.test:8080/", "token", httpx_client=client)


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (401, ConfigError, "refused the API key"),
        (404, ConfigError, "check the project id"),
        (500, ServiceUnavailableError, "HTTP 500"),
    ],
)
def test_server_errors_are_one_sentence(status: int, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        _server(_FakeLabelStudio(status)).export(7)
    assert "http://ls.test:8080" in str(info.value) and "\n" not in str(info.value)


def test_apply_export_adds_real_tiles_served_from_document_root(repo, tmp_path: Path) -> None:
    """Label Studio pointed straight at the magnetic-tile folder: its labels become a version."""
    from visionline.data._labelstudio import apply_export

    if not MAGNETIC_TILES.is_dir():
        pytest.skip(f"real data folder {MAGNETIC_TILES} is absent")
    crack = sorted((MAGNETIC_TILES / "MT_Crack" / "Imgs").glob("*.jpg"))[:2]
    free = sorted((MAGNETIC_TILES / "MT_Free" / "Imgs").glob("*.jpg"))[:1]
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 30, 30)).save(buffer, "PNG")
    seed = buffer.getvalue()
    sha = repo.blobs.put(seed)
    parent = repo.create_version(
        [
            ImageRecord(
                sha256=sha,
                path="seed.jpg",
                bytes=len(seed),
                width=48,
                height=48,
                mode="RGB",
                label="good",
                subtype=None,
                source="test",
                split=None,
            )
        ],
        name="seed",
        parent=None,
        metadata={},
    )

    def ref(path: Path) -> str:
        return "/data/local-files/?d=" + path.relative_to(MAGNETIC_TILES).as_posix()

    tasks = [
        _task(1, ref(crack[0]), _annotation("crack", by=1)),
        _task(2, ref(crack[1]), _annotation("blowhole", by=1), _annotation("crack", by=2)),
        _task(3, ref(free[0]), _annotation("good", by=2)),
        _task(4, "/data/local-files/?d=MT_Crack/Imgs/missing.jpg", _annotation("crack")),
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    result = apply_export(
        repo, parent, export, repo.config, name="tiles", document_root=MAGNETIC_TILES
    )
    assert result.n_added == 2 and len(result.unmatched) == 1 and result.summary.n_ties == 1
    assert "missing.jpg" in result.unmatched[0]
    version = result.version
    assert version is not None and version.parent == parent.id and len(version.records) == 3
    added = {Path(r.path).name: r for r in version.records if r.source == "labelstudio"}
    tile = added[crack[0].name]
    assert (tile.label, tile.subtype, tile.mode) == ("defect", "crack", "L")
    assert repo.blobs.get(tile.sha256) == crack[0].read_bytes()
    assert (added[free[0].name].label, added[free[0].name].subtype) == ("good", None)


def _seed_version(repo, tmp_path: Path):
    """A parent version holding one 8×8 image that no export below refers to."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    sha = repo.blobs.put(buffer.getvalue())
    record = ImageRecord(
        sha256=sha,
        path="seed.png",
        bytes=len(buffer.getvalue()),
        width=8,
        height=8,
        mode="RGB",
        label="good",
        subtype=None,
        source="test",
        split=None,
    )
    return repo.create_version([record], name="seed", parent=None, metadata={})


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_apply_export_confines_paths_and_skips_bad_files_with_a_reason(
    repo, tmp_path: Path
) -> None:
    """`..`, absolute paths, file:// URLs and symlinks that leave the document root are not read;
    undecodable files are not stored; each is skipped with its reason and the rest imports."""
    from visionline.data._labelstudio import apply_export

    parent = _seed_version(repo, tmp_path)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "ok.png").write_bytes(_png((200, 0, 0)))
    (root / "sub" / "ok2.png").write_bytes(_png((0, 200, 0)))
    (root / "bad.png").write_bytes(b"GIF89a but not really an image")
    (root / "cut.png").write_bytes(_png((0, 0, 200))[:60])
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png((9, 9, 9)))
    (root / "link.png").symlink_to(secret)
    tasks = [
        _task(1, "/data/local-files/?d=ok.png", _annotation("crack")),
        _task(2, (root / "sub" / "ok2.png").as_uri(), _annotation("good")),
        _task(3, "/data/local-files/?d=../secret.png", _annotation("crack")),
        _task(4, str(secret), _annotation("crack")),
        _task(5, secret.as_uri(), _annotation("crack")),
        _task(6, "/data/local-files/?d=link.png", _annotation("crack")),
        _task(7, "/data/local-files/?d=bad.png", _annotation("crack")),
        _task(8, "/data/local-files/?d=cut.png", _annotation("crack")),
        _task(9, "/data/local-files/?d=sub", _annotation("crack")),
        _task(10, "/data/local-files/?d=missing.png", _annotation("crack")),
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))

    result = apply_export(repo, parent, export, repo.config, name="confined", document_root=root)

    assert result.n_added == 2
    added = {
        Path(r.path).name: (r.label, r.subtype)
        for r in result.version.records
        if r.source == "labelstudio"
    }
    assert added == {"ok.png": ("defect", "crack"), "ok2.png": ("good", None)}
    reasons = dict(issue.split(": ", 1) for issue in result.skipped)
    assert len(reasons) == 7
    outside = [
        "/data/local-files/?d=../secret.png",
        str(secret),
        secret.as_uri(),
        "/data/local-files/?d=link.png",
    ]
    for ref in outside:
        assert "lies outside the document root" in reasons[ref], ref
    assert "cannot be decoded" in reasons["/data/local-files/?d=bad.png"]
    assert "cannot be decoded" in reasons["/data/local-files/?d=cut.png"]
    assert "not a regular file" in reasons["/data/local-files/?d=sub"]
    assert len(result.unmatched) == 1
    assert result.unmatched[0].startswith("/data/local-files/?d=missing.png: not in version")
    for path in (secret, root / "bad.png", root / "cut.png"):
        assert not repo.blobs.exists(hashlib.sha256(path.read_bytes()).hexdigest()), path
    assert result.version.metadata["skipped"] == 7
    assert set(result.skipped) <= set(result.version.metadata["issues"])
