"""The HTML report rendered in a real headless Chromium: numbers on the page, every image decoded."""

from __future__ import annotations

import json
import shutil

import pytest

from visionline.evaluate import evaluate_model

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    if not shutil.which(CHROMIUM) or not shutil.which(CHROMEDRIVER):
        pytest.skip("Chromium not installed: apt-get install -y chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


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
