"""The demo's summary page: every value from the run shows as text, never as markup."""

from __future__ import annotations

from html.parser import HTMLParser
from types import SimpleNamespace

from visionline.pipeline._demo_report import demo_page

HOSTILE = "<script>alert(1)</script>"


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def test_demo_page_escapes_every_value(tmp_path) -> None:
    row = {
        "delivery": HOSTILE, "supplier": "s&p", "version": 1, "n": 100, "raw_rate": 0.1,
        "estimate": 0.08, "low": 0.05, "high": 0.12, "true_rate": 0.09,
    }
    result = SimpleNamespace(
        project=SimpleNamespace(config=SimpleNamespace(name=HOSTILE)),
        dataset_version="a" * 64,
        run_id=HOSTILE,
        model_version="2",
        gates_passed=True,
        deliveries=[row],
        latency_ms={"p50": 3.21, "p95": 9.87},
        drift={"alarms": [{"image": 5, "cause": HOSTILE}], "delay_images": 3,
               "drift_start": 100, "windows": 4, "window": 50},
        eval_report=tmp_path / "eval report.html",
        retraining={"sentence": HOSTILE, "triggers": [HOSTILE]},
        timings={HOSTILE: 12.34},
    )
    parser = _Elements()
    parser.feed(demo_page(result))
    assert "script" not in parser.tags
    text = "".join(parser.text)
    assert text.count(HOSTILE) == 7 and "s&p" in text
    assert "p50 3.2 ms, p95 9.9 ms" in text and "12.3 s" in text
