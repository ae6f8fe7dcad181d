"""Model diffing with a crosscoder (:mod:`workbench.diffing`): which latents belong to one model, which to both.

Two charts: the histogram of the relative decoder norm ``r = ||d_B|| / (||d_A|| + ||d_B||)`` (0: only model A, 1:
only model B), and the Latent Scaling scatter (``r`` against the other-model / own-model ratio of explained error:
a truly model-specific latent sits low, an L1 artefact high). Clicking a point selects its latent: both models'
feature cards side by side (top examples in each model's tokens, logit effects through each model's unembedding)
and the steering check (the latent's decoder direction added in its own model, generations with and without).
Every control is a method::

    ex = DiffExplorer(crosscoder, results_a, results_b, scaling, models=(gemma, smol))
    ex.select(12); ex.steer(); ex.to_html()
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.diffing.analyses import latent_kinds, norm_histogram, relative_norms, steering_check
from workbench.report import html as H

from .feature_card import FeatureCard
from .view import View

__all__ = ["DiffExplorer", "norm_histogram_figure", "scaling_figure"]

KIND_COLOURS = {"a_only": "#4c78a8", "b_only": "#f58518", "shared": "#54a24b", "mixed": "#bab0ac"}


def norm_histogram_figure(r, names: Sequence[str] = ("A", "B"), bins: int = 40, height: int = 260) -> go.Figure:
    """Bars of the relative decoder norm over [0, 1]."""
    hist = norm_histogram(r, bins)
    edges = hist["edges"]
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=hist["counts"], width=1 / bins, marker_color="#4c78a8",
                           hovertemplate="r %{x:.2f}: %{y} latents<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=30), bargap=0.05,
                      title=dict(text=f"relative decoder norm (0: only {names[0]}, 1: only {names[1]})",
                                 font=dict(size=13)), xaxis=dict(range=[0, 1]), yaxis=dict(title="latents"))
    return fig


def scaling_figure(r, ratio, kinds, names: Sequence[str] = ("A", "B"), height: int = 300) -> go.Figure:
    """One point per latent: relative norm vs the Latent Scaling ratio; ``customdata`` is the latent index."""
    r = np.asarray(r, dtype=float)
    ratio = np.asarray(ratio, dtype=float)
    kinds = np.asarray(kinds)
    scatter = go.Scattergl if r.size > 5000 else go.Scatter  # SVG points while few: clicks land on them anywhere
    traces = []
    for kind, colour in KIND_COLOURS.items():
        idx = np.nonzero((kinds == kind) & np.isfinite(ratio) & np.isfinite(r))[0]
        if idx.size:
            traces.append(scatter(x=r[idx], y=ratio[idx], mode="markers", name=kind, customdata=idx,
                                       marker=dict(size=5, color=colour),
                                       hovertemplate="latent %{customdata}: r %{x:.2f}, ratio %{y:.2f}<extra></extra>"))
    fig = go.Figure(traces)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=30),
                      title=dict(text="Latent Scaling: other-model / own-model explained error (low = specific)",
                                 font=dict(size=13)),
                      xaxis=dict(title=f"relative norm ({names[0]} → {names[1]})", range=[0, 1]),
                      yaxis=dict(title="ratio"))
    return fig


class DiffExplorer(View):
    """State (the selected latent, its steering check) plus an ipywidgets view of a trained crosscoder.

    ``results_a`` / ``results_b``: the per-side feature passes (:func:`workbench.diffing.analyses.side_features`);
    ``scaling``: a :class:`~workbench.diffing.latent_scaling.LatentScaling` (optional: without it the scatter uses
    the relative norm only); ``models`` / ``hooks``: both models and their hooks, for the steering check."""

    frame = "wb-diff"

    def __init__(self, crosscoder, results_a=None, results_b=None, scaling=None, *, models: Sequence[Any] = (),
                 hooks: Sequence[str] = (), names: Sequence[str] = ("A", "B"),
                 prompts: Sequence[str] = ("The", "I think that"), coefficient: float = 4.0):
        self.cc = crosscoder
        self.results = {"a": results_a, "b": results_b}
        self.scaling = scaling
        self.models, self.hooks = tuple(models), tuple(hooks)
        self.names = tuple(names)
        self.prompts = list(prompts)
        self.coefficient = float(coefficient)
        self.r = relative_norms(crosscoder)
        self.kinds = latent_kinds(crosscoder, self.r)
        self.ratio = np.full(self.r.numel(), np.nan)
        if scaling is not None:
            self.ratio[scaling.latents.numpy()] = scaling.explained_ratio.numpy()
        self.selected: int | None = None
        self.steering: dict[int, list[dict]] = {}
        self._ui = None

    # ----- state -----

    def own_side(self, latent: int) -> str:
        """"a" or "b": the model whose decoder norm is larger."""
        return "b" if float(self.r[int(latent)]) > 0.5 else "a"

    def select(self, latent: int) -> int:
        latent = int(latent)
        if not 0 <= latent < self.cc.cfg.d_sae:
            raise ValueError(f"latent {latent} out of range [0, {self.cc.cfg.d_sae})")
        self.selected = latent
        self._refresh()
        return latent

    def steer(self, latent: int | None = None) -> list[dict]:
        """Run (once) the steering check of ``latent`` (default: the selected one) in its own model: its decoder
        row there times ``coefficient`` x its max activation."""
        latent = self.selected if latent is None else int(latent)
        if latent is None:
            raise ValueError("no latent selected: call select(latent) first")
        if len(self.models) != 2 or len(self.hooks) != 2:
            raise ValueError("the steering check needs models=(model_a, model_b) and hooks=(hook_a, hook_b)")
        if latent not in self.steering:
            side = self.own_side(latent)
            m = 0 if side == "a" else 1
            d_a = self.cc.cfg.d_models[0]
            row = self.cc.W_dec.detach()[latent]
            direction = row[:d_a] if side == "a" else row[d_a:]
            res = self.results.get(side)
            peak = float(res.arrays["max"][latent]) if res is not None else 1.0
            self.steering[latent] = steering_check(self.models[m], self.hooks[m], direction, self.prompts,
                                                   coefficient=self.coefficient * max(peak, 1e-6))
        self._refresh()
        return self.steering[latent]

    # ----- pieces -----

    def figures(self) -> tuple[go.Figure, go.Figure]:
        return (norm_histogram_figure(self.r, self.names),
                scaling_figure(self.r.numpy(), self.ratio if self.scaling is not None else np.zeros(self.r.numel()),
                               self.kinds, self.names))

    def header_html(self) -> str:
        if self.selected is None:
            return '<div class="wb-muted">click a point of the scatter, or call select(latent)</div>'
        j = self.selected
        ratio = self.ratio[j]
        return (f"<h4>latent {j} · {H.escape(str(self.kinds[j]))} · r = {float(self.r[j]):.2f}"
                + (f" · scaling ratio {ratio:.2f}" if np.isfinite(ratio) else "") + "</h4>")

    def cards(self) -> list[FeatureCard | None]:
        if self.selected is None:
            return [None, None]
        return [FeatureCard.from_results(self.results[s], self.selected, n_examples=5)
                if self.results.get(s) is not None else None for s in "ab"]

    def cards_html(self, include_plotlyjs: bool | str = False) -> str:
        cols = []
        for name, card in zip(self.names, self.cards()):
            body = card.to_html(include_plotlyjs) if card is not None else '<div class="wb-muted">no results</div>'
            cols.append(f'<div style="flex:1;min-width:300px"><h4>{H.escape(name)}</h4>{body}</div>')
        return f'<div style="display:flex;gap:10px;align-items:flex-start">{"".join(cols)}</div>'

    def steering_html(self) -> str:
        rows = self.steering.get(self.selected) if self.selected is not None else None
        if not rows:
            return '<div class="wb-muted">steering check not run: call steer()</div>'
        side = self.names[0 if self.own_side(self.selected) == "a" else 1]
        return (f"<div><b>steering in {H.escape(side)}</b></div>"
                + H.table(["prompt", "plain", "steered"], [[r["prompt"], r["plain"], r["steered"]] for r in rows]))

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        return ("".join(self.figures_html(self.figures(), include_plotlyjs))
                + f"{self.header_html()}{self.cards_html()}{self.steering_html()}")

    def plain_text(self) -> str:
        kinds = {k: int((self.kinds == k).sum()) for k in KIND_COLOURS}
        sel = f", latent {self.selected} selected" if self.selected is not None else ""
        return (f"DiffExplorer: {self.r.numel()} latents of {' vs '.join(self.names)} ("
                + ", ".join(f"{n} {k}" for k, n in kinds.items() if n) + f"){sel}")

    # ----- the live view -----

    def _build_widget(self):
        """Histogram and scatter (a click selects a latent), the two cards, and a steering button."""
        import ipywidgets as W

        hist, scatter = self.figures()
        # fixed widths, side by side or wrapped: a chart sized by the row is measured before the row settles
        hist.update_layout(width=440)
        scatter.update_layout(width=560)
        plot = self.figure_output(scatter, on_click=self._on_click)
        button = W.Button(description="steering check")
        button.on_click(lambda _: self.steer())
        ui = {"header": W.HTML(), "cards": W.HBox(layout=W.Layout(flex_flow="row wrap")), "steer": W.HTML()}
        self._ui = ui
        charts = W.HBox([self.figure_output(hist), plot], layout=W.Layout(flex_flow="row wrap"))
        box = W.VBox([W.HTML(f"<style>{H.STYLE}</style>"), charts, ui["header"], ui["cards"], button, ui["steer"]])
        self._refresh()
        return box

    def _on_click(self, points: list[dict]) -> None:
        for p in points:
            data = p.get("customdata")
            if data is not None:
                self.select(int(data[0] if isinstance(data, list) else data))
                return

    def _refresh(self) -> None:
        if self._ui is None:
            return
        ui = self._ui
        ui["header"].value = self.header_html()
        ui["cards"].children = [c.widget for c in self.cards() if c is not None]
        ui["steer"].value = self.steering_html()
