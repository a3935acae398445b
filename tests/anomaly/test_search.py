import torch

from visionline.anomaly._search import bank_neighbours, nearest


def test_chunked_nearest_equals_brute_force():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(1000, 24, generator=generator)
    bank = torch.randn(300, 24, generator=generator)
    distances, indices = nearest(queries, bank, (bank * bank).sum(1), chunk=64)
    brute = torch.cdist(queries, bank)
    assert torch.equal(indices, brute.argmin(dim=1))
    assert torch.allclose(distances, brute.min(dim=1).values, atol=1e-4)


def test_bank_neighbours_start_with_the_row_itself():
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(50, 8, generator=generator)
    neighbours = bank_neighbours(bank, 5, chunk=16)
    assert neighbours.shape == (50, 5)
    assert torch.equal(neighbours[:, 0], torch.arange(50))
    expected = torch.cdist(bank, bank).topk(5, largest=False).indices
    assert torch.equal(neighbours, expected)


def test_k_nearest_scores_a_query_by_its_mean_distance_and_keeps_the_nearest_index():
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(500, 16, generator=generator)
    bank = torch.randn(120, 16, generator=generator)
    distances, indices = nearest(queries, bank, (bank * bank).sum(1), k=5, chunk=64)
    brute = torch.cdist(queries, bank)
    assert torch.equal(indices, brute.argmin(dim=1))
    expected = brute.topk(5, dim=1, largest=False).values.mean(dim=1)
    assert torch.allclose(distances, expected, atol=1e-4)
    assert (distances >= brute.min(dim=1).values - 1e-5).all()


def test_k_beyond_the_bank_averages_over_the_whole_bank():
    bank = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    distances, indices = nearest(torch.zeros(1, 2), bank, (bank * bank).sum(1), k=9)
    assert indices.tolist() == [0]
    assert torch.allclose(distances, torch.tensor([2.5]))
