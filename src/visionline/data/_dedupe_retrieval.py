"""Retrieval for near-duplicate detection: which pairs of images are worth verifying.

Every ORB descriptor (of the image and of its mirror) is quantised to a visual word of a
two-level vocabulary fitted on a seeded sample: B coarse centres, B finer ones under each
(B = 256, 65,536 words; a descriptor is compared with 2B centres, not B x B). Fine words matter:
two copies of one keypoint differ by about 41 of 256 bits (median), so with 1,024 words only a
quarter of the true matches between copies shared a word and 77 % of the true pairs were among
each other's 24 nearest signatures; with 65,536 words 94 % are (development set).

Keypoints of a static background (the same coarse word at the same place in many images, e.g.
the rollers behind every apple) are set aside. The rest form TF-IDF weighted, L2-normalised word
histograms, kept sparse (about 1,000 words per image), and an exact k-nearest-neighbour search
runs one chunk of query rows against all signatures at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visionline.data._dedupe_features import SIDE, FeatureTable

__all__ = [
    "Retrieval",
    "background",
    "candidates",
    "fit_vocabulary",
    "retrieve",
    "signatures",
    "words",
]

SEARCH_CHUNK = 512
_WORD_CHUNK = 2048
_VOCAB_IMAGES = 300
_TOP_SAMPLE = 30_000
_MEMBERS_PER_WORD = 5
_CELL_PX = 16
_BACKGROUND_WORDS = 1024
_BACKGROUND_MIN_IMAGES = 5
_BACKGROUND_SHARE = 0.01
_BACKGROUND_EXCESS = 3.0


@dataclass
class Retrieval:
    """Visual words (n, 2, F; -1 for empty slots), background flags (n, 2, F), the candidate
    pairs (i < j) of one table and their signature similarity (cosine of TF-IDF histograms)."""

    words: np.ndarray
    background: np.ndarray
    candidates: list[tuple[int, int]]
    similarity: np.ndarray


def _nearest(descriptors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Hamming) of every descriptor."""
    import faiss

    if not len(descriptors):
        return np.zeros(0, np.int64)
    _, index = faiss.knn_hamming(
        np.ascontiguousarray(descriptors), np.ascontiguousarray(centres), 1
    )
    return index[:, 0].astype(np.int64)


def _k_majority(
    descriptors: np.ndarray, k: int, rng: np.random.Generator, rounds: int
) -> np.ndarray:
    """k binary centres: each bit is the majority of its members' bits."""
    centres = descriptors[rng.choice(len(descriptors), size=k, replace=len(descriptors) < k)]
    centres = centres.copy()
    for _ in range(rounds):
        assign = _nearest(descriptors, centres)
        order = np.argsort(assign, kind="stable")
        filled, starts = np.unique(assign[order], return_index=True)
        sums = np.add.reduceat(
            np.unpackbits(descriptors[order], axis=1), starts, axis=0, dtype=np.int32
        )
        sizes = np.diff(np.append(starts, len(order)))[:, None]
        centres[filled] = np.packbits(sums * 2 > sizes, axis=1)
    return centres


def fit_vocabulary(
    table: FeatureTable, vocabulary: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """B coarse centres (B, 32) and B finer ones under each (B, B, 32), B = sqrt(vocabulary),
    B at most sqrt(descriptors / 5), fitted on the descriptors of up to 300 seeded images: the coarse level by 4 rounds of
    k-majority on 30,000 of them, each fine level by one round on its coarse cell's members
    (more rounds cost time and gained no retrieval recall)."""
    rng = np.random.default_rng(seed)
    n = len(table)
    pick = np.sort(rng.choice(n, size=min(n, _VOCAB_IMAGES), replace=False))
    sample = [
        np.asarray(table.desc[int(i), side, : int(table.count[i, side])])
        for i in pick
        for side in range(2)
    ]
    descriptors = np.concatenate(sample) if sample else np.zeros((0, 32), np.uint8)
    if len(descriptors) == 0:
        descriptors = np.zeros((1, 32), np.uint8)
    # a small folder gets fewer words: a word needs several sampled members, or every
    # descriptor becomes its own word and no two images share one
    per_word = len(descriptors) / _MEMBERS_PER_WORD
    branch = max(2, round(min(vocabulary, per_word) ** 0.5))
    subset = rng.choice(len(descriptors), size=min(len(descriptors), _TOP_SAMPLE), replace=False)
    top = _k_majority(descriptors[subset], branch, rng, 4)
    assign = _nearest(descriptors, top)
    leaves = np.empty((branch, branch, 32), np.uint8)
    for b in range(branch):
        members = descriptors[assign == b]
        leaves[b] = _k_majority(members if len(members) else top[b : b + 1], branch, rng, 1)
    return top, leaves


def words(table: FeatureTable, vocabulary: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The visual word of every keypoint slot (n, 2, F); -1 for empty slots."""
    top, leaves = vocabulary
    branch = len(top)
    n = len(table)
    out = np.full((n, 2, table.desc.shape[2]), -1, np.int32)
    for start in range(0, n, _WORD_CHUNK):
        chunk = table.take(np.arange(start, min(n, start + _WORD_CHUNK)))
        valid = np.arange(chunk.desc.shape[2])[None, None, :] < chunk.count[:, :, None]
        flat = np.ascontiguousarray(chunk.desc[valid])
        coarse = _nearest(flat, top)
        word = np.empty(len(flat), np.int32)
        order = np.argsort(coarse, kind="stable")
        cells, starts = np.unique(coarse[order], return_index=True)
        for b, members in zip(cells, np.split(order, starts[1:])):
            word[members] = b * branch + _nearest(flat[members], leaves[b])
        out[start : start + len(chunk)][valid] = word
    return out


def background(table: FeatureTable, words: np.ndarray, n_words: int) -> np.ndarray:
    """Keypoints of a static background (n, 2, F): the same word at the same place (16 px cell)
    in many images, e.g. the rollers behind every apple of one camera. Look-alikes share them,
    so they count neither for retrieval nor for verification. Fine words are pooled into about
    1,024 coarser ones here: a place must recur, and 65,536 words rarely repeat exactly.

    A place is background when it is frequent (`_BACKGROUND_MIN_IMAGES`, `_BACKGROUND_SHARE`) and
    `_BACKGROUND_EXCESS` times more frequent than chance: its word's share of all keypoints times
    its cell's. Frequency alone flagged half of all keypoints (common words in central cells),
    which cost most of the recall. Two passes over chunks of images: count, then flag."""
    pool = max(1, n_words // _BACKGROUND_WORDS)
    n_words = -(-n_words // pool)
    n = len(table)
    side = SIDE // _CELL_PX
    places = n_words * side * side

    def keys(start: int, end: int) -> np.ndarray:
        cells = np.clip(table.xy[start:end, :, :, :2] // _CELL_PX, 0, side - 1).astype(np.int64)
        coarse = words[start:end].astype(np.int64) // pool
        key = coarse * side * side + cells[..., 1] * side + cells[..., 0]
        key[words[start:end] < 0] = -1
        return key

    spans = [(s, min(n, s + _WORD_CHUNK)) for s in range(0, n, _WORD_CHUNK)]
    images_with = np.zeros(places, np.int64)
    keypoints = np.zeros(places, np.int64)
    for start, end in spans:
        key = keys(start, end)
        image = np.broadcast_to(np.arange(end - start)[:, None, None], key.shape)
        valid = key >= 0
        distinct = np.unique(image[valid] * places + key[valid]) % places
        images_with += np.bincount(distinct, minlength=places)
        keypoints += np.bincount(key[valid], minlength=places)
    by_place = keypoints.reshape(n_words, side * side)
    total = max(1, int(keypoints.sum()))
    chance = np.outer(by_place.sum(1), by_place.sum(0)).ravel() / total
    frequent = (images_with >= max(_BACKGROUND_MIN_IMAGES, _BACKGROUND_SHARE * n)) & (
        keypoints >= _BACKGROUND_EXCESS * chance
    )
    out = np.zeros(words.shape, bool)
    for start, end in spans:
        key = keys(start, end)
        out[start:end] = (key >= 0) & frequent[np.maximum(key, 0)]
    return out


def signatures(words: np.ndarray, background: np.ndarray, n_words: int):
    """TF-IDF weighted, L2-normalised visual-word histograms as a sparse (n, n_words) CSR
    matrix, flip-invariant (both orientations count); built one chunk of images at a time."""
    from scipy import sparse

    n = len(words)
    parts = []
    for start in range(0, n, _WORD_CHUNK):
        w = words[start : start + _WORD_CHUNK]
        keep = (w >= 0) & ~background[start : start + _WORD_CHUNK]
        rows = np.broadcast_to(np.arange(len(w))[:, None, None], w.shape)[keep]
        part = sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, w[keep])), shape=(len(w), n_words)
        )
        part.sum_duplicates()
        parts.append(part)
    counts = sparse.vstack(parts, format="csr") if parts else sparse.csr_matrix((0, n_words))
    seen = np.bincount(counts.indices, minlength=n_words)
    idf = np.log((n + 1) / (1 + seen)).astype(np.float32)
    counts.data *= idf[counts.indices]
    norms = np.sqrt(np.add.reduceat(counts.data**2, counts.indptr[:-1])) if counts.nnz else None
    if norms is not None:
        empty = np.diff(counts.indptr) == 0
        norms[empty] = 1.0
        counts.data /= np.repeat(norms, np.diff(counts.indptr)) + 1e-9
    return counts


def candidates(
    signatures, neighbours: int, min_similarity: float, rows: int | None = None
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Pairs (i < j) where j is among i's nearest neighbours (or i among j's), searched exactly,
    one chunk of rows at a time (`rows` limits the query rows, for measuring at scale), and
    their similarity."""
    n = signatures.shape[0]
    k = min(neighbours, n - 1)
    if k <= 0:
        return [], np.zeros(0, np.float32)
    transposed = signatures.T.tocsr()
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, n if rows is None else min(n, rows), SEARCH_CHUNK):
        block = signatures[start : start + SEARCH_CHUNK]
        sims = (block @ transposed).toarray()
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -1.0
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for r, nearest in enumerate(top):
            i = start + r
            for j in nearest[sims[r, nearest] >= min_similarity].tolist():
                pairs[(min(i, j), max(i, j))] = float(sims[r, j])
    ordered = sorted(pairs)
    return ordered, np.asarray([pairs[p] for p in ordered], np.float32)


def retrieve(
    table: FeatureTable, vocabulary: int, neighbours: int, min_similarity: float, seed: int
) -> Retrieval:
    """Words, background and candidate pairs of `table` (see the module doc).

    The Hamming searches run on one OpenMP thread: most are small (one coarse cell's members
    against its 256 fine centres), and OpenMP's start-up and spinning cost 5x their work."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        fitted = fit_vocabulary(table, vocabulary, seed)
        found = words(table, fitted)
    finally:
        faiss.omp_set_num_threads(threads)
    n_words = len(fitted[0]) ** 2
    flagged = background(table, found, n_words)
    pairs, similarity = candidates(signatures(found, flagged, n_words), neighbours, min_similarity)
    return Retrieval(found, flagged, pairs, similarity)
