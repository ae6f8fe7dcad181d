"""A language x feature heatmap of one probe group (the same content in several languages): which features fire on
every translation and which on one language only. Clicking a column (or ``select(feature)``) opens its
:class:`FeatureCard`.

    from workbench.analysis.multilingual_probes import concept_probe_groups, probe_activations
    probes = probe_activations(model, sae, concept_probe_groups())
    view = LanguageHeatmap(probes, "golden_gate", results=results)
    view.select(view.features[0])   # or click a column
"""
from __future__ import annotations

import plotly.graph_objects as go
import torch

from workbench.analysis.multilingual import feature_scores, shared_top_features
from workbench.analysis.multilingual_probes import LANGUAGE_NAMES

from workbench.report import html as H
from .feature_card import FeatureCard
from .view import View

__all__ = ["LanguageHeatmap", "language_heatmap_figure"]


def language_heatmap_figure(z: list[list[float]], languages: list[str], features: list[int], title: str = "",
                            height: int | None = None) -> go.Figure:
    """Languages (rows) x features (columns) of ``z`` [n_languages][n_features]."""
    fig = go.Figure(go.Heatmap(z=z, x=[f"F{f}" for f in features], y=[LANGUAGE_NAMES.get(lang, lang) for lang in
                                                                       languages],
                               colorscale="Oranges", customdata=[list(features) for _ in languages],
                               hovertemplate="%{y}, F%{customdata}: %{z:.3g}<extra></extra>"))
    fig.update_layout(height=height or 140 + 26 * len(languages), margin=dict(l=80, r=10, t=30, b=60),
                      yaxis=dict(autorange="reversed"), title=dict(text=title, font=dict(size=12)),
                      xaxis=dict(type="category"))
    return fig


class LanguageHeatmap(View):
    """The mean activation of a group's strongest features in each language.

    Columns: the features in the top ``k`` of every language first (:func:`shared_top_features`), then the others by
    their mean score over languages, ``top_n`` in all. ``how``: "mean" (raw mean activation) or "specific" (minus the
    feature's mean over the other groups), as in :func:`workbench.analysis.multilingual.feature_scores`; the cells always
    show the mean activation (divided by each feature's corpus max when ``relative`` and ``results`` are given).
    """

    def __init__(self, probes, group: str | int, *, hook: str | None = None, results=None, explanations=None,
                 top_n: int = 15, k: int = 10, how: str = "mean", relative: bool = False):
        if top_n < 1:
            raise ValueError(f"top_n must be a positive integer, got {top_n}")
        if relative and results is None:
            raise ValueError("relative=True needs results= (a FeatureResults with each feature's max activation)")
        acts = probes.feature_acts(hook)
        if results is not None and int(results.d_sae) != int(acts.shape[-1]):
            raise ValueError(f"results have d_sae={results.d_sae} but the probes' SAE has d_sae={acts.shape[-1]}: "
                             f"use the FeatureResults of the same SAE")
        self.probes, self.results, self.explanations = probes, results, explanations
        self.group = probes.group_index(group)
        self.name = probes.names[self.group]
        self.languages = list(probes.languages)
        self.how, self.k, self.relative = how, int(k), relative
        scores = feature_scores(acts, how)[self.group]  # [L, d]
        self.shared = shared_top_features(scores, self.languages, self.k)
        order = [s.feature for s in self.shared]
        rest = scores.mean(0).argsort(descending=True).tolist()
        seen = set(order)
        order += [i for i in rest if i not in seen and bool((acts[self.group, :, i] > 0).any())]
        self.features: list[int] = order[: int(top_n)]
        values = acts[self.group][:, self.features].to(torch.float64)
        if relative:
            values = values / results.max_activation[self.features].to(torch.float64).clamp_min(1e-12)
        self.values = values  # [L, n_features]
        self.selected: int | None = None
        self.card: FeatureCard | None = None
        self._ui = None

    # ----- state -----

    def select(self, feature: int) -> FeatureCard:
        """Open ``feature``'s card (any feature of the SAE, not only the columns shown)."""
        if self.results is None:
            raise ValueError("opening a feature card needs results= (the FeatureResults of this SAE, from "
                             "workbench.analysis.features.compute_features)")
        i = self.results.check_index(feature)
        self.selected = i
        self.card = FeatureCard.from_results(self.results, i, self.explanations)
        self._refresh_card()
        return self.card

    def column(self, feature: int) -> dict[str, float]:
        """The values shown for ``feature`` per language (it must be one of the columns)."""
        if feature not in self.features:
            raise ValueError(f"feature {feature} is not a column of this heatmap; columns: {self.features}")
        j = self.features.index(feature)
        return {lang: float(self.values[li, j]) for li, lang in enumerate(self.languages)}

    def figure(self) -> go.Figure:
        unit = "activation / corpus max" if self.relative else "mean activation"
        title = f"{self.name}: {unit} per language (ranked by {self.how}; {len(self.shared)} in the top {self.k} " \
                f"of every language)"
        return language_heatmap_figure(self.values.tolist(), self.languages, self.features, title)

    # ----- rendering -----

    def texts_html(self) -> str:
        g = self.probes.groups[self.group]
        rows = [[LANGUAGE_NAMES.get(lang, lang), g.texts[lang]] for lang in self.languages]
        return "<details><summary>texts</summary>" + H.table(["language", "text"], rows) + "</details>"

    def shared_html(self) -> str:
        if not self.shared:
            return (f'<div class="wb-muted">no feature is in the top {self.k} of every language '
                    f"(by {self.how})</div>")
        rows = [[f"F{s.feature}", s.worst_rank + 1, *(s.ranks[lang] + 1 for lang in self.languages)]
                for s in self.shared]
        return (f"<div><b>in the top {self.k} of every language</b> (rank 1 = top)"
                + H.table(["feature", "worst rank", *self.languages], rows) + "</div>")

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        return (f"<h3>{H.escape(self.name)}</h3>{H.figure_html(self.figure(), include_plotlyjs)}"
                f"{self.shared_html()}{self.texts_html()}")

    def after_html(self, include_plotlyjs: bool | str = False) -> str:
        return self.card.to_html(include_plotlyjs) if self.card is not None else ""

    def plain_text(self) -> str:
        sel = f", F{self.selected} open" if self.selected is not None else ""
        return (f"LanguageHeatmap: {self.name!r}, {len(self.features)} features x {len(self.languages)} languages "
                f"({len(self.shared)} shared){sel}")

    def _build_widget(self):
        """The ipywidgets view: heatmap (click a column), shared-feature table, feature picker, card."""
        import ipywidgets as W

        plot = self.figure_output(self.figure(), on_click=self._on_click)  # a click opens the column's card
        picker = W.Dropdown(options=[(f"F{f}", f) for f in self.features], value=None, description="feature")
        picker.observe(lambda ch: ch["new"] is not None and self.results is not None and self.select(ch["new"]),
                       names="value")
        self._ui = {"card": W.Box(), "picker": picker}
        box = W.VBox([W.HTML(f"<style>{H.STYLE}</style>"), plot,
                      W.HTML(self.shared_html() + self.texts_html()), picker, self._ui["card"]])
        self._refresh_card()
        return box

    def _on_click(self, points: list[dict]) -> None:
        if points and self.results is not None:
            ind = points[0]["point"]
            j = ind[1] if isinstance(ind, (list, tuple)) else ind
            self.select(self.features[j])

    def _refresh_card(self) -> None:
        if self._ui is not None and self.card is not None:
            self._ui["card"].children = [self.card.widget]
