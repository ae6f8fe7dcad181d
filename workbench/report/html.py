"""Static-HTML pieces shared by the widgets and the report: highlighted tokens, tables, plotly fragments, a page.

Everything returns strings; nothing here needs a kernel, so the same markup renders in JupyterLab (inside an
``ipywidgets.HTML``) and in a saved, self-contained HTML file.
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

__all__ = ["escape", "figure_html", "page", "plotly_js_tag", "table", "token_spans"]

HIGHLIGHT = (255, 140, 0)  # the colour of an activation, its alpha the activation / max

STYLE = """
.wb-card{font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ddd;border-radius:6px;padding:8px;margin:8px 0}
.wb-card h3{margin:2px 0 6px 0;font-size:15px}
.wb-ex{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.7;margin:2px 0;padding:2px 4px;border-bottom:1px solid #f0f0f0}
.wb-tok{border-radius:2px}
.wb-max{outline:2px solid #c33;font-weight:bold}
.wb-table{border-collapse:collapse;font-size:12px;margin:4px 0}
.wb-table td,.wb-table th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.wb-muted{color:#777}
.wb-row{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}
.wb-fig{flex:0 0 auto;max-width:100%;overflow:hidden}
.wb-side{flex:1 1 240px;min-width:0;overflow-x:auto}
"""


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _show(token: str) -> str:
    """A token as visible text: newlines as ⏎, empty (blanked other-document) tokens as nothing."""
    return escape(token.replace("\n", "⏎"))


def token_spans(tokens: Sequence[str], acts: Sequence[float], max_activation: float, emphasis: int | None = None
                ) -> str:
    """Tokens as ``<span>``s whose background intensity is activation / ``max_activation``; ``emphasis`` (the
    example's token) is outlined and bold; each span's tooltip gives its activation."""
    scale = max(float(max_activation), 1e-12)
    r, g, b = HIGHLIGHT
    parts = []
    for j, (tok, a) in enumerate(zip(tokens, acts)):
        alpha = min(max(float(a) / scale, 0.0), 1.0)
        cls = "wb-tok wb-max" if j == emphasis else "wb-tok"
        style = f' style="background:rgba({r},{g},{b},{alpha:.2f})"' if alpha > 0 else ""
        parts.append(f'<span class="{cls}"{style} title="{float(a):.3f}">{_show(tok)}</span>')
    return "".join(parts)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (floats get 4 significant digits)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = f"{v:.4g}"
        return str(v) if raw else escape(v)

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="wb-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def figure_html(fig, include_plotlyjs: bool | str = "cdn") -> str:
    """A plotly figure as an HTML fragment (``include_plotlyjs``: True inlines the library, "cdn" links it, False
    assumes the page already loaded it)."""
    return fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, config={"displaylogo": False})


def plotly_js_tag() -> str:
    """The plotly library inlined in one ``<script>`` (for a page whose figures use ``include_plotlyjs=False``)."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def page(title: str, body: str, *, inline_plotly: bool = True) -> str:
    """A complete HTML document around ``body``, with the shared style and (by default) plotly inlined once."""
    js = plotly_js_tag() if inline_plotly else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style>{js}</head><body>{body}</body></html>\n")
