"""Greedy k-centre coreset selection that stays fast on a CPU.

The greedy rule (pick the patch farthest from everything picked so far) keeps rare good patterns
in the memory bank that a random subsample would drop. Done naively it reads every candidate once
per picked centre, which is what makes coreset selection crawl on a CPU. Here it runs

- on a Johnson–Lindenstrauss random projection of the features (fewer bytes per candidate), and
- on random shards of at most `shard_size` candidates, each picking its share of the centres;
  a shard stays in the CPU cache, and the union of per-shard greedy coresets is itself a
  k-centre coreset within a constant factor (composable coresets, Indyk et al. 2014).
"""

from __future__ import annotations

import math

import torch

SHARD_SIZE = 16_384


def random_projection(features: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Features projected onto `dim` Gaussian directions (distances kept up to ~1/sqrt(dim))."""
    if dim <= 0 or dim >= features.shape[1]:
        return features
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], dim, generator=generator) / dim**0.5
    return features @ matrix


def _greedy(points: torch.Tensor, size: int, first: int) -> torch.Tensor:
    """Greedy k-centre on one shard: one matrix-vector product per picked centre."""
    squared = (points * points).sum(dim=1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = first
    nearest = squared - 2 * (points @ points[first]) + squared[first]
    for step in range(1, size):
        index = int(torch.argmax(nearest))
        chosen[step] = index
        distance = squared - 2 * (points @ points[index]) + squared[index]
        torch.minimum(nearest, distance, out=nearest)
    return chosen


def greedy_coreset(
    features: torch.Tensor,
    size: int,
    projection_dim: int = 64,
    seed: int = 0,
    shard_size: int = SHARD_SIZE,
) -> torch.Tensor:
    """Indices (into `features`) of `size` patches chosen by sharded greedy k-centre selection."""
    total = features.shape[0]
    if size >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    points = random_projection(features.float(), projection_dim, seed)
    order = torch.randperm(total, generator=generator)
    shards = max(1, math.ceil(total / shard_size))
    bounds = [round(i * total / shards) for i in range(shards + 1)]
    quotas = [
        round(size * bounds[i + 1] / total) - round(size * bounds[i] / total) for i in range(shards)
    ]
    picked = []
    for start, stop, quota in zip(bounds, bounds[1:], quotas):
        if quota == 0:
            continue
        members = order[start:stop]
        first = int(torch.randint(len(members), (1,), generator=generator))
        picked.append(members[_greedy(points[members].contiguous(), quota, first)])
    return torch.cat(picked).sort().values
