import torch

from visionline.anomaly import greedy_coreset
from visionline.anomaly._coreset import random_projection


def _clusters(n_per: int, centres: list[float]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    parts = [c + 0.01 * torch.randn(n_per, 16, generator=generator) for c in centres]
    return torch.cat(parts)


def test_greedy_coreset_covers_every_cluster_with_one_centre_each():
    points = _clusters(200, [0.0, 5.0, -5.0, 10.0])
    chosen = greedy_coreset(points, 4, projection_dim=0)
    assert sorted((chosen // 200).tolist()) == [0, 1, 2, 3]


def test_sharded_selection_still_keeps_a_rare_pattern():
    points = _clusters(5000, [0.0])
    rare = torch.full((1, 16), 20.0)
    points = torch.cat([points, rare])
    chosen = greedy_coreset(points, 40, projection_dim=8, shard_size=1000)
    assert len(chosen) == 40 and len(set(chosen.tolist())) == 40
    assert 5000 in chosen.tolist()


def test_asking_for_more_than_there_is_returns_everything():
    points = torch.randn(10, 4)
    assert greedy_coreset(points, 50).tolist() == list(range(10))


def test_random_projection_roughly_keeps_distances():
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(50, 512, generator=generator)
    projected = random_projection(points, 128, seed=0)
    ratio = torch.pdist(projected) / torch.pdist(points)
    assert projected.shape == (50, 128)
    assert 0.7 < float(ratio.median()) < 1.3
