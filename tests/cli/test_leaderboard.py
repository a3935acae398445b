"""`visionline leaderboard` as a user runs it: bad settings and a budget too small for any entry
are one-line errors; the too-small budget still leaves the written leaderboard behind."""

from __future__ import annotations

import json

import pytest
from cli_support import assert_one_line_error, run_visionline

from tests.leaderboard.conftest import make_dataset, make_project


def test_a_non_positive_budget_is_one_sentence(tmp_path):
    project = make_project(tmp_path / "project")
    result = run_visionline(
        "leaderboard", "--data", "whatever", "--budget-min", "0", cwd=project.root
    )
    assert_one_line_error(result, "budget_min")


@pytest.mark.slow
def test_a_budget_too_small_for_any_entry_is_one_sentence_and_writes_the_board(tmp_path):
    project = make_project(tmp_path / "project")
    dataset = make_dataset(project)
    out = tmp_path / "board"
    result = run_visionline(
        "leaderboard",
        "--data",
        dataset[:12],
        "--budget-min",
        "0.00001",
        "--out",
        out,
        "--only",
        "classical,stack",
        cwd=project.root,
    )
    assert_one_line_error(result, "No leaderboard entry finished", "raise --budget-min")
    board = json.loads((out / "leaderboard.json").read_text())
    assert [(row["name"], row["status"]) for row in board["entries"]] == [
        ("classical/logreg", "not finished"),
        ("classical/gboost", "not finished"),
        ("stack", "not finished"),
    ]
    assert board["threshold_split"] == "calib"
