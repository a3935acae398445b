"""Version policy, atomic hot swap, failed loads that keep the old version, signatures, readiness."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from serve_support import write_bundle

from visionline.errors import ConfigError, IntegrityError, NotFoundError
from visionline.serve import ModelRepository, ServerConfig, load_runner, parse_version_policy
from visionline.serve._metrics import ServerMetrics


def _repository(root: Path, **overrides) -> ModelRepository:
    return ModelRepository(ServerConfig(repository=root, **overrides), ServerMetrics())


@pytest.fixture
def two_versions(tmp_path, onnx_model) -> Path:
    root = tmp_path / "repo"
    for version in ("1", "2", "10"):
        write_bundle(onnx_model, root / "apples" / version, version)
    return root


@pytest.mark.parametrize(
    "policy, served",
    [("latest:1", ["10"]), ("latest:2", ["2", "10"]), ("specific:1,2", ["1", "2"]), ("all", ["1", "2", "10"])],
)
def test_version_policy(two_versions, policy, served):
    repo = _repository(two_versions, version_policy=policy)
    assert repo.wanted_versions("apples") == served


@pytest.mark.parametrize("text", ["latest:0", "newest", "specific:", "specific:a"])
def test_bad_version_policy_names_the_fix(text):
    with pytest.raises(ConfigError, match="latest:N, all or specific"):
        parse_version_policy(text)


def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        _repository(tmp_path / "nope")


def test_readiness_only_after_warm_up(repo, onnx_model):
    repository = _repository(repo)
    assert not repository.server_ready()
    repository.load_all()
    assert repository.server_ready() and repository.get("apples").runner.ready
    from visionline.serve import ModelRunner
    from visionline_edge import load_bundle

    runner = ModelRunner(load_bundle(repo / "apples" / "1"))
    assert not runner.ready  # loaded but neither warmed up nor self-tested
    runner.warm_up([1, 2])
    runner.self_test()
    assert runner.ready
    repository.close()


def test_hot_swap_to_new_version_and_failed_load_keeps_old(repo, onnx_model):
    repository = _repository(repo)
    repository.load_all()
    old = repository.get("apples")
    write_bundle(onnx_model, repo / "apples" / "2", "2")
    repository.load("apples")
    assert repository.get("apples").version == "2"
    assert old.batcher._stopping  # the retired version drained and stopped

    tampered = write_bundle(onnx_model, repo / "apples" / "3", "3")
    with (tampered / "model.onnx").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(IntegrityError, match="changed after export"):
        repository.load("apples")
    assert repository.get("apples").version == "2" and repository.is_ready("apples")
    rows = {r["version"]: r for r in repository.index()}
    assert rows["2"]["state"] == "READY"
    assert rows["3"]["state"] == "UNAVAILABLE" and "sha256 mismatch" in rows["3"]["reason"]
    repository.close()


def test_signature_is_required_when_a_key_is_given(tmp_path, onnx_model, signing_keys):
    from visionline.export import generate_keys

    private, public = signing_keys
    root = tmp_path / "repo"
    write_bundle(onnx_model, root / "apples" / "1", "1", key=private)
    assert load_runner(root / "apples" / "1", pubkey=public).ready
    write_bundle(onnx_model, root / "apples" / "2", "2")
    with pytest.raises(IntegrityError, match="not signed"):
        load_runner(root / "apples" / "2", pubkey=public)
    other_private, _ = generate_keys(tmp_path / "other")
    write_bundle(onnx_model, root / "apples" / "3", "3", key=other_private)
    with pytest.raises(IntegrityError, match="does not trust"):
        load_runner(root / "apples" / "3", pubkey=public)


def test_require_signature_serves_only_bundles_a_trusted_key_signed(tmp_path, onnx_model, signing_keys):
    import shutil

    private, public = signing_keys
    store = tmp_path / "trusted-keys"
    store.mkdir()
    shutil.copyfile(public, store / "plant.pub")
    root = tmp_path / "repo"
    write_bundle(onnx_model, root / "apples" / "1", "1", key=private)
    write_bundle(onnx_model, root / "apples" / "2", "2")
    repository = _repository(root, trust_store=store, require_signature=True, version_policy="all")
    with pytest.raises(IntegrityError, match="is not signed"):
        repository.load("apples")
    rows = {r["version"]: r for r in repository.index()}
    assert rows["2"]["state"] == "UNAVAILABLE" and "not signed" in rows["2"]["reason"]
    assert load_runner(root / "apples" / "1", trust_store=store, require_signature=True).ready
    with pytest.raises(ConfigError, match="no key is trusted"):
        load_runner(root / "apples" / "1", require_signature=True)
    repository.close()


def test_polling_picks_up_a_new_version_and_skips_a_broken_one(repo, onnx_model):
    repository = _repository(repo)
    repository.load_all()
    broken = repo / "apples" / "2"
    broken.mkdir()
    (broken / "bundle.json").write_text("{not json")
    repository.poll_once()
    assert repository.get("apples").version == "1"
    assert "version 2" in repository.reason("apples")
    write_bundle(onnx_model, repo / "apples" / "3", "3")
    repository.start_polling(0.05)
    deadline = time.monotonic() + 20
    while repository.get("apples").version != "3" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert repository.get("apples").version == "3"
    repository.close()
