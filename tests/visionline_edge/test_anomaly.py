"""The outputs an anomaly bundle derives from its graph: a normalised score that flags exactly
what the raw score flags, and a block-mean map embedding."""

from __future__ import annotations

import numpy as np

from visionline_edge._anomaly import anomaly_outputs, map_embedding, normalised_score


def test_normalised_score_is_monotone_and_half_at_the_threshold():
    scores = np.array([0.0, 1.0, 4.0, 4.0001, 40.0], dtype=np.float32)
    q = normalised_score(scores, 4.0)
    assert q[0] == 0.0 and q[2] == 0.5 and np.all(np.diff(q) > 0) and q[-1] < 1.0
    np.testing.assert_array_equal(q > 0.5, scores > 4.0)


def test_map_embedding_averages_blocks_of_the_map_over_the_threshold():
    maps = np.zeros((2, 1, 16, 16), dtype=np.float32)
    maps[0, 0, :2, :2] = 8.0  # the top-left 2x2 block of an 8x8 grid
    maps[1, 0] = 2.0
    embedding = map_embedding(maps, threshold=2.0, grid=8)
    assert embedding.shape == (2, 64)
    assert embedding[0, 0] == 4.0 and np.count_nonzero(embedding[0]) == 1
    np.testing.assert_allclose(embedding[1], 1.0)


def test_map_embedding_handles_sizes_that_the_grid_does_not_divide():
    maps = np.ones((1, 10, 10), dtype=np.float32)
    np.testing.assert_allclose(map_embedding(maps, 1.0, grid=3), 1.0)


def test_derived_outputs_are_two_class_probabilities_summing_to_one():
    raw = {
        "score": np.array([1.0, 9.0], np.float32),
        "decision": np.array([False, True]),
        "anomaly_map": np.ones((2, 1, 8, 8), np.float32),
    }
    out = anomaly_outputs(raw, 3.0)
    assert out["probabilities"].shape == (2, 2) and out["embedding"].shape == (2, 64)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0)
    np.testing.assert_allclose(out["probabilities"][:, 1], [0.25, 0.75])
    assert out["decision"] is raw["decision"]
