"""`visionline score` as a user runs it: a summary table and a rows file, or a one-line error."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_support import assert_one_line_error, run_visionline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

import score_support

onnx_model = score_support.onnx_model
score_bundle = score_support.score_bundle
score_images = score_support.score_images


def test_score_prints_a_summary_and_writes_rows(score_bundle, score_images, tmp_path):
    out = tmp_path / "rows.csv"
    result = run_visionline(
        "score", score_images, "--bundle", score_bundle.parent, "--out", out, "--workers", "1",
        cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "Scored" in text and "apples v1" in text
    rows = pd.read_csv(out)
    flagged = int(rows["flagged"].sum())
    assert f"images │ {len(rows)}" in text
    assert "failed (unreadable) │ 2" in text
    assert f"flagged │ {flagged}" in text
    assert "estimated defect rate" in text and "90% CI" in text
    assert f"Wrote {out}" in text and "local executor, 1 workers" in text
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, needles",
    [
        (["nowhere", "--bundle", "BUNDLE"], ["No image folder", "nowhere"]),
        (["IMAGES", "--bundle", "missing-bundle"], ["No bundle at missing-bundle"]),
        (["IMAGES"], ["No --bundle given"]),
        (["IMAGES", "--bundle", "BUNDLE", "--executor", "spark"], ["Unknown executor 'spark'"]),
        (["IMAGES", "--bundle", "BUNDLE", "--require-signature"], ["no key is trusted", "--trust-store"]),
    ],
)
def test_bad_input_is_one_line_and_nonzero(score_bundle, score_images, tmp_path, args, needles):
    swap = {"BUNDLE": str(score_bundle), "IMAGES": str(score_images)}
    result = run_visionline("score", *(swap.get(a, a) for a in args), cwd=tmp_path)
    assert_one_line_error(result, *needles)
