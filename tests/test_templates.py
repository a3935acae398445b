"""Pages are rendered from packaged Jinja2 templates with autoescaping and strict variables."""

from __future__ import annotations

import jinja2
import pytest

from visionline import _templates


def test_values_are_escaped_and_chart_markup_is_kept() -> None:
    from visionline.monitor._charts import line_chart

    chart = line_chart({"s": [(0, 1.0), (1, 2.0)]}, "t")
    page = _templates.render(
        "demo.html.j2",
        model="<b>m</b>", model_version="1", run_id="r", dataset_version="d", gates_passed=True,
        p50="1.0", p95="2.0", drift="x", retraining="y", triggers=[], plot="", deliveries=[],
        eval_report=None, eval_report_uri=None, timings=[("a\"b", "1.0")],
    )
    assert "&lt;b&gt;m&lt;/b&gt;" in page and "<b>m</b>" not in page
    assert "a&#34;b" in page
    assert str(chart).startswith('<svg class="chart line"')


def test_a_missing_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError, match="model"):
        _templates.render("demo.html.j2")
