"""A token x feature view of an :class:`workbench.intervene.attribution.Attribution`: each cell is a feature's attribution to
the metric at one position (red pushes the metric up, blue down). Selecting a cell (a click, or
``select(position, feature)``) zeroes that feature there, error term kept, and shows the new top predictions.

    attr = attribute(model, sae, "Fact: Dallas is a city in the state of", LogitDiff(" Texas", " California"))
    view = AttributionView(model, sae, attr)
    view.select(3, view.features[0])
"""
from __future__ import annotations

import plotly.graph_objects as go

from workbench.intervene.attribution import AblationOutcome, Attribution, ablate_one

from workbench.report import html as H
from workbench.sae.interop import as_sae
from .feature_card import FeatureCard
from .view import View

__all__ = ["AttributionView", "attribution_figure"]


def _label(tok: str, j: int) -> str:
    return f"{j}:{tok.replace(chr(10), '⏎')}"


def attribution_figure(attribution: Attribution, features: list[int], height: int | None = None) -> go.Figure:
    """Features (rows) x tokens (columns) of attribution, on a diverging scale centred at 0."""
    z = attribution.attr[:, features].T.tolist() if features else [[0.0] * attribution.n_tokens]
    acts = attribution.acts[:, features].T.tolist() if features else [[0.0] * attribution.n_tokens]
    bound = max((abs(v) for row in z for v in row), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=[_label(t, j) for j, t in enumerate(attribution.tokens)],
                               y=[f"F{f}" for f in features] or ["(none)"], customdata=acts, colorscale="RdBu",
                               reversescale=True, zmin=-bound, zmax=bound, zmid=0,
                               hovertemplate="%{y} on %{x}: attribution %{z:.3g}, activation %{customdata:.3g}"
                                             "<extra></extra>"))
    fig.update_layout(height=height or 140 + 18 * max(len(features), 1), margin=dict(l=60, r=10, t=30, b=80),
                      yaxis=dict(autorange="reversed"),
                      title=dict(text=f"attribution to {attribution.metric.describe()}", font=dict(size=12)))
    return fig


class AttributionView(View):
    """The ``top_n`` features by largest |attribution| at any position, and the ablation of a selected cell."""

    def __init__(self, model, sae, attribution: Attribution, *, top_n: int = 20, n_predictions: int = 8,
                 results=None, explanations=None):
        sae = as_sae(sae, model=model)  # a sae_lens.SAE, a folder...; on the model's device
        if top_n < 1:
            raise ValueError(f"top_n must be a positive integer, got {top_n}")
        if int(sae.cfg.d_sae) != attribution.d_sae:
            raise ValueError(f"the attribution has d_sae={attribution.d_sae} but the SAE has {sae.cfg.d_sae}: use "
                             f"the SAE it was computed with")
        self.model, self.sae, self.attribution = model, sae, attribution
        self.results, self.explanations = results, explanations
        self.n_predictions = int(n_predictions)
        strength = attribution.attr.abs().max(0).values
        order = strength.argsort(descending=True).tolist()
        self.features: list[int] = [i for i in order if float(strength[i]) > 0][: int(top_n)]
        self.outcome: AblationOutcome | None = None
        self.card: FeatureCard | None = None
        self.message = ""
        self._ui = None

    def select(self, position: int, feature: int) -> AblationOutcome:
        """Zero ``feature`` at ``position`` and rerun; the outcome holds the metric and top predictions before and
        after. ValueError for a position out of range, an unknown feature, or a feature inactive there."""
        self.outcome = ablate_one(self.model, self.sae, self.attribution, position, feature,
                                  n_predictions=self.n_predictions)
        self.card = FeatureCard.from_results(self.results, feature, self.explanations) if self.results is not None \
            else None
        self.message = ""
        self._refresh()
        return self.outcome

    def figure(self) -> go.Figure:
        return attribution_figure(self.attribution, self.features)

    # ----- rendering -----

    def summary_html(self) -> str:
        a = self.attribution
        preds = ", ".join(f"{H.escape(repr(t))} {p:.3f}" for t, p in a.top_predictions[:5])
        return (f'<div class="wb-ex">{H.escape(a.prompt)}</div><div>{H.escape(a.metric.describe())} = '
                f"{a.metric_value:.3f}; next token: {preds}</div>")

    def outcome_html(self) -> str:
        if self.message:
            return f'<div class="wb-muted">{H.escape(self.message)}</div>'
        o = self.outcome
        if o is None:
            return '<div class="wb-muted">select a cell to ablate that feature at that position</div>'
        n = max(len(o.top_before), len(o.top_after))
        rows = [[*(o.top_before[j] if j < len(o.top_before) else ("", "")),
                 *(o.top_after[j] if j < len(o.top_after) else ("", ""))] for j in range(n)]
        rows = [[repr(a), b, repr(c), d] for a, b, c, d in rows]
        return (f"<div><b>ablated F{o.feature} at {o.position} {H.escape(repr(o.token))}</b> (activation "
                f"{o.activation:.3g}, attribution {o.attribution:.3g}): metric {o.metric_before:.3f} → "
                f"{o.metric_after:.3f} (effect {o.effect:.3f})"
                + H.table(["before", "p", "after", "p"], rows) + "</div>")

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        return f"{self.summary_html()}{H.figure_html(self.figure(), include_plotlyjs)}{self.outcome_html()}"

    def after_html(self, include_plotlyjs: bool | str = False) -> str:
        return self.card.to_html(include_plotlyjs) if self.card is not None else ""

    def plain_text(self) -> str:
        a, o = self.attribution, self.outcome
        done = f", ablated F{o.feature} at {o.position} (effect {o.effect:.3f})" if o is not None else ""
        return f"AttributionView: {len(self.features)} features on {a.prompt[:60]!r}{done}"

    def _build_widget(self):
        """The ipywidgets view: the heatmap (click a cell), position and feature pickers, the ablation table."""
        import ipywidgets as W

        plot = self.figure_output(self.figure(), on_click=self._on_click)
        a = self.attribution
        pos = W.Dropdown(options=[(_label(t, j), j) for j, t in enumerate(a.tokens) if j >= a.first],
                         description="position")
        feat = W.Dropdown(options=[(f"F{f}", f) for f in self.features], description="feature")
        go_btn = W.Button(description="ablate")
        go_btn.on_click(lambda _: self._try_select(pos.value, feat.value))
        self._ui = {"outcome": W.HTML(), "card": W.Box()}
        box = W.VBox([W.HTML(f"<style>{H.STYLE}</style>" + self.summary_html()), plot,
                      W.HBox([pos, feat, go_btn]), self._ui["outcome"], self._ui["card"]])
        self._refresh()
        return box

    def _try_select(self, position, feature) -> None:
        try:
            self.select(position, feature)
        except ValueError as err:  # e.g. an empty cell: say why instead of raising inside a callback
            self.message = str(err)
            self._refresh()

    def _on_click(self, points: list[dict]) -> None:
        if points:
            ind = points[0]["point"]
            row, col = (ind[0], ind[1]) if isinstance(ind, (list, tuple)) else (0, ind)
            self._try_select(col, self.features[row])

    def _refresh(self) -> None:
        if self._ui is None:
            return
        self._ui["outcome"].value = f"<style>{H.STYLE}</style>" + self.outcome_html()
        self._ui["card"].children = [self.card.widget] if self.card is not None else []
