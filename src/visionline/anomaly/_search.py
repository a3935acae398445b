"""Exact nearest-neighbour distances to the memory bank by chunked matrix products.

||q - b||² = ||q||² - 2 q·b + ||b||²: one matmul per chunk of queries, so memory stays at
chunk × bank floats whatever the number of patches, and the same arithmetic exports to ONNX.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 4096


def squared_distances(
    queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor
) -> torch.Tensor:
    """(Q, B) squared Euclidean distances, clamped at zero against rounding."""
    query_sq = (queries * queries).sum(dim=1, keepdim=True)
    return (query_sq - 2.0 * queries @ bank.T + bank_sq).clamp_min(0.0)


def _nearest_part(
    queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    squared = squared_distances(queries, bank, bank_sq)
    if k == 1:
        distances, indices = squared.min(dim=1)
        return distances.sqrt(), indices
    values, indices = squared.topk(k, dim=1, largest=False)
    return values.sqrt().mean(dim=1), indices[:, 0]


def nearest(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_sq: torch.Tensor,
    k: int = 1,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's mean distance to its `k` nearest bank rows, and the index of the nearest.

    k > 1 scores a patch by how dense the good patches around it are rather than by its one
    closest match, which a single odd good patch in the bank could otherwise supply."""
    k = min(k, bank.shape[0])
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or queries.shape[0] <= chunk:
        return _nearest_part(queries, bank, bank_sq, k)
    parts = [_nearest_part(part, bank, bank_sq, k) for part in queries.split(chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def bank_neighbours(bank: torch.Tensor, k: int, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """(B, k) indices of each bank row's k nearest bank rows, itself first."""
    k = min(k, bank.shape[0])
    bank_sq = (bank * bank).sum(dim=1)
    parts = [
        squared_distances(part, bank, bank_sq).topk(k, dim=1, largest=False).indices
        for part in bank.split(chunk)
    ]
    return torch.cat(parts)
