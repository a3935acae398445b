"""Leaderboard runs on a tiny project: ranked, tracked and registered entries; entries the
budget stops are reported as not finished; a budget too small for any entry is one sentence
that still leaves the written leaderboard behind."""

from __future__ import annotations

import json

import pytest

from visionline.errors import TrainingError
from visionline.leaderboard import Budget, Family, LeaderboardConfig, ranked, run_leaderboard
from visionline.leaderboard._scoring import challenger

from .conftest import make_dataset, make_project

LENIENT_GOALS = {
    "max_false_reject_rate": 0.5,
    "threshold_false_reject_rate": 0.125,
    "min_defect_recall": 0.25,
}
"""Gates that a model of a few dozen tiny images can pass, so registration is exercised."""


class Clock:
    """A clock that stands still until a test moves it; `tick` is added on every reading."""

    def __init__(self) -> None:
        self.now = 0.0
        self.tick = 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


CLASSICAL_ONLY = LeaderboardConfig(families=[Family.CLASSICAL], bootstrap=20, budget_min=1)


@pytest.mark.slow
def test_ranked_tracked_entries_and_the_best_passing_one_registered(tmp_path):
    from mlflow import MlflowClient

    project = make_project(tmp_path / "lenient", **LENIENT_GOALS)
    dataset = make_dataset(project)
    config = LeaderboardConfig(
        families=[Family.CLASSICAL, Family.PROBE],
        backbones=["efficientnet_lite0"],
        bootstrap=20,
        budget_min=10,
    )
    result = run_leaderboard(project, dataset, config, out_dir=tmp_path / "board")

    assert [e.name for e in result.entries] == [
        "classical/logreg",
        "classical/gboost",
        "probe/efficientnet_lite0",
    ]
    assert all(e.status == "finished" for e in result.entries)
    order = result.ranked
    assert [e.calib_recall for e in order] == sorted((e.calib_recall for e in order), reverse=True)
    written = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert written["threshold_split"] == "calib"
    assert [row["rank"] for row in written["entries"]] == [1, 2, 3]
    assert set(written["entries"][0]["test_subtype_recall"]) == {"square", "scratch"}
    assert "| # | entry |" in (tmp_path / "board" / "leaderboard.md").read_text()
    assert "<table>" in (tmp_path / "board" / "leaderboard.html").read_text()

    client = MlflowClient(project.tracking_uri)
    for entry in result.entries:
        run = client.get_run(entry.outcome.run_id)
        assert run.data.tags["visionline.leaderboard"] == result.leaderboard_id
        assert run.data.tags["visionline.model_kind"] == entry.kind
        assert "test_defect_recall" in run.data.metrics
        assert run.data.metrics["latency_ms_batch1"] > 0
    best = challenger(result.entries)
    assert best is not None and result.challenger["entry"] == best.name
    version = client.get_model_version_by_alias(project.config.name, "challenger")
    assert version.run_id == best.outcome.run_id


@pytest.mark.slow
def test_entries_after_the_deadline_are_reported_not_finished(tiles, tmp_path):
    project, dataset = tiles
    clock = Clock()
    budget = Budget(1, clock=clock)

    def after(entry) -> None:
        clock.now = budget.deadline + 1  # the first entry used up the budget

    result = run_leaderboard(
        project, dataset, CLASSICAL_ONLY, out_dir=tmp_path / "board", on_entry=after, budget=budget
    )
    logreg, gboost = result.entries
    assert logreg.status == "finished" and [e.name for e in ranked(result.entries)] == [logreg.name]
    assert (gboost.status, gboost.reason) == ("not finished", "not started: the budget was spent")
    rows = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["entries"]
    assert [(r["name"], r["status"], r["rank"]) for r in rows] == [
        ("classical/logreg", "finished", 1),
        ("classical/gboost", "not finished", None),
    ]
    assert "Not finished within the 1-minute budget: classical/gboost." in result.summary_lines()


def test_a_budget_too_small_for_any_entry_is_one_sentence_and_still_writes_the_board(
    tiles, tmp_path
):
    project, dataset = tiles
    clock = Clock()
    budget = Budget(1, clock=clock)
    clock.now, clock.tick = budget.deadline - 1.5, 1.0  # starts, then runs out mid-way

    with pytest.raises(TrainingError) as raised:
        run_leaderboard(project, dataset, CLASSICAL_ONLY, out_dir=tmp_path / "board", budget=budget)
    message = str(raised.value)
    assert message.startswith("No leaderboard entry finished within the 1-minute budget")
    assert message.endswith("raise --budget-min.") and "\n" not in message
    rows = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["entries"]
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("not finished", "stopped: the 1-minute budget ran out"),
        ("not finished", "not started: the budget was spent"),
    ]
