"""The feature map: a plotly scatter of a joint UMAP of decoder directions (:mod:`workbench.analysis.neighborhoods`).

Colour by SAE size, by cluster or by firing density; hover shows each feature's explanation; clicking a point
opens its :class:`FeatureCard`; a search highlights the features whose explanation matches; ``zoom_to`` frames a
feature and its nearest neighbours. Every control is a method, so notebooks and tests drive it without clicks::

    m = NeighborhoodMap(layout, results, explanations)      # dicts keyed by SAE name
    m.search("Paris"); m.zoom_to("topk-1024-k16", 12); card = m.select("topk-1024-k16", 12)
    m.to_html()
"""
from __future__ import annotations

import textwrap
from typing import Any, Mapping

import numpy as np
import plotly.graph_objects as go

from workbench.analysis.explain import explanation_text
from workbench.analysis.neighborhoods import FeatureLayout, Neighbor, member_terms
from workbench.analysis.search import search_explanations

from workbench.report import html as H
from .feature_card import FeatureCard
from .view import View

__all__ = ["COLOUR_KEYS", "NeighborhoodMap"]

COLOUR_KEYS = ("sae", "cluster", "density")
SAE_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#eeca3b", "#9d755d"]
CLUSTER_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                   "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d"]
NOISE_COLOUR = "#d0d0d0"
HOVER_WIDTH = 48  # characters per tooltip line


def _hover_escape(text: str) -> str:
    return H.escape(text).replace("&quot;", '"').replace("&#x27;", "'")


class NeighborhoodMap(View):
    """State (colouring, search, selection, zoom) plus a plotly/ipywidgets view kept in sync with it.

    ``results`` / ``explanations``: SAE name -> :class:`~workbench.analysis.features.FeatureResults` /
    :class:`~workbench.analysis.explain.ExplanationSet` for the SAEs of the layout (either may be partial or None; the
    card needs results, density colouring needs results, search needs explanations or results)."""

    frame = "wb-map"

    def __init__(self, layout: FeatureLayout, results: Mapping[str, Any] | None = None,
                 explanations: Mapping[str, Any] | None = None, *, colour: str = "sae", height: int = 560,
                 max_label: int = 90):
        self.layout = layout
        self.results = dict(results or {})
        self.explanations = dict(explanations or {})
        unknown = sorted((set(self.results) | set(self.explanations)) - set(layout.sae_names))
        if unknown:
            raise ValueError(f"results/explanations for SAE(s) {unknown} that are not on the map "
                             f"({', '.join(layout.sae_names)})")
        self.height, self.max_label = int(height), int(max_label)
        self.colour = "sae"
        self.query = ""
        self.matches: list[int] = []   # points highlighted by the search
        self.selected: int | None = None
        self.card: FeatureCard | None = None
        self.zoom: tuple[tuple[float, float], tuple[float, float]] | None = None
        self._ui = None
        self.colour_by(colour)

    # ----- text of a point -----

    def explanation(self, sae: str, feature: int) -> str:
        """The feature's explanation text, else its top tokens, else ""."""
        if feature in (self.explanations.get(sae) or {}):
            return explanation_text(self.explanations, sae, feature)
        terms = member_terms(sae, feature, results=self.results)
        return ("top tokens: " + ", ".join(repr(t) for t in terms)) if terms else ""

    def hover_text(self, p: int) -> str:
        """The point's tooltip as plotly's hover markup: lines of at most ``HOVER_WIDTH`` characters (a wide tooltip
        is cut at the plot's edge); ``<``, ``>`` and ``&`` escaped, quotes left as they are (plotly shows ``&quot;``
        literally)."""
        sae, f = self.layout.label(p)
        text = self.explanation(sae, f)
        if len(text) > self.max_label:
            text = text[: self.max_label - 1] + "…"
        c = int(self.layout.cluster[p])
        cl = "unclustered" if c < 0 else f"cluster {c}" + (f": {self.layout.cluster_labels[c]}"
                                                           if c in self.layout.cluster_labels else "")

        def lines(t: str) -> str:
            return "<br>".join(_hover_escape(x) for x in textwrap.wrap(t, HOVER_WIDTH)) or ""

        return f"<b>{_hover_escape(sae)} F{f}</b><br>{lines(text)}<br><i>{lines(cl)}</i>"

    # ----- controls -----

    def colour_by(self, key: str) -> go.Figure:
        """Colour the points by "sae" (size), "cluster" or "density" (log10 firing rate, needs results)."""
        if key not in COLOUR_KEYS:
            raise ValueError(f"unknown colouring {key!r}: choose one of {', '.join(COLOUR_KEYS)}")
        if key == "density" and not self.results:
            raise ValueError("colouring by density needs results= (SAE name -> FeatureResults)")
        self.colour = key
        self._refresh()
        return self.figure()

    def search(self, text: str) -> list[tuple[str, int]]:
        """Highlight the features whose explanation matches ``text`` (``search_explanations``; for SAEs without
        explanations, their top tokens); "" clears. Returns the matches as (SAE, feature), best first."""
        q = (text or "").strip()
        self.query = q
        self.matches = []
        if q:
            if not self.explanations and not self.results:
                raise ValueError("search needs explanations= or results= for the SAEs of the map")
            found: list[tuple[float, int]] = []
            for s, name in enumerate(self.layout.sae_names):
                on_map = {int(f): int(p) for p, f in zip(np.nonzero(self.layout.sae == s)[0],
                                                         self.layout.feature[self.layout.sae == s])}
                if name in self.explanations:
                    for hit in search_explanations(self.explanations[name], q, top_n=max(1, len(on_map))):
                        if hit.feature in on_map:
                            found.append((-hit.score, on_map[hit.feature]))
                elif name in self.results:
                    for f, p in on_map.items():
                        terms = member_terms(name, f, results=self.results)
                        if any(q.lower() in t.lower() for t in terms):
                            found.append((-1.0, p))
            self.matches = [p for _, p in sorted(found)]
        self._refresh()
        return [self.layout.label(p) for p in self.matches]

    def select(self, sae: str, feature: int) -> FeatureCard:
        """Mark the feature on the map and open its :class:`FeatureCard` (what a click does)."""
        p = self.layout.point(sae, feature)
        if sae not in self.results:
            raise ValueError(f"no FeatureResults for SAE {sae!r}: pass results={{{sae!r}: compute_features(...)}} "
                             f"to open feature cards")
        self.selected = p
        self.card = FeatureCard.from_results(self.results[sae], int(feature), self.explanations.get(sae))
        self._refresh()
        return self.card

    def neighbors(self, sae: str, feature: int, k: int = 10) -> list[Neighbor]:
        """The feature's nearest features on the map (any SAE) by decoder cosine."""
        return self.layout.neighbors(sae, feature, k)

    def zoom_to(self, sae: str, feature: int, k: int = 10, *, margin: float = 0.25) -> list[Neighbor]:
        """Frame the feature and its ``k`` nearest neighbours (padded by ``margin`` of the frame), select it
        (when results allow) and return the neighbours."""
        p = self.layout.point(sae, feature)
        nbrs = self.layout.neighbors(sae, feature, k)
        pts = [p] + [self.layout.point(n.sae, n.feature) for n in nbrs]
        xy = self.layout.xy[pts]
        lo, hi = xy.min(0), xy.max(0)
        span = np.maximum(hi - lo, 1e-3 * max(1.0, float(np.ptp(self.layout.xy, axis=0).max())))
        pad = span * margin
        self.zoom = ((float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1])))
        if sae in self.results:
            self.select(sae, feature)
        else:
            self.selected = p
            self._refresh()
        return nbrs

    def reset_zoom(self) -> None:
        self.zoom = None
        self._refresh()

    # ----- the figure -----

    def _density(self) -> np.ndarray:
        out = np.full(len(self.layout), np.nan)
        for s, name in enumerate(self.layout.sae_names):
            res = self.results.get(name)
            if res is None:
                continue
            mask = self.layout.sae == s
            dens = res.density.numpy()[self.layout.feature[mask]]
            out[mask] = np.log10(np.maximum(dens, 1e-9))
        return out

    def figure(self) -> go.Figure:
        lay = self.layout
        scatter = go.Scattergl if len(lay) > 5000 else go.Scatter
        hover = [self.hover_text(p) for p in range(len(lay))]
        traces = []
        common = dict(mode="markers", hovertemplate="%{text}<extra></extra>")
        if self.colour == "sae":
            for s, name in enumerate(lay.sae_names):
                idx = np.nonzero(lay.sae == s)[0]
                traces.append(scatter(x=lay.xy[idx, 0], y=lay.xy[idx, 1], name=f"{name} ({idx.size})",
                                      text=[hover[p] for p in idx], customdata=idx,
                                      marker=dict(size=5, color=SAE_COLOURS[s % len(SAE_COLOURS)], opacity=0.75),
                                      **common))
        else:
            idx = np.arange(len(lay))
            if self.colour == "cluster":
                colours = [NOISE_COLOUR if c < 0 else CLUSTER_COLOURS[int(c) % len(CLUSTER_COLOURS)]
                           for c in lay.cluster]
                marker = dict(size=5, color=colours, opacity=0.8)
            else:
                dens = self._density()  # SAEs without results: shown at the lowest density
                floor = float(np.nanmin(dens)) if np.isfinite(dens).any() else 0.0
                marker = dict(size=5, color=np.where(np.isnan(dens), floor, dens), colorscale="Viridis",
                              opacity=0.8, colorbar=dict(title="log10 density", thickness=12, x=1.0, xanchor="left"))
            traces.append(scatter(x=lay.xy[:, 0], y=lay.xy[:, 1], name=self.colour, text=hover, customdata=idx,
                                  marker=marker, **common))
        if self.matches:
            m = np.asarray(self.matches)
            traces.append(scatter(x=lay.xy[m, 0], y=lay.xy[m, 1], name=f"search: {self.query} ({m.size})",
                                  text=[hover[p] for p in m], customdata=m,
                                  marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(width=2, color="#111")),
                                  **common))
        if self.selected is not None:
            p = self.selected
            traces.append(scatter(x=[lay.xy[p, 0]], y=[lay.xy[p, 1]], name="selected", text=[hover[p]],
                                  customdata=[p], marker=dict(size=16, symbol="star", color="#d62728",
                                                              line=dict(width=1, color="#000")), **common))
        fig = go.Figure(traces)
        title = f"{len(lay)} features of {', '.join(lay.sae_names)}, coloured by {self.colour}"
        fig.update_layout(height=self.height, margin=dict(l=10, r=10, t=36, b=10), title=dict(text=title,
                          font=dict(size=13)), hovermode="closest", hoverlabel=dict(align="left"),
                          # the legend runs along the bottom, so it never sits on the density colour bar
                          legend=dict(itemsizing="constant", orientation="h", x=0, xanchor="left", y=-0.02,
                                      yanchor="top"),
                          xaxis=dict(showticklabels=False, zeroline=False, title=None),
                          yaxis=dict(showticklabels=False, zeroline=False, title=None))
        if self.zoom is not None:
            fig.update_xaxes(range=list(self.zoom[0]))
            fig.update_yaxes(range=list(self.zoom[1]))
        return fig

    # ----- renderings -----

    def matches_html(self, n: int = 20) -> str:
        if not self.query:
            return ""
        rows = []
        for p in self.matches[:n]:
            sae, f = self.layout.label(p)
            rows.append([sae, f, int(self.layout.cluster[p]), self.explanation(sae, f)[:100]])
        more = f" (first {n})" if len(self.matches) > n else ""
        return (f'<div class="wb-muted">search {self.query!r}: {len(self.matches)} matches{more}</div>'
                + H.table(["sae", "feature", "cluster", "explanation"], rows))

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        """The map, the search matches and the selected feature's card, as one static fragment."""
        card = self.card.to_html(include_plotlyjs=False) if self.card is not None else ""
        return f"{H.figure_html(self.figure(), include_plotlyjs)}{self.matches_html()}{card}"

    def plain_text(self) -> str:
        sel = ""
        if self.selected is not None:
            sae, f = self.layout.label(self.selected)
            sel = f", {sae} F{f} selected"
        query = f", search {self.query!r}: {len(self.matches)} matches" if self.query else ""
        return (f"NeighborhoodMap: {len(self.layout)} features of {', '.join(self.layout.sae_names)}, coloured by "
                f"{self.colour}{query}{sel}")

    def _build_widget(self):
        """The ipywidgets view (built on first use): search box, colour menu, reset-zoom button, map, card."""
        import ipywidgets as W

        ui = {"search": W.Text(placeholder="search explanations", continuous_update=False),
              "colour": W.Dropdown(options=list(COLOUR_KEYS), value=self.colour, description="colour"),
              "reset": W.Button(description="reset zoom"), "plot": W.Box(), "info": W.HTML(),
              "card": W.Box()}
        ui["search"].observe(lambda ch: self.search(ch["new"]), names="value")
        ui["colour"].observe(lambda ch: self.colour_by(ch["new"]), names="value")
        ui["reset"].on_click(lambda _: self.reset_zoom())
        self._ui = ui
        box = W.VBox([W.HTML(f"<style>{H.STYLE}</style>"),
                      W.HBox([ui["search"], ui["colour"], ui["reset"]]), ui["plot"], ui["info"],
                      ui["card"]])
        self._refresh()
        return box

    def _on_click(self, points: list[dict]) -> None:
        if not points or points[0].get("customdata") is None:
            return
        sae, f = self.layout.label(int(points[0]["customdata"]))
        if sae in self.results:
            self.select(sae, f)

    def _refresh(self) -> None:
        if self._ui is None:
            return
        ui = self._ui
        fig = self.figure()
        if ui.get("figure") is None:  # one chart for the map's lifetime: a change redraws it in place
            ui["figure"] = self.figure_output(fig, on_click=self._on_click)
            ui["plot"].children = [ui["figure"]]
        else:
            ui["figure"].figure = fig
        ui["info"].value = self.matches_html()
        if ui["search"].value != self.query:
            ui["search"].value = self.query
        if ui["colour"].value != self.colour:
            ui["colour"].value = self.colour
        ui["card"].children = [self.card.widget] if self.card is not None else []
