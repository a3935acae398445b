"""Own DCT pHash: stable under re-encoding and resizing, far apart for different content."""

from __future__ import annotations

import io

from PIL import Image

from visionline.data import phash
from visionline.data._phash import groups_from_pairs, near_duplicate_pairs


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_phash_is_64_bit_and_robust_to_reencoding_and_resizing(imgs):
    a = _open(imgs.jpeg_bytes(7, size=64))
    b = _open(imgs.jpeg_bytes(7, size=64, quality=50))
    c = a.resize((128, 128))
    h = phash(a)
    assert 0 <= h < 2**64
    assert (h ^ phash(b)).bit_count() <= 4
    assert (h ^ phash(c)).bit_count() <= 4


def test_different_images_are_far_apart(imgs):
    hashes = [phash(_open(imgs.jpeg_bytes(seed))) for seed in range(20)]
    assert len(set(hashes)) == 20
    assert near_duplicate_pairs(hashes, 4) == []


def test_pairs_and_groups():
    hashes = [0b0, 0b1, 0b11, 0xFF00FF00FF00FF00, 0b111 << 40]
    pairs = near_duplicate_pairs(hashes, 2)
    assert pairs == [(0, 1, 1), (0, 2, 2), (1, 2, 1)]
    assert groups_from_pairs(5, pairs) == [0, 0, 0, 3, 4]
    assert groups_from_pairs(3, [(1, 2, 0), (0, 2, 0)]) == [0, 0, 0]
