"""A light plotly widget: one copy of plotly.js per page, however many charts the notebook shows.

plotly's own ``FigureWidget`` (an anywidget) carries the whole plotly.js bundle (~5 MB) in every instance's state, so
each new chart (and each chart a widget rebuilds after a click) sends it to the browser again and stores it in the
saved notebook. :class:`PlotWidget` carries only the figure's JSON. Its front-end code (a few lines) asks the kernel
for plotly.js the first time a chart is drawn on a page, shares that one load with every other chart of the page,
and forwards clicks to Python::

    plot = PlotWidget(fig)
    plot.on_click(lambda points: print(points[0]["point"]))  # point: index, or [row, col] for a heatmap
    plot.figure = other_fig                                   # redraws in place (Plotly.react)
"""
from __future__ import annotations

from typing import Any, Callable

import anywidget
import traitlets

__all__ = ["PlotWidget"]

_ESM = r"""
function loadPlotly(model) {
  // one load per page, shared by every chart; the kernel answers a "plotly-js" request with the library
  if (!globalThis.__wbPlotly) {
    globalThis.__wbPlotly = new Promise((resolve, reject) => {
      const onMsg = (msg, buffers) => {
        if (!msg || msg.type !== "plotly-js") return;
        model.off("msg:custom", onMsg);
        try {
          const src = new TextDecoder().decode(buffers[0].buffer ? buffers[0] : new Uint8Array(buffers[0]));
          const mod = { exports: {} };
          new Function("module", "exports", "define", src)(mod, mod.exports, undefined);
          resolve(mod.exports);
        } catch (err) { globalThis.__wbPlotly = null; reject(err); }
      };
      model.on("msg:custom", onMsg);
      model.send({ type: "plotly-js" });
    });
  }
  return globalThis.__wbPlotly;
}

async function render({ model, el }) {
  el.classList.add("wb-plot");
  // a figure without a fixed width fills its box (plotly measures the box when it draws)
  if (!(((model.get("figure") || {}).layout) || {}).width) { el.style.width = "100%"; el.style.minWidth = "0"; }
  const Plotly = await loadPlotly(model);
  const draw = () => {
    const fig = model.get("figure") || {};
    const layout = Object.assign({}, fig.layout || {});
    return Plotly.react(el, fig.data || [], layout, { displaylogo: false, responsive: true });
  };
  await draw();
  el.on("plotly_click", (ev) => {
    const points = (ev.points || []).map((p) => ({
      curve: p.curveNumber, point: p.pointNumber, x: p.x, y: p.y,
      customdata: p.customdata === undefined ? null : p.customdata,
    }));
    model.send({ type: "click", points });
  });
  model.on("change:figure", draw);
  return () => { model.off("change:figure", draw); Plotly.purge(el); };
}
export default { render };
"""


def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


class PlotWidget(anywidget.AnyWidget):
    """A plotly figure in JupyterLab (see the module docstring). ``figure``: a ``go.Figure`` or its dict."""

    _esm = traitlets.Unicode(_ESM).tag(sync=True)
    figure = traitlets.Any(default_value={}).tag(sync=True)  # a dict once set (the validator converts)

    def __init__(self, figure=None, **kwargs):
        super().__init__(**kwargs)
        self._click_handlers: list[Callable[[list[dict]], Any]] = []
        self.n_library_sends = 0
        if figure is not None:
            self.figure = figure
        self.on_msg(self._on_front_end_msg)

    @traitlets.validate("figure")
    def _to_json(self, proposal):
        fig = proposal["value"]
        if hasattr(fig, "to_plotly_json"):
            import json

            import plotly.io as pio

            fig = json.loads(pio.to_json(fig, validate=False))  # numpy arrays and dates as plain JSON
        if not isinstance(fig, dict):
            raise ValueError(f"PlotWidget.figure takes a plotly Figure or its dict, got {type(fig).__name__}")
        return fig

    def on_click(self, callback: Callable[[list[dict]], Any]) -> None:
        """Call ``callback(points)`` on a click in the chart; each point is a dict with ``curve`` (trace index),
        ``point`` (index in the trace, ``[row, col]`` for a heatmap), ``x``, ``y`` and ``customdata``."""
        self._click_handlers.append(callback)

    def click(self, points: list[dict]) -> None:
        """What a click in the browser does (tests and notebooks may call it)."""
        for cb in list(self._click_handlers):
            cb(points)

    def _on_front_end_msg(self, _widget, content, _buffers) -> None:
        kind = (content or {}).get("type")
        if kind == "plotly-js":
            self.n_library_sends += 1
            self.send({"type": "plotly-js"}, buffers=[_plotly_js()])
        elif kind == "click":
            self.click(list(content.get("points") or []))
