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


HOSTILE = "<script>alert(1)</script>"


def _hostile_report(tmp_path) -> str:
    """A report whose title, metadata and mistake captions carry a script tag."""
    import numpy as np
    from eval_builders import make_project
    from PIL import Image

    from visionline.evaluate._evaluate import evaluate_predictions
    from visionline.evaluate._predict import Predictions
    from visionline.evaluate._report import render_report

    project = make_project(tmp_path / "p")
    names = project.config.model_classes()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(names), 80)
    labels[:30] = 0
    logits = rng.normal(size=(80, len(names)))
    logits[np.arange(80), labels] += 2.5
    predictions = Predictions([], logits, np.zeros((80, 2)), labels, names)
    metrics = evaluate_predictions(predictions, predictions, project, bootstrap=20).metrics
    return render_report(
        metrics=metrics,
        scores=predictions.defect_scores(),
        labels=labels,
        worst=[(Image.new("RGB", (20, 20)), HOSTILE)],
        title=f"Evaluation of {HOSTILE}",
        meta={"dataset": HOSTILE},
    )


@pytest.mark.slow
def test_a_script_in_the_report_shows_as_text_in_chromium(tmp_path, browser):
    from selenium.common.exceptions import NoAlertPresentException

    page = tmp_path / "report.html"
    page.write_text(_hostile_report(tmp_path), encoding="utf-8")
    browser.get(page.as_uri())
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018  (reading it is what raises)
    assert browser.execute_script("return document.scripts.length") == 0
    assert browser.title == f"Evaluation of {HOSTILE}"
    text = browser.find_element("tag name", "body").text
    assert f"dataset: {HOSTILE}" in text and text.count(HOSTILE) == 3
