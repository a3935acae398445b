"""HTML pages rendered from Jinja2 templates shipped in the package, with autoescaping on, so a
delivery id, class name or file name shows as text and never as markup or script."""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["render"]


@cache
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("visionline", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """`templates/<template>` rendered with `context`; every value is escaped unless it is markup
    that another template rendered."""
    return _environment().get_template(template).render(**context)
