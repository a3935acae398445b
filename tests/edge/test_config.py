"""`edge.yaml`: the agent's settings validated as one file whose keys are the CLI's long options;
every mistake is one sentence naming the key, and command-line options win over the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionline.edge import EdgeConfig, FailSafe, load_edge_config
from visionline.errors import ConfigError, NotFoundError

BASE = "bundle: b\ntrust_store: keys\nsource: synth://?rate=20\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_every_cli_option_is_a_key_and_the_command_line_wins(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "plc: opcua://plc:4840/?node=ns=2;s=Line1\n"
                  "deadline_ms: 80\nfail_safe: pass\nviews: 2\nchannel: s3://fleet/lines\n")
    config = load_edge_config(path, {"deadline_ms": 60.0})
    assert config.deadline_ms == 60.0 and config.fail_safe is FailSafe.pass_
    assert config.views == 2 and config.channel == "s3://fleet/lines"
    assert config.bundle == Path("b") and config.plc.startswith("opcua://")
    import typer.main

    from visionline.cli._edge import app

    run = typer.main.get_command(app).commands["run"]
    options = {p.name for p in run.params} - {"config"}
    assert options == set(EdgeConfig.model_fields)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE.replace("synth://", "gige://"), "source (--source) is invalid: Unknown frame source gige://"),
        (BASE + "plc: s7://10.0.0.1\n", "unknown PLC scheme in 's7://10.0.0.1'"),
        (BASE + "deadline: 80\n", "deadline (--deadline) is invalid: no such setting"),
        (BASE + "deadline_ms: -5\n", "deadline_ms (--deadline-ms) is invalid"),
        (BASE + "central: plant:8050\n", "not an HTTP URL"),
        (BASE.replace("trust_store: keys\n", ""), "only signed bundles"),
        ("trust_store: k\nbundle: b\n", "source (--source) is invalid: it is required"),
        ("- a list\n", "must be a mapping"),
        ("source: [unclosed\n", "is not valid YAML"),
    ],
)
def test_mistakes_are_one_sentence_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^[^\n]*$") as error:
        load_edge_config(_write(tmp_path, text))
    assert message in str(error.value)


def test_a_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="No agent config"):
        load_edge_config(tmp_path / "nope.yaml")
