"""The one contract every notebook view of ``widgets`` follows: :class:`View`.

A view is a plain Python object holding some state (a selected feature, a query, a coefficient) with methods that
change it; the base class adds the ways to show it:

- ``widget``: the ipywidgets view, built once on first use (by the subclass's ``_build_widget``) and kept;
- ``to_html(include_plotlyjs="cdn")``: a static fragment, the subclass's ``body_html`` framed in one ``<div>``;
- ``_repr_mimebundle_``: what a notebook cell shows: the live widget, and beside it a static fallback
  (``text/html``: the view's ``to_html()`` with the shared style, self-contained: no CDN, plotly.js inlined by the
  first fallback of the kernel session that draws a chart; ``text/plain``: one line) for pages that cannot run
  widgets (a notebook on GitHub or nbviewer, an exported HTML file);
- ``figure_output(fig, on_click)``: a chart as a :class:`widgets.plot.PlotWidget`.

    class MyView(View):
        frame = "wb-card"
        def body_html(self, include_plotlyjs="cdn"): return H.figure_html(self.figure(), include_plotlyjs)
        def _build_widget(self): return W.VBox([self.figure_output(self.figure(), on_click=self._on_click)])
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

__all__ = ["View", "figure_output", "reset_static_plotly"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

_session = {"plotly_inlined": False}  # has a static fallback of this kernel already carried plotly.js?


def figure_output(fig):
    """A widget showing ``fig``: a :class:`widgets.plot.PlotWidget` (one plotly.js per page, clicks reach Python
    through its ``on_click``)."""
    from .plot import PlotWidget

    return PlotWidget(fig)


def reset_static_plotly() -> None:
    """Make the next static fallback inline plotly.js again (e.g. after clearing the output that carried it)."""
    _session["plotly_inlined"] = False


class View:
    """The base of every widget class (module docstring). Subclasses define ``_build_widget`` (the ipywidgets
    root, called once) and either ``body_html`` (framed by ``to_html`` in a ``<div class=frame>``) or their own
    ``to_html``."""

    frame: str | None = "wb-card"  # CSS class of the <div> that to_html wraps body_html in (None: no wrapper)
    _widget = None  # the built ipywidgets view (a class default, so subclasses need not call View.__init__)

    # ----- the live view -----

    @property
    def widget(self):
        """The ipywidgets view (built on first use, then the same object)."""
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def _build_widget(self):
        raise NotImplementedError(f"{type(self).__name__} defines no widget: implement _build_widget()")

    def figure_output(self, fig, on_click: Callable[[list[dict]], Any] | None = None):
        """``fig`` as a chart widget; ``on_click(points)`` is called on a click in it (see PlotWidget.on_click)."""
        plot = figure_output(fig)
        if on_click is not None:
            plot.on_click(on_click)
        return plot

    # ----- static HTML -----

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        raise NotImplementedError(f"{type(self).__name__} defines no HTML: implement body_html() or to_html()")

    def after_html(self, include_plotlyjs: bool | str = False) -> str:
        """What follows the frame (e.g. the selected feature's card); "" by default."""
        return ""

    def to_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        """A static fragment of the current state. ``include_plotlyjs`` as in
        :func:`workbench.report.html.figure_html`: "cdn" links plotly.js, True inlines it, False assumes the page
        has it (the first chart of the fragment takes it, the others never repeat it)."""
        body = self.body_html(include_plotlyjs)
        framed = f'<div class="{self.frame}">{body}</div>' if self.frame else body
        rest = self.after_html(False if "Plotly.newPlot" in body else include_plotlyjs)
        return framed + rest

    @staticmethod
    def figures_html(figures: Iterable, include_plotlyjs: bool | str = "cdn") -> list[str]:
        """Each figure as HTML; only the first one carries ``include_plotlyjs``."""
        from workbench.report import html as H

        return [H.figure_html(fig, include_plotlyjs if k == 0 else False) for k, fig in enumerate(figures)]

    def static_html(self, *, inline_plotly: bool | None = None) -> str:
        """The self-contained fallback of ``_repr_mimebundle_``: the shared style, ``to_html(False)``, and plotly.js
        inlined when the fragment draws a chart and no earlier fallback of this kernel session carried it
        (``inline_plotly``: force it on or off). Never links a CDN."""
        from workbench.report import html as H

        try:
            body = self.to_html(include_plotlyjs=False)
        except Exception as err:  # a display must not fail because a state has no static rendering
            body = f'<div class="wb-muted">no static view: {H.escape(f"{type(err).__name__}: {err}")}</div>'
        charts = "Plotly.newPlot" in body
        if inline_plotly is None:
            inline_plotly = charts and not _session["plotly_inlined"]
        js = ""
        if inline_plotly and charts:
            js = H.plotly_js_tag()
            _session["plotly_inlined"] = True
        return f'<div class="wb-static"><style>{H.STYLE}</style>{js}{body}</div>'

    def plain_text(self) -> str:
        """The ``text/plain`` line: the class and what it shows."""
        from .registry import find

        spec = find(type(self).__name__)
        return f"{type(self).__name__}: {spec.description}" if spec is not None else type(self).__name__

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        def wanted(mime: str) -> bool:
            return (not include or mime in include) and not (exclude and mime in exclude)

        data = {}
        if wanted(WIDGET_MIME):
            live = self.widget._repr_mimebundle_(include=include, exclude=exclude, **kwargs) or {}
            data.update({k: v for k, v in live.items() if k == WIDGET_MIME})
        if wanted("text/plain"):
            data["text/plain"] = self.plain_text()
        if wanted("text/html"):
            data["text/html"] = self.static_html()
        return data
