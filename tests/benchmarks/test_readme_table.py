import json
from pathlib import Path

import pytest
import readme_table
from _record import REPO, RESULTS_DIR


def test_readme_block_is_generated_from_the_committed_results() -> None:
    block = readme_table.current_block((REPO / "README.md").read_text())

    assert block == readme_table.render(RESULTS_DIR)


def _result(directory: Path, name: str, data: dict) -> None:
    (directory / f"{name}.json").write_text(json.dumps(data))


def test_rows_carry_their_source_and_results_without_provenance_are_named(tmp_path) -> None:
    provenance = {
        "git_commit": "0123456789abcdef",
        "command": "python benchmarks/ingest.py --images 10",
        "machine": {"cores": 2, "load_average_1m_5m": [3.5, 2.0]},
        "time_utc": "2026-12-06T17:00:00Z",
    }
    row = {
        "benchmark": "ingest",
        "measure": "a | b",
        "visionline": "3,000 img/s",
        "peer": "dvc 2,000 img/s",
        "result": "1.5x",
    }
    _result(tmp_path, "ingest", {"readme": [row], "provenance": provenance})
    _result(tmp_path, "distill", {"recall": 0.5})
    _result(tmp_path, "edge", {"provenance": provenance})

    lines = readme_table.render(tmp_path).splitlines()

    assert lines[4].startswith("| ingest | a \\| b | 3,000 img/s | dvc 2,000 img/s | 1.5x | ")
    assert lines[4].endswith(
        "`python benchmarks/ingest.py --images 10` at `0123456`, 2 cores, load 3.5, "
        "2026-12-06T17:00:00Z |"
    )
    assert lines[5].startswith("| distill | *not regenerated with provenance yet")
    assert "0.5" not in lines[5]
    assert lines[6].startswith("| edge | *this result has no `readme` rows*")
    assert len(lines) == 7


def test_only_the_marked_block_is_replaced() -> None:
    text = f"intro\n{readme_table.START}\nold table\n{readme_table.END}\noutro\n"

    replaced = readme_table.replace_block(text, "new table")

    assert replaced == f"intro\n{readme_table.START}\nnew table\n{readme_table.END}\noutro\n"
    assert readme_table.current_block(replaced) == "new table"


def test_missing_markers_name_the_fix() -> None:
    with pytest.raises(ValueError, match="measured:start"):
        readme_table.current_block("no markers here")
