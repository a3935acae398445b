import io
import re
import socket
import threading
import time

import numpy as np
import pytest
from browser_support import headless_chromium
from fastapi.testclient import TestClient
from PIL import Image

from tests.monitor.conftest import make_predictions, toy_reference
from visionline.data import BlobStore
from visionline.monitor import (
    DriftConfig,
    MonitorDB,
    PredictionLogger,
    check_drift,
    validated_rates,
)
from visionline.monitor._dashboard import create_app


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (i % 255, 80, 40)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def populated(tmp_path):
    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    store = BlobStore(tmp_path / "store")
    items = make_predictions(400, seed=2)
    for i, item in enumerate(items):
        item.image = _png(i)
    with PredictionLogger(db, store, sample_rate=0.0) as logger:
        logger.log(items)
    reference = toy_reference()
    check_drift(db, reference, DriftConfig(size=100))
    return db, store, reference


def test_json_endpoints_match_the_database(populated):
    db, store, reference = populated
    client = TestClient(create_app(db, store, reference, validated_rates(reference)))
    frame = db.frame()
    summary = client.get("/api/summary").json()
    assert summary["predictions"] == len(frame) == 400
    assert summary["flagged"] == int(frame["flagged"].sum())
    deliveries = client.get("/api/deliveries").json()
    assert {d["delivery_id"]: d["n"] for d in deliveries} == frame.groupby(
        "delivery_id"
    ).size().to_dict()
    drift = client.get("/api/drift").json()
    assert set(drift["status"]) == {"score_ks", "class_chi2", "embedding_mmd", "quality_ks"}
    assert all(len(s) == 4 for s in drift["series"].values())
    conf = client.get("/api/confidence").json()
    assert set(conf["series"]) == {"production", "reference"}
    assert sum(conf["series"]["production"]) == pytest.approx(1.0)
    flagged = client.get("/api/flagged?n=5").json()
    assert len(flagged) == 5
    image = client.get(f"/images/{flagged[0]['image_sha256']}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert client.get("/images/" + "0" * 64).status_code == 404
    assert client.get("/api/deliveries?by=colour").status_code == 400
    metrics = client.get("/metrics").text
    assert re.search(r'visionline_logged_predictions\{model="apples",version="1"\} 400', metrics)
    assert 'visionline_drift_p_value{detector="score_ks"' in metrics


def test_page_numbers_and_charts(populated):
    db, store, reference = populated
    html = TestClient(create_app(db, store, reference, validated_rates(reference))).get("/").text
    frame = db.frame()
    assert f"<b id='total-predictions'>{len(frame)}</b>" in html
    assert f"<b id='total-flagged'>{int(frame['flagged'].sum())}</b>" in html
    assert html.count("<svg") >= 4 and "http://" not in html.replace("http-equiv", "")
    assert html.count("<img src='/images/") == 12


@pytest.mark.slow
def test_dashboard_in_headless_chromium(populated, tmp_path):
    import uvicorn
    from selenium.webdriver.common.by import By

    db, store, reference = populated
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(db, store, reference, validated_rates(reference)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with headless_chromium() as driver:
            driver.get(f"http://127.0.0.1:{port}/")
            frame = db.frame()
            assert driver.find_element(By.ID, "total-predictions").text == str(len(frame))
            charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
            assert len(charts) >= 4
            points = driver.find_elements(By.CSS_SELECTOR, "svg.line circle.point")
            assert len(points) == 4 * 4  # 4 detectors × 4 windows
            windows = db.windows_frame()
            shown = sorted(round(float(p.get_attribute("data-y")), 3) for p in points)
            expected = sorted(round(-np.log10(max(p, 1e-12)), 3) for p in windows["adjusted_p"])
            assert shown == pytest.approx(expected, abs=1e-3)
            for row in driver.find_elements(By.CSS_SELECTOR, "#delivery-table tr[data-delivery]"):
                name = row.get_attribute("data-delivery")
                n = int(row.find_element(By.CLASS_NAME, "n").text)
                assert n == int((frame["delivery_id"] == name).sum())
            images = driver.find_elements(By.CSS_SELECTOR, "#flagged img")
            assert images and all(
                driver.execute_script("return arguments[0].naturalWidth", i) == 16 for i in images
            )
            driver.save_screenshot(str(tmp_path / "dashboard.png"))
            assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    finally:
        server.should_exit = True
        thread.join(10)


HOSTILE = "<script>alert(1)</script>"


def test_charts_escape_names_and_titles():
    from visionline.monitor._charts import histogram_chart, interval_chart, line_chart

    charts = [
        line_chart({HOSTILE: [(0, 1.0), (1, 2.0)]}, HOSTILE, hline=1.5, y_label=HOSTILE),
        interval_chart([HOSTILE], [0.1], [0.05], [0.2], HOSTILE),
        histogram_chart([0.0, 0.5, 1.0], {HOSTILE: [0.4, 0.6]}, HOSTILE),
        line_chart({}, HOSTILE),
    ]
    for chart in charts:
        assert "<script" not in chart and "&lt;script&gt;alert(1)&lt;/script&gt;" in chart


@pytest.mark.slow
def test_a_script_in_a_delivery_id_shows_as_text_in_chromium(tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    db = MonitorDB(f"sqlite:///{tmp_path}/log.db")
    items = make_predictions(60, seed=4)
    for item in items[:20]:
        item.delivery_id = HOSTILE
    with PredictionLogger(db, None, sample_rate=0.0) as logger:
        logger.log(items)
    html = TestClient(create_app(db)).get("/").text
    page = tmp_path / "dashboard.html"
    page.write_text(html, encoding="utf-8")
    with headless_chromium() as driver:
        driver.get(page.as_uri())
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018  (reading it is what raises)
        assert driver.execute_script("return document.scripts.length") == 0
        cells = driver.find_elements(By.CSS_SELECTOR, "#delivery-table td:first-child")
        shown = [cell for cell in cells if cell.text == HOSTILE]
        assert len(shown) == 1 and shown[0].is_displayed()
        assert HOSTILE in driver.find_element(By.TAG_NAME, "body").text
