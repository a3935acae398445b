"""Retrieval for near-duplicates: fine visual words, sized to the folder, and the mirror side."""

from __future__ import annotations

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

from visionline.data._dedupe import DedupeConfig
from visionline.data._dedupe_features import concat, image_features
from visionline.data._dedupe_retrieval import fit_vocabulary, retrieve, signatures, words
from visionline.data._dedupe_verify import PairMatcher


def _photo(box: tuple[int, int, int, int], name: str = "china.jpg") -> Image.Image:
    return Image.fromarray(load_sample_image(name)).crop(box).resize((192, 192))


def test_a_small_folder_gets_a_vocabulary_its_copies_share() -> None:
    source = _photo((40, 40, 300, 300))
    images = [source, source.rotate(90, expand=True), _photo((20, 20, 220, 220), "flower.jpg")]
    table = concat([image_features(im) for im in images])
    top, leaves = fit_vocabulary(table, 65536, seed=0)
    descriptors = int(table.count.sum())
    assert len(top) * leaves.shape[1] <= descriptors / 4  # not one word per descriptor
    found = words(table, (top, leaves))
    signed = signatures(found, np.zeros(found.shape, bool), len(top) ** 2)
    similarity = (signed @ signed.T).toarray()
    assert similarity[0, 1] > 2 * max(similarity[0, 2], similarity[1, 2])


def test_the_mirror_side_is_described_as_if_detected_on_the_mirror() -> None:
    image = _photo((40, 40, 300, 300))
    own = image_features(image)
    mirrored = image_features(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    ours = np.unpackbits(own.desc[0, 1, : own.count[0, 1]], axis=1).astype(np.int16)
    theirs = np.unpackbits(mirrored.desc[0, 0, : mirrored.count[0, 0]], axis=1).astype(np.int16)
    nearest = np.abs(ours[:, None, :] - theirs[None, :, :]).sum(-1).min(1)
    assert np.median(nearest) <= 8  # most of the mirror's descriptors are found again


def test_the_orientation_sharing_more_words_is_matched() -> None:
    source = _photo((40, 40, 300, 300))
    flipped = source.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(30)
    images = [source, flipped, source.rotate(200), _photo((330, 150, 590, 410))]
    table = concat([image_features(im) for im in images])
    matcher = PairMatcher(table, retrieve(table, 65536, 3, 0.0, seed=0), DedupeConfig())
    assert matcher.side(0, 1) == 1
    assert matcher.side(0, 2) == 0
