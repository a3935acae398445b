"""Perceptual hashing (64-bit DCT pHash) and near-duplicate search.

Two photos of the same object a few pixels apart have different sha256 values but nearly the
same pHash; keeping such pairs in one split stops a model from being tested on its training
images.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT_MAX_DISTANCE = 4
"""Hamming distance (of 64 bits) up to which two images count as near-duplicates."""

_BLOCK = 1024


def _dct_rows(n: int = 32, keep: int = 8) -> np.ndarray:
    """The first `keep` rows of the orthonormal DCT-II matrix (same as scipy's norm='ortho')."""
    k = np.arange(keep)[:, None]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * np.arange(n) + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


_DCT8 = _dct_rows()


def phash(image: Image.Image) -> int:
    """64-bit pHash: sign of the 8×8 lowest DCT frequencies of a 32×32 grey thumbnail vs. their median."""
    grey = image.convert("L").resize((32, 32), Image.Resampling.BILINEAR)
    coeffs = (_DCT8 @ np.asarray(grey, dtype=np.float32) @ _DCT8.T).ravel()
    ordered = np.sort(coeffs)
    bits = coeffs > (ordered[31] + ordered[32]) / 2
    return int(np.packbits(bits).view(">u8")[0])


def near_duplicate_pairs(
    hashes: list[int], max_distance: int = DEFAULT_MAX_DISTANCE
) -> list[tuple[int, int, int]]:
    """Index pairs (i < j) whose hashes differ in at most `max_distance` bits, with that distance."""
    values = np.asarray(hashes, dtype=np.uint64)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(values), _BLOCK):
        block = values[start : start + _BLOCK]
        distance = np.bitwise_count(block[:, None] ^ values[None, start:])
        rows, cols = np.nonzero(distance <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i, j = start + r, start + c
            if i < j:
                pairs.append((i, j, int(distance[r, c])))
    return pairs


def groups_from_pairs(n: int, pairs: list[tuple[int, int, int]]) -> list[int]:
    """Connected components (union-find): a group number for each of `n` items."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]
