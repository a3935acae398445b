"""`visionline edge run|status` as a user runs them: a short synthetic line end to end, the
status of its outbox, and one-sentence errors for what an operator can get wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, run_visionline
from edge_agent_support import signed_bundle
from edge_support import make_bundle


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return signed_bundle(tmp_path_factory.mktemp("cli-edge"))


def test_run_then_status(signed: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, store = signed
    outbox = tmp_path / "outbox.db"
    run = run_visionline(
        "edge", "run", "--bundle", bundle, "--trust-store", store, "--source",
        "synth://?rate=200&count=6&size=64", "--outbox", outbox, "--line", "L7",
        "--fail-safe", "pass", cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "apples:1" in run.stdout and "fail-safe pass" in run.stdout
    status = run_visionline("edge", "status", "--outbox", outbox, "--json", cwd=tmp_path)
    report = json.loads(status.stdout)
    assert report["backlog"] == 6 and report["last_sync"] is None  # no --central: all kept
    assert report["version"] == "apples:1" and report["line"] == "L7"
    assert report["counts"]["verdicts"] == 6
    assert report["counts"]["rejected"] + report["counts"].get("passed", 0) == 6


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ((), ("only signed bundles", "--trust-store")),
        (("--trust-store", "STORE", "--source", "gige://cam"), ("Unknown frame source gige://",)),
        (("--trust-store", "STORE", "--plc", "s7://10.0.0.1"), ("s7",)),
        (("--trust-store", "STORE", "--bundle", "UNSIGNED"), ("not signed",)),
        (("--trust-store", "STORE", "--central", "plant:8050"), ("not an HTTP URL",)),
    ],
)
def test_run_errors_are_one_sentence(
    signed: tuple[Path, Path], tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    bundle, store = signed
    unsigned = make_bundle(tmp_path / "unsigned")
    values = {"STORE": str(store), "UNSIGNED": str(unsigned)}
    args = tuple(values.get(a, a) for a in args)
    base = ["--bundle", str(bundle), "--source", "synth://?count=1", "--outbox",
            str(tmp_path / "o.db")]
    result = run_visionline("edge", "run", *base, *args, cwd=tmp_path)
    assert_one_line_error(result, *needles)


def test_status_without_an_outbox(tmp_path: Path) -> None:
    result = run_visionline("edge", "status", "--outbox", tmp_path / "none.db", cwd=tmp_path)
    assert_one_line_error(result, "No outbox", "--outbox")


def test_a_tampered_bundle_on_the_channel_shows_in_status(
    signed: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle, store = signed
    channel = tmp_path / "channel"
    shutil.copytree(bundle, channel / "apples-2")
    (channel / "apples-2" / "model.onnx").write_bytes(b"planted")
    outbox = tmp_path / "outbox.db"
    run = run_visionline(
        "edge", "run", "--bundle", bundle, "--trust-store", store, "--source",
        "synth://?rate=200&count=3&size=64", "--outbox", outbox, "--channel", channel,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    status = run_visionline("edge", "status", "--outbox", outbox, cwd=tmp_path)
    assert "last roll-out  refused apples-2" in status.stdout
    assert "model version  apples:1" in status.stdout


def test_a_restarted_agent_keeps_the_rolled_out_bundle(
    signed: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle, store = signed
    channel = tmp_path / "channel"
    channel.mkdir()
    make_bundle(channel / "apples-2", bundle.parent / "keys" / "visionline-signing.key",
                version="2")
    outbox = tmp_path / "outbox.db"

    def run(count: int):
        return run_visionline(
            "edge", "run", "--bundle", bundle, "--trust-store", store, "--source",
            f"synth://?rate=200&count={count}&size=64", "--outbox", outbox, "--channel", channel,
            "--shadow-items", "2", "--deadline-ms", "2000", cwd=tmp_path,
        )

    first = run(8)
    assert first.returncode == 0, first.stderr
    assert "kept apples:2" in first.stderr  # shadowed, switched, kept after its probation
    second = run(1)
    assert second.returncode == 0, second.stderr
    assert "Line agent: apples:2" in second.stdout


def test_run_from_a_config_file_with_an_option_on_top(signed: tuple[Path, Path], tmp_path: Path) -> None:
    import yaml

    bundle, store = signed
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "bundle": str(bundle), "trust_store": str(store), "line": "from-file",
        "source": "synth://?rate=200&count=4&size=64", "outbox": str(tmp_path / "o.db"),
    }))
    run = run_visionline("edge", "run", "--config", config, "--line", "L9", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout[run.stdout.index("{"):])
    assert report["line"] == "L9" and report["counts"]["verdicts"] == 4
    config.write_text(config.read_text() + "plc: s7://10.0.0.1\n")
    bad = run_visionline("edge", "run", "--config", config, cwd=tmp_path)
    assert_one_line_error(bad, "plc (--plc) is invalid", "unknown PLC scheme")


def test_a_central_channel_that_is_not_a_folder_is_one_sentence(tmp_path: Path) -> None:
    result = run_visionline("monitor", "serve", "--db", f"sqlite:///{tmp_path / 'c.db'}",
                            "--channel", tmp_path / "missing", cwd=tmp_path)
    assert_one_line_error(result, "No channel folder", "--channel")
