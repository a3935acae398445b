"""The HTML report rendered in a real headless Chromium: numbers on the page, every image decoded."""

from __future__ import annotations

import json

import pytest
from browser_support import headless_chromium

from visionline.evaluate import evaluate_model


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as driver:
        yield driver


@pytest.mark.slow
def test_report_renders_numbers_and_images_in_chromium(eval_env, tmp_path, browser):
    result = evaluate_model(
        eval_env.project, str(eval_env.model), eval_env.dataset, output_dir=tmp_path, bootstrap=50
    )
    metrics = json.loads(result.metrics_path.read_text())
    browser.get(result.report_path.as_uri())
    text = browser.find_element("tag name", "body").text
    assert (
        browser.find_element("id", "m-false_reject_rate").text
        == f"{metrics['false_reject_rate']:.2%}"
    )
    assert browser.find_element("id", "m-defect_recall").text == f"{metrics['defect_recall']:.2%}"
    assert browser.find_element("id", "m-threshold").text == f"{metrics['threshold']:.4f}"
    assert "Quality gates" in text and "pass" in text
    widths = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
    )
    # two confusion matrices, ROC/PR, histograms, reliability diagram (+ any worst mistakes)
    assert len(widths) >= 5
    assert all(width > 0 for width in widths)
