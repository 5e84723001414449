"""A document (invoice or credit note) as a standalone HTML page (Jinja2, autoescaped)."""

from __future__ import annotations

from functools import cache

import jinja2

from services.documents.model import Document


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("services.documents", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )


def render_html(doc: Document) -> str:
    """The page a customer can be sent (or print): everything inline, no external files."""
    return _environment().get_template("document.html").render(doc=doc)
