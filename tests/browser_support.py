"""A headless Chromium for the tests that check what people see (reports, the dashboard)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@contextmanager
def headless_chromium(window_size: str = "1280,2400") -> Iterator[Any]:
    """A Selenium driver; skips (a failure under `.ci/run`) when Chromium is not installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not shutil.which(CHROMIUM) or not shutil.which(CHROMEDRIVER):
        pytest.skip("Chromium not installed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--window-size={window_size}",
    ):
        options.add_argument(flag)
    # Chromium keeps its singleton socket in a folder under TMPDIR that a headless quit leaves
    # behind; a private TMPDIR, removed after the quit, keeps /tmp clean.
    private_tmp = tempfile.mkdtemp(prefix="visionline-chromium-")
    service = Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": private_tmp})
    try:
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(private_tmp, ignore_errors=True)
