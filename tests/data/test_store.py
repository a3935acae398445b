"""Blob store: local files and a real S3-compatible server (moto), never a mock object."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from visionline.data import BlobStore
from visionline.data._store import sha256_hex
from visionline.errors import ConfigError, IntegrityError, NotFoundError, ServiceUnavailableError


def test_local_put_is_content_addressed_sharded_and_idempotent(tmp_path: Path):
    store = BlobStore(tmp_path / "store")
    sha = store.put(b"apple")
    assert sha == sha256_hex(b"apple")
    path = store.local_path(sha)
    assert path == tmp_path / "store" / sha[:2] / sha
    assert path.read_bytes() == b"apple"
    mtime = path.stat().st_mtime_ns
    assert store.put(b"apple") == sha
    assert path.stat().st_mtime_ns == mtime
    assert store.exists(sha) and store.get(sha) == b"apple"
    assert not list((tmp_path / "store").rglob(".tmp-*"))


def test_file_uri_and_put_many(tmp_path: Path):
    store = BlobStore(f"file://{tmp_path / 's'}")
    shas = store.put_many([b"a", b"b", b"a"])
    assert shas[0] == shas[2] != shas[1]
    assert sorted(p.name for p in (tmp_path / "s").rglob("*") if p.is_file()) == sorted(
        {shas[0], shas[1]}
    )


def test_get_detects_corruption_and_missing_blobs(tmp_path: Path):
    store = BlobStore(tmp_path)
    sha = store.put(b"pristine bytes")
    path = store.local_path(sha)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its hash"):
        store.get(sha)
    assert store.get(sha, verify=False) == bytes(data)
    with pytest.raises(NotFoundError):
        store.get("0" * 64)
    with pytest.raises(NotFoundError, match="sha256"):
        store.get("../../etc/passwd")
    assert not store.exists("1" * 64)


def test_unsupported_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="unsupported scheme"):
        BlobStore("ftp://host/x")
    with pytest.raises(ConfigError, match="no bucket"):
        BlobStore("s3://")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"blobs-{_free_port()}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def test_s3_store_against_moto_server(s3_env):
    client, bucket = s3_env
    store = BlobStore(f"s3://{bucket}/visionline/store")
    assert store.local_path("a" * 64) is None
    sha = store.put(b"tile image")
    key = f"visionline/store/{sha[:2]}/{sha}"
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"tile image"
    assert store.exists(sha) and store.get(sha) == b"tile image"
    assert store.put_many([b"x", b"tile image"])[1] == sha
    client.put_object(Bucket=bucket, Key=key, Body=b"tampered")
    with pytest.raises(IntegrityError):
        BlobStore(f"s3://{bucket}/visionline/store").get(sha)
    with pytest.raises(NotFoundError):
        store.get("f" * 64)


def test_s3_endpoint_passed_as_storage_options(s3_env, monkeypatch):
    _, bucket = s3_env
    endpoint = __import__("os").environ["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    store = BlobStore(f"s3://{bucket}/p", {"client_kwargs": {"endpoint_url": endpoint}})
    assert store.get(store.put(b"via options")) == b"via options"


def test_s3_missing_bucket_names_the_fix(s3_env):
    store = BlobStore("s3://no-such-bucket-here/prefix")
    with pytest.raises(ConfigError, match="bucket .* does not exist; create it"):
        store.put(b"data")


def test_unreachable_s3_endpoint_is_service_unavailable(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    store = BlobStore("s3://bucket/prefix")
    with pytest.raises(ServiceUnavailableError, match="did not answer"):
        store.put(b"data")
    with pytest.raises(ServiceUnavailableError):
        store.get("a" * 64)


def test_dataset_repo_on_an_s3_blob_store(s3_env, tmp_path: Path, imgs):
    from visionline.config import Project
    from visionline.data import DatasetRepo

    _, bucket = s3_env
    (tmp_path / "visionline.yaml").write_text(
        f"classes:\n- name: good\n- name: defect\nstorage:\n  blob_store: s3://{bucket}/store\n"
    )
    for i, folder in enumerate(("good", "good", "defect")):
        imgs.write_image(tmp_path / "images" / folder / f"{i}.jpg", i)
    repo = DatasetRepo(Project.load(tmp_path))
    version = repo.add(tmp_path / "images").version
    assert version.n_images == 3 and repo.blobs.local_path(version.records[0].sha256) is None
    assert repo.verify(version.id).ok
    out = tmp_path / "out"
    repo.export(version.id, out)
    assert sorted(p.parent.name for p in out.rglob("*.jpg")) == ["defect", "good", "good"]
