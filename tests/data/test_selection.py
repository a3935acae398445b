"""Active-learning selection: each strategy picks what it promises, and bad input names the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from visionline.data._selection import (
    ModelScores,
    Strategy,
    k_centre,
    load_scores,
    select,
)
from visionline.errors import ConfigError, DataError


def _model(name: str, scores: list[float], threshold: float = 0.5) -> ModelScores:
    return ModelScores(name, {str(i): s for i, s in enumerate(scores)}, threshold)


def test_uncertainty_picks_scores_nearest_the_threshold() -> None:
    scores = np.array([0.01, 0.62, 0.97, 0.41, 0.55, 0.2])
    chosen = select(
        Strategy.UNCERTAINTY, 3, n_pool=6, scores=[scores], models=[_model("m", list(scores), 0.6)]
    )
    assert chosen.indices == [1, 4, 3]
    assert "0.020 from the threshold 0.600" in chosen.reasons[0]


def test_disagreement_puts_differing_decisions_first() -> None:
    a = np.array([0.9, 0.1, 0.55, 0.3])
    b = np.array([0.8, 0.7, 0.45, 0.05])
    chosen = select(
        Strategy.DISAGREEMENT,
        3,
        n_pool=4,
        scores=[a, b],
        models=[_model("champion", list(a)), _model("challenger", list(b))],
    )
    assert chosen.indices == [1, 2, 3]
    assert chosen.reasons[0] == "champion 0.100 vs challenger 0.700 (decisions differ)"


def test_k_centre_covers_every_cluster_before_repeating_one() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.1, (25, 2)) for c in centres])
    picks = k_centre(points, 4)
    assert sorted({p // 25 for p in picks}) == [0, 1, 2, 3]
    # with the first two clusters already labelled, the picks go to the other two
    labelled = points[[0, 25]]
    assert {p // 25 for p in k_centre(points, 2, labelled)} == {2, 3}


def test_mixed_takes_uncertain_then_diverse_without_repeats() -> None:
    scores = np.array([0.5, 0.51, 0.9, 0.1, 0.0, 1.0])
    embeddings = np.array([[0, 0], [0, 0.1], [5, 5], [-5, 5], [5, -5], [9, 9]], float)
    chosen = select(
        Strategy.MIXED,
        4,
        n_pool=6,
        scores=[scores],
        models=[_model("m", list(scores))],
        embeddings=embeddings,
    )
    assert chosen.indices[:2] == [0, 1] and len(set(chosen.indices)) == 4
    assert 5 in chosen.indices  # the farthest point from everything chosen


def test_random_is_seeded() -> None:
    first = select(Strategy.RANDOM, 5, n_pool=50, seed=3).indices
    assert first == select(Strategy.RANDOM, 5, n_pool=50, seed=3).indices
    assert first != select(Strategy.RANDOM, 5, n_pool=50, seed=4).indices


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"strategy": Strategy.UNCERTAINTY, "budget": 0, "n_pool": 4}, ConfigError, "at least one"),
        ({"strategy": Strategy.RANDOM, "budget": 3, "n_pool": 0}, DataError, "--include-labelled"),
        ({"strategy": Strategy.UNCERTAINTY, "budget": 3, "n_pool": 4}, ConfigError, "--scores"),
        (
            {"strategy": Strategy.DISAGREEMENT, "budget": 3, "n_pool": 4},
            ConfigError,
            "--scores twice",
        ),
    ],
)
def test_bad_requests_name_the_fix(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        select(**kwargs)


def test_load_scores_reads_score_output_and_its_threshold(tmp_path: Path) -> None:
    path = tmp_path / "score-v1.parquet"
    pd.DataFrame(
        {"sha256": ["a" * 64, "b" * 64, None], "defect_score": [0.3, 0.8, float("nan")]}
    ).to_parquet(path)
    (tmp_path / "score-v1.summary.json").write_text(json.dumps({"threshold": 0.42}))
    loaded = load_scores(path)
    assert loaded.threshold == 0.42 and loaded.scores == {"a" * 64: 0.3, "b" * 64: 0.8}
    assert load_scores(path, threshold=0.7).threshold == 0.7
    (tmp_path / "score-v1.summary.json").unlink()
    with pytest.raises(ConfigError, match="--threshold"):
        load_scores(path)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,score\nx,1\n")
    with pytest.raises(DataError, match="visionline score"):
        load_scores(bad, 0.5)
