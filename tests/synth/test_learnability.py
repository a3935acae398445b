"""Sanity of the task's difficulty: colour histograms separate obvious defects, not subtle ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from visionline.synth import Subtype, SynthConfig, SynthLine


def histogram_features(pixels: np.ndarray) -> np.ndarray:
    hsv = np.asarray(Image.fromarray(pixels).convert("HSV"))
    parts = [np.histogram(hsv[..., c], bins=16, range=(0, 256))[0] for c in range(3)]
    parts += [np.histogram(pixels[..., c], bins=16, range=(0, 256))[0] for c in range(3)]
    return np.log1p(np.concatenate(parts).astype(float))


def accuracy(severity_min: float, severity_max: float, n: int = 400) -> float:
    line = SynthLine(
        SynthConfig(size=64, seed=1, severity_min=severity_min, severity_max=severity_max)
    )
    features, labels = [], []
    for index in range(n):
        subtype = None if index % 2 == 0 else list(Subtype)[(index // 2) % len(Subtype)]
        features.append(histogram_features(line.render(index, subtype).pixels))
        labels.append(subtype is not None)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    return float(cross_val_score(model, np.array(features), np.array(labels), cv=5).mean())


@pytest.mark.slow
def test_histograms_do_not_solve_subtle_defects_but_see_obvious_ones():
    subtle = accuracy(0.0, 0.33)
    obvious = accuracy(0.67, 1.0)
    assert subtle < 0.75, "subtle defects must not be separable by colour statistics"
    assert obvious > 0.6, "obvious defects must be clearly visible"
    assert obvious > subtle + 0.08
