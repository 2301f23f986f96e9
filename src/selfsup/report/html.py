"""Small HTML pieces the report's sections share."""
from __future__ import annotations

from html import escape


def table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """A ``<table>``: ``header`` is escaped here, the cells of ``rows`` are HTML already."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
