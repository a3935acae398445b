"""Fleet channels beyond a folder: an S3 prefix (a real moto S3 server through fsspec) and the
central server's HTTP endpoint (`visionline monitor serve --channel DIR`, on 127.0.0.1). Either
way the agent verifies what it fetched: a tampered bundle is refused and the line keeps its model;
a good one is shadowed and switched in."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from edge_agent_support import RecordingSink
from edge_support import make_bundle, png

from visionline.edge import Decider, Frame, LineAgent, Outbox, Rollout
from visionline.edge._channel import open_channel
from visionline.errors import ConfigError
from visionline_edge import load_bundle

BRIGHT = png((230, 230, 230))


class ListSource:
    def __init__(self, images: list[bytes]) -> None:
        self.images = images

    def __iter__(self):
        for i, data in enumerate(self.images):
            yield Frame(f"item-{i}", time.time(), data=data)

    def close(self) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _archive(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return buffer.getvalue()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    from visionline.export import generate_keys

    private, public = generate_keys(tmp_path / "keys")
    v1 = make_bundle(tmp_path / "v1", private)
    tampered = make_bundle(tmp_path / "tampered" / "apples-2", private, version="2")
    manifest = json.loads((tampered / "bundle.json").read_text())
    manifest["threshold"] = 0.01
    (tampered / "bundle.json").write_text(json.dumps(manifest))
    return {"private": private, "public": public, "tmp": tmp_path, "v1": v1,
            "v2": make_bundle(tmp_path / "good" / "apples-2", private, version="2"),
            "tampered": tampered}


def _run(keys: dict[str, Any], channel: Any, items: int = 6) -> tuple[RecordingSink, Rollout]:
    decider = Decider(load_bundle(keys["v1"], keys["public"], require_signature=True),
                      deadline_ms=5000, line="L1")
    rollout = Rollout(decider, channel, pubkey=keys["public"], shadow_items=2,
                      min_agreement=0.9, poll_s=0.0, cache=keys["tmp"] / "cache")
    sink = RecordingSink()
    LineAgent(ListSource([BRIGHT] * items), decider, Outbox(keys["tmp"] / "o.db"), sink,
              rollout=rollout).run()
    decider.close()
    return sink, rollout


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_prefix_channel_refuses_a_tampered_archive_then_rolls_out_a_good_one(
    keys, s3_endpoint, monkeypatch
) -> None:
    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", s3_endpoint)]:
        monkeypatch.setenv(name, value)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"fleet-{_free_port()}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="lines/L1/apples-2.tar.gz",
                      Body=_archive(keys["tampered"]))
    sink, rollout = _run(keys, f"s3://{bucket}/lines")
    assert [e.kind for e in rollout.events] == ["refused"]
    assert {v.model_version for v in sink.sent} == {"apples:1"}

    time.sleep(1.1)  # S3 LastModified has one-second resolution: the fix is newer
    client.put_object(Bucket=bucket, Key="lines/L1/apples-2-fixed.tar.gz",
                      Body=_archive(keys["v2"]))
    sink, rollout = _run(keys, f"s3://{bucket}/lines")
    assert [e.kind for e in rollout.events] == ["shadowing", "switched", "kept"]
    assert sink.sent[-1].model_version == "apples:2"
    assert Path(rollout.active_path).is_relative_to(keys["tmp"] / "cache")


class _Central:
    """`visionline monitor serve --channel DIR`'s app on 127.0.0.1 in a thread."""

    def __init__(self, db_url: str, channel: Path) -> None:
        import uvicorn

        from visionline.monitor import MonitorDB
        from visionline.monitor._dashboard import create_app

        self.db = MonitorDB(db_url)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(self.db, channel=channel), host="127.0.0.1", port=port, log_level="warning"
        ))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.db.close()


def test_http_channel_served_by_the_central_side(keys, tmp_path: Path) -> None:
    import shutil

    channel = tmp_path / "published"
    (channel / "L1").mkdir(parents=True)
    central = _Central(f"sqlite:///{tmp_path / 'central.db'}", channel)
    try:
        missing = httpx.get(central.url + "/api/channel/L1")
        assert missing.status_code == 404 and "No bundle is assigned" in missing.json()["detail"]
        shutil.copytree(keys["tampered"], channel / "L1" / "apples-2")
        sink, rollout = _run(keys, central.url)
        assert [e.kind for e in rollout.events] == ["refused"]
        assert {v.model_version for v in sink.sent} == {"apples:1"}

        shutil.rmtree(channel / "L1" / "apples-2")
        shutil.copytree(keys["v2"], channel / "L1" / "apples-2")
        first = httpx.get(central.url + "/api/channel/L1")
        etag = first.headers["ETag"]
        assert httpx.get(central.url + "/api/channel/L1",
                         headers={"If-None-Match": etag}).status_code == 304
        sink, rollout = _run(keys, central.url)
        assert [e.kind for e in rollout.events] == ["shadowing", "switched", "kept"]
        assert sink.sent[-1].model_version == "apples:2"
    finally:
        central.stop()


def test_channel_urls_that_cannot_work_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No channel folder"):
        open_channel(tmp_path / "none", "L1")
    with pytest.raises(ConfigError, match="pass --line"):
        open_channel("http://central:8050", None)
    with pytest.raises(ConfigError, match="Cannot open the channel"):
        open_channel("nosuchfs://bucket/x", "L1", tmp_path / "cache")


def test_only_channels_that_download_make_a_folder_and_it_goes_with_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder channel needs no download folder; a server's default one is removed at exit, so
    a process that watched a channel leaves nothing in the temporary directory."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)
    (tmp_path / "bundles").mkdir()
    open_channel(tmp_path / "bundles", "L1")
    assert list(scratch.iterdir()) == []
    code = (
        "import pathlib, tempfile; from visionline.edge._channel import open_channel; "
        "c = open_channel('http://127.0.0.1:9', 'L1'); "
        "assert c.cache.is_dir() and c.cache.parent == pathlib.Path(tempfile.gettempdir())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
    assert list(scratch.iterdir()) == []
