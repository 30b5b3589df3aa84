"""Self-contained HTML for auditors and the admin dashboard: inline CSS, no script, no external resource.

Every value is escaped here, in one place; callers pass plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
header{background:#1d2329;color:#fff;padding:14px 24px}header h1{margin:0;font-size:18px}
header p{margin:4px 0 0;color:#b8c0c8;font-size:12px}nav{padding:8px 24px;background:#2b333b}
nav a{color:#dfe6ec;margin-right:18px;text-decoration:none}nav a.on{color:#fff;font-weight:600}
main{padding:18px 24px;max-width:1280px}h2{font-size:16px;margin:26px 0 8px}
.kpis{display:flex;flex-wrap:wrap;gap:12px}.kpi{background:#fff;border:1px solid #d9dee3;border-radius:6px;
padding:10px 14px;min-width:150px}.kpi b{display:block;font-size:24px}.kpi span{color:#5b6670;font-size:12px}
.kpi i{font-style:normal;font-size:12px;color:#5b6670}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d9dee3;margin:6px 0}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceff2;vertical-align:top}
th{background:#eef1f4;font-weight:600;font-size:12px}td code{font-size:12px}
.ok{color:#176f2c;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#8a5a00;font-weight:600}
.muted{color:#5b6670}.bar{background:#e3e7eb;border-radius:3px;height:8px;width:120px;display:inline-block}
.bar i{display:block;height:8px;border-radius:3px;background:#2f7d46}
"""


def page(title: str, body: str, *, subtitle: str = "", nav: Sequence[tuple[str, str]] = (),
         current: str = "") -> bytes:
    links = "".join(f'<a href="{escape(href)}"{" class=on" if href == current else ""}>{escape(text)}</a>'
                    for href, text in nav)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
            f"{f'<nav>{links}</nav>' if links else ''}<main>{body}</main></body></html>").encode()


def cell(value: Any) -> str:
    """A table cell's content: escaped text; None as a dash."""
    if value is None or value == "":
        return '<span class="muted">-</span>'
    if isinstance(value, Raw):
        return value.html
    return escape(str(value))


class Raw:
    """HTML that is already safe (built from escaped parts)."""

    __slots__ = ("html",)

    def __init__(self, html: str) -> None:
        self.html = html


def span(text: Any, klass: str) -> Raw:
    return Raw(f'<span class="{klass}">{escape(str(text))}</span>')


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, test_id: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    attr = f' data-test="{escape(test_id)}"' if test_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kpi(name: str, value: Any, label: str, note: str = "") -> str:
    extra = f"<i>{escape(note)}</i>" if note else ""
    return (f'<div class="kpi" data-kpi="{escape(name)}"><b>{escape(str(value))}</b>'
            f"<span>{escape(label)}</span>{extra}</div>")


def bar(pct: float) -> Raw:
    width = max(0.0, min(100.0, pct))
    return Raw(f'<span class="bar"><i style="width:{width:.0f}%"></i></span> {pct:.1f}%')
