"""Attention heads read as Sparse Distributed Memory: the effective beta of every head of one or more models against
SDM's optimal band (:class:`workbench.sdm.attention.AttentionSDMTable`), and, for a picked head, its softmax weights
on a prompt next to the SDM circle-intersection read weights from the same query-key cosines.

    view = SDMBetaView(tables)                                # {model name: AttentionSDMTable}
    view = SDMBetaView(tables, weights=lambda model, layer, head: head_weights(m, tokens, layer, head))
    view.select("gemma-3-270m", 3, 1)                         # the head shown in the comparison
    view.to_html()                                            # a static fragment for reports

Figures (plotly): beta (log scale) of each head against its layer, one colour per model, the optimal band of each
model's head dimension shaded; the picked head's softmax and SDM weights as two heatmaps.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import plotly.graph_objects as go

from workbench.report import html as H
from .view import View

__all__ = ["SDMBetaView", "beta_figure", "head_figure"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
_BETAS = ("beta_norm", "beta_max", "beta_weights")


def beta_figure(tables: dict, which: str = "beta_norm") -> go.Figure:
    """Beta of every head against its layer (heads of one layer spread a little), the band of each model shaded."""
    fig = go.Figure()
    for i, (name, table) in enumerate(tables.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        heads = [h for h in table.heads if getattr(h, which) is not None]
        n_heads = max((h.head for h in heads), default=0) + 1
        x = [h.layer + (h.head + 0.5) / n_heads * 0.6 - 0.3 for h in heads]
        y = [getattr(h, which) for h in heads]
        inside = table.in_band(which) if heads else np.array([])
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", name=f"{name} ({100 * float(np.mean(inside)) if len(inside) else 0:.0f}% "
                                           f"in band)",
            marker=dict(color=colour, size=7, line=dict(width=1, color="white")),
            customdata=[[name, h.layer, h.head, h.role, h.fit_r, h.shuffled_r] for h in heads],
            hovertemplate="%{customdata[0]} L%{customdata[1]} H%{customdata[2]}<br>beta %{y:.3g}<br>"
                          "%{customdata[3]}<br>fit r %{customdata[4]:.2f} (shuffled %{customdata[5]:.2f})"
                          "<extra></extra>"))
        lo, hi = table.band
        fig.add_hrect(y0=lo, y1=hi, fillcolor=colour, opacity=0.12, line_width=0,
                      annotation_text=f"{name} band (d_head {table.d_head})", annotation_font_size=9)
    fig.update_layout(title=dict(text=f"{which} per head against SDM's optimal band", font=dict(size=13)),
                      xaxis=dict(title="layer"), yaxis=dict(type="log", title=which), height=380,
                      margin=dict(l=60, r=10, t=36, b=44), legend=dict(font=dict(size=10)))
    return fig


def head_figure(arrays: dict, title: str) -> go.Figure:
    """Softmax weights and SDM read weights of one head (query x key) side by side."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("softmax attention", f"SDM read (radius {int(arrays['radius'])})"),
                        horizontal_spacing=0.08)
    for col, key in ((1, "softmax"), (2, "sdm")):
        w = np.asarray(arrays[key], dtype=np.float64)
        fig.add_trace(go.Heatmap(z=w, colorscale="Blues", showscale=False,
                                 hovertemplate="query %{y} key %{x}<br>%{z:.3f}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(autorange="reversed", title="query" if col == 1 else None, row=1, col=col)
        fig.update_xaxes(title="key", row=1, col=col)
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=340, margin=dict(l=50, r=10, t=60, b=40))
    return fig


class SDMBetaView(View):
    """Beta of every head against the band; with ``weights`` (a function (model, layer, head) -> the dict of
    :func:`workbench.sdm.attention.head_weights`), a head picker and its softmax vs SDM weights."""

    def __init__(self, tables: dict, which: str = "beta_norm",
                 weights: Callable[[str, int, int], dict] | None = None, selected: tuple[str, int, int] | None = None):
        if not tables or not all(t.heads for t in tables.values()):
            raise ValueError("SDMBetaView needs {model: AttentionSDMTable} with heads: run "
                             "workbench.sdm.attention.attention_sdm for each model first")
        self.tables = dict(tables)
        self.which = self._check(which)
        self.weights = weights
        first = next(iter(self.tables))
        self.selected = selected or (first, 0, 0)
        self._arrays: dict | None = None

    def _check(self, which: str) -> str:
        if which not in _BETAS:
            raise ValueError(f"which={which!r}: choose one of {', '.join(_BETAS)}")
        if which == "beta_weights" and any(t.heads[0].beta_weights is None for t in self.tables.values()):
            raise ValueError("beta_weights exists only for QK-norm models (Gemma 3): drop the others or pick "
                             "beta_norm / beta_max")
        return which

    def set_beta(self, which: str) -> "SDMBetaView":
        self.which = self._check(which)
        if self._widget is not None:
            self._refresh()
        return self

    def select(self, model: str, layer: int, head: int) -> "SDMBetaView":
        if model not in self.tables:
            raise ValueError(f"unknown model {model!r}: the view shows {', '.join(self.tables)}")
        if not any(h.layer == layer and h.head == head for h in self.tables[model].heads):
            raise ValueError(f"{model} has no head L{layer} H{head}")
        self.selected, self._arrays = (model, int(layer), int(head)), None
        if self._widget is not None:
            self._refresh()
        return self

    def head(self):
        model, layer, head = self.selected
        return next(h for h in self.tables[model].heads if h.layer == layer and h.head == head)

    def arrays(self) -> dict | None:
        if self.weights is None:
            return None
        if self._arrays is None:
            self._arrays = self.weights(*self.selected)
        return self._arrays

    def summary_html(self) -> str:
        rows = []
        for name, t in self.tables.items():
            s = t.summary()
            rows.append([name, t.d_head, f"[{t.band[0]:.2f}, {t.band[1]:.2f}]", f"{100 * s['in_band_norm']:.0f}%",
                         f"{100 * s['in_band_max']:.0f}%", f"{s['beta_norm_median']:.3g}",
                         f"{s['fit_r_mean']:.2f} / {s['shuffled_r_mean']:.2f}"])
        return H.table(["model", "d_head", "band", "in band (norm)", "in band (max input)", "median beta_norm",
                        "fit r / shuffled"], rows)

    def _head_title(self) -> str:
        h = self.head()
        return (f"{self.selected[0]} L{h.layer} H{h.head}: beta {getattr(h, self.which) or float('nan'):.3g}, "
                f"{h.role}, fit r {h.fit_r:.2f} (shuffled {h.shuffled_r:.2f})")

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        figs = [beta_figure(self.tables, self.which)]
        arrays = self.arrays()
        if arrays is not None:
            figs.append(head_figure(arrays, self._head_title()))
        return "<h3>Attention as SDM</h3>" + self.summary_html() + "".join(self.figures_html(figs, include_plotlyjs))

    def plain_text(self) -> str:
        parts = [f"{n} {100 * t.in_band_fraction(self.which):.0f}% in band" for n, t in self.tables.items()]
        return f"SDMBetaView ({self.which}): " + ", ".join(parts)

    # ----- widget -----

    def _on_click(self, points: list[dict]) -> None:
        if points and points[0].get("customdata"):
            model, layer, head = points[0]["customdata"][:3]
            self.select(model, int(layer), int(head))

    def _refresh(self) -> None:
        import ipywidgets as W

        self._summary.value = f"<style>{H.STYLE}</style>{self.summary_html()}"
        kids = [self.figure_output(beta_figure(self.tables, self.which), on_click=self._on_click)]
        arrays = self.arrays()
        if arrays is not None:
            kids.append(self.figure_output(head_figure(arrays, self._head_title())))
        else:
            kids.append(W.HTML(f"<i>{H.escape(self._head_title())}</i> (pass weights= to see its weights)"))
        self._plots.children = kids

    def _build_widget(self):
        import ipywidgets as W

        self._summary = W.HTML()
        self._plots = W.VBox()
        choose = W.Dropdown(options=[b for b in _BETAS if b != "beta_weights" or all(
            t.heads[0].beta_weights is not None for t in self.tables.values())], value=self.which, description="beta")
        choose.observe(lambda ch: self.set_beta(ch["new"]), names="value")
        self._refresh()
        return W.VBox([choose, self._summary, self._plots])
