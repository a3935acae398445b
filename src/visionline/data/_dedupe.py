"""Near-duplicate groups that survive rotation, flips, zoom, crop, shear, relighting and JPEG.

Three stages, each bounded in memory by a chunk size rather than by the number of images:

1. **Retrieval** (`_dedupe_retrieval`). Every image's ORB descriptors (and its mirror's, see
   `_dedupe_features`) are quantised to 65,536 visual words; keypoints of a static background
   are set aside; sparse TF-IDF word histograms give each image its 24 nearest candidates.
2. **Verification.** Only the orientation of one image that shares more words with the other is
   matched, and a screen with its 100 strongest keypoints drops the 70 % of the candidates that
   fit nothing. Matches (ratio test) vote on the rotation between the two images; those near
   the winner go to a RANSAC affine fit (rotation, zoom, shear, translation; the mirror features
   cover flips). The score is the number of distinct 8 px cells its inliers cover, so a cluster
   of matches on one shared detail (the stem every synthetic apple has) counts little, scaled
   down when the inliers are a small share of the matches (see `_dedupe_verify`). A pair must beat
   what each image scores against its other candidates, mostly look-alikes (see `_verify`).
   An image left without a partner gets a second look (see `_second_chance`): its most similar
   candidates are matched again on both orientations with all keypoints, and the best fit must
   stand out from the others and agree photometrically (`_dedupe_photo`).
3. **Grouping.** Verified pairs join groups, strongest first; two groups of several images merge
   only when enough verified pairs tie them (half of the smaller group), so one spurious pair
   cannot chain unrelated images through a long path. A group above `max_group_share` of the
   images is refused with a message that says what to check.

Global CNN embeddings were measured first (efficientnet_lite0, average of 4 rotations): recall@20
of true copies was 0.42 on apples and tiles with same-class look-alikes, because such embeddings
say "an apple", not "this apple"; local features tell the instance apart.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from visionline.data._dedupe_features import FeatureTable
from visionline.data._dedupe_retrieval import Retrieval, retrieve
from visionline.data._dedupe_verify import PairMatcher
from visionline.errors import DataError

__all__ = ["DedupeConfig", "NearDuplicates", "find_groups"]

_MIN_IMAGES_FOR_SHARE_CHECK = 20
_PAIRS_PER_TASK = 64


@dataclass(frozen=True)
class DedupeConfig:
    """Knobs of the detector; the defaults were chosen on the development set of
    benchmarks/near_duplicates.py (other tiles and apples than the reported set)."""

    vocabulary: int = 65536
    neighbours: int = 16
    screen_keypoints: int = 100
    """Development set: 100 kept the recall of 150 (96.0 %), precision 98.8 -> 99.1 %, 15 % less
    verification CPU; 75 lost 1 % recall."""
    min_similarity: float = 0.01
    min_cells: int = 8
    noise_quantile: float = 0.75
    noise_margin: int = 7
    max_required: int = 30
    ratio: float = 0.85
    reprojection_px: float = 3.0
    second_look_candidates: int = 8
    """Candidates (most similar first) an image left alone is matched with again; 0 turns the
    second look off. Development set: 8 reached 5 of its 7 lone copies (6 and 12: 4 and 5)."""
    second_look_margin: int = 3
    min_agreement: float = 0.35
    """High-pass correlation of the warped pictures a second-look pair needs (true pairs on the
    development set 0.33-0.86, the best look-alike candidates of lone images at most 0.29)."""
    max_group_share: float = 0.25
    seed: int = 0


@dataclass
class NearDuplicates:
    """Groups of near-duplicate images: `group[i]` is the group number of image i (its smallest
    member's index), `pairs` the verified pairs (i, j, inliers)."""

    group: list[int]
    pairs: list[tuple[int, int, int]] = field(default_factory=list)
    candidates: int = 0

    def groups(self) -> list[list[int]]:
        """Groups of two or more images, largest first (ties by first member)."""
        members: dict[int, list[int]] = defaultdict(list)
        for index, g in enumerate(self.group):
            members[g].append(index)
        multi = [m for m in members.values() if len(m) > 1]
        return sorted(multi, key=lambda m: (-len(m), m[0]))


def _pool() -> ThreadPoolExecutor:
    """Threads for verification: each runs its Hamming searches on one OpenMP thread (a
    per-thread setting; one search per pair is small), the pool's threads use the cores."""
    import faiss

    workers = max(1, min(8, os.cpu_count() or 1))
    return ThreadPoolExecutor(
        max_workers=workers, initializer=faiss.omp_set_num_threads, initargs=(1,)
    )


def _verify(
    matcher: PairMatcher,
    candidates: list[tuple[int, int]],
    config: DedupeConfig,
    pool: ThreadPoolExecutor,
    progress: Callable[[int, int], None] | None,
) -> list[tuple[int, int, int]]:
    """Verified pairs (i, j, cells); OpenCV and faiss release the GIL, so threads use every core.

    Some look-alikes share a detail (the same stem on every synthetic apple, a logo), so the
    score an image needs adapts to it: its candidates are mostly not copies, and a pair must
    beat both images' `noise_quantile` candidate score by `noise_margin` cells (at least
    `min_cells`, at most `max_required`, so a source with many copies still joins).
    """
    scores = np.zeros(len(candidates), np.int32)
    # batches of pairs per task: one future per pair cost the main thread 1 ms per image
    starts = range(0, len(candidates), _PAIRS_PER_TASK)
    batches = pool.map(
        lambda start: [matcher.score(*p) for p in candidates[start : start + _PAIRS_PER_TASK]],
        starts,
    )
    for start, cells in zip(starts, batches):
        scores[start : start + len(cells)] = cells
        if progress is not None:
            progress(start + len(cells), len(candidates))
    if not candidates:
        return []
    pairs = np.asarray(candidates)
    ends = np.concatenate([pairs[:, 0], pairs[:, 1]])
    both = np.concatenate([scores, scores])
    order = np.argsort(ends, kind="stable")
    images, starts = np.unique(ends[order], return_index=True)
    noise = np.zeros(len(matcher.table), np.float64)
    for image, part in zip(images, np.split(both[order], starts[1:])):
        noise[image] = np.quantile(part, config.noise_quantile)
    need = np.clip(noise + config.noise_margin, config.min_cells, config.max_required)
    ok = scores >= np.maximum(need[pairs[:, 0]], need[pairs[:, 1]])
    return [(int(i), int(j), int(c)) for (i, j), c in zip(pairs[ok], scores[ok])]


def _second_chance(
    matcher: PairMatcher,
    found: Retrieval,
    config: DedupeConfig,
    verified: list[tuple[int, int, int]],
    pool: ThreadPoolExecutor,
) -> list[tuple[int, int, int]]:
    """Pairs for images the first pass left without a partner (an image-level test).

    Such an image is often a copy of little texture that is cropped and sheared: the first pass
    matched one orientation, screened by the strongest keypoints, in one direction, and its few
    true matches scored like a look-alike's. Here it is matched again with its
    `second_look_candidates` most similar candidates, both orientations and all keypoints, as
    the query image. Its best fit is accepted when it reaches `min_cells`, beats every fit with
    images outside that candidate's group by `second_look_margin` cells, and the pictures agree
    once warped (`min_agreement`). Only these images pay: on the development set 17 % of the
    images, 16 matches each.
    """
    k = config.second_look_candidates
    n = len(matcher.table)
    partnered = {i for pair in verified for i in pair[:2]}
    if k <= 0 or len(partnered) == n:
        return []
    group = _group(n, verified)
    near: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for (i, j), similarity in zip(found.candidates, found.similarity):
        for a, b in ((i, j), (j, i)):
            if a not in partnered:
                near[a].append((float(similarity), b))
    alone = sorted(near)
    shortlists = [[j for _, j in sorted(near[i], key=lambda t: (-t[0], t[1]))[:k]] for i in alone]

    def look(task: tuple[int, list[int]]) -> list[tuple[int, int, float]]:
        i, others = task
        return [(j, *matcher.second_look(i, j)) for j in others]

    accepted: dict[tuple[int, int], int] = {}
    for i, looks in zip(alone, pool.map(look, zip(alone, shortlists))):
        best, cells, agree = max(looks, key=lambda t: (t[1], -t[0]), default=(0, 0, -1.0))
        rivals = _best_outside(looks, group, group[best])
        if (
            cells >= config.min_cells
            and cells >= rivals + config.second_look_margin
            and agree >= config.min_agreement
        ):
            accepted[(min(i, best), max(i, best))] = cells
    return [(i, j, c) for (i, j), c in sorted(accepted.items())]


def _best_outside(looks: Iterable[tuple[int, int, float]], group: list[int], g: int) -> int:
    """The best score among second looks at images outside group g (0 if none)."""
    return max((cells for j, cells, _ in looks if group[j] != g), default=0)


def _group(n: int, pairs: list[tuple[int, int, int]]) -> list[int]:
    """Groups from verified pairs with a guard against chaining (see the module doc)."""
    parent = list(range(n))
    size = [1] * n

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ordered = sorted(pairs, key=lambda p: -p[2])
    merged = True
    while merged:
        merged = False
        links: Counter[tuple[int, int]] = Counter()
        for i, j, _ in ordered:
            ri, rj = find(i), find(j)
            if ri != rj:
                links[(min(ri, rj), max(ri, rj))] += 1
        for (ri, rj), count in links.items():
            ri, rj = find(ri), find(rj)
            if ri == rj or count < (min(size[ri], size[rj]) + 1) // 2:
                continue
            keep, gone = min(ri, rj), max(ri, rj)
            parent[gone] = keep
            size[keep] += size[gone]
            merged = True
    return [find(i) for i in range(n)]


def find_groups(
    table: FeatureTable,
    config: DedupeConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    must_link: list[tuple[int, int]] | None = None,
) -> NearDuplicates:
    """Near-duplicate groups of the images whose features are `table` (see the module doc).

    Raises `DataError` when one group would hold more than `config.max_group_share` of 20 or
    more images. `progress(done, total)` is called while candidate pairs are verified.
    `must_link` pairs (e.g. pHash-identical images) join their groups without the chain guard.
    """
    config = config or DedupeConfig()
    n = len(table)
    if n < 2:
        return NearDuplicates(list(range(n)))
    found = retrieve(
        table, config.vocabulary, config.neighbours, config.min_similarity, config.seed
    )
    candidates = found.candidates
    with _pool() as pool:
        matcher = PairMatcher(table, found, config)
        verified = _verify(matcher, candidates, config, pool, progress)
        verified += _second_chance(matcher, found, config, verified, pool)
    group = _group(n, verified)
    if must_link:
        from visionline.data._phash import groups_from_pairs

        links = [(group[i], group[j], 0) for i, j in must_link] + [
            (i, g, 0) for i, g in enumerate(group)
        ]
        group = groups_from_pairs(n, links)
    result = NearDuplicates(group, verified, len(candidates))
    groups = result.groups()
    if n >= _MIN_IMAGES_FOR_SHARE_CHECK and groups and len(groups[0]) > config.max_group_share * n:
        raise DataError(
            f"Near-duplicate detection puts {len(groups[0])} of {n} images into one group, more "
            f"than {config.max_group_share:.0%}; check whether the folder really shows that few "
            "distinct objects (e.g. one part shot many times), and group by a key with --group-by "
            "if so."
        )
    return result
