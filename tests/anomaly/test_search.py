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
