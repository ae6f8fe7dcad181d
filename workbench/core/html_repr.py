"""The compact, offline HTML that result objects show when a notebook cell ends with them (``_repr_html_``): a
title line, one small table and an optional note. No scripts, no external styles, so it renders the same in
JupyterLab, on GitHub and in nbviewer."""
from __future__ import annotations

from html import escape
from typing import Any, Iterable, Sequence

__all__ = ["repr_table"]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape("-" if v is None else str(v))


def repr_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]], note: str | None = None,
               *, max_rows: int = 20) -> str:
    """``title`` in bold over a table of ``rows`` (at most ``max_rows``, the rest counted) and ``note`` below."""
    rows = list(rows)
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{_cell(v)}</td>" for v in r) + "</tr>"
                   for r in rows[:max_rows])
    more = f"<p><i>... {len(rows) - max_rows} more rows</i></p>" if len(rows) > max_rows else ""
    tail = f"<p style='margin:2px 0'>{escape(note)}</p>" if note else ""
    return (f"<div><b>{escape(title)}</b><table style='border-collapse:collapse'><tr>{head}</tr>{body}</table>"
            f"{more}{tail}</div>")
