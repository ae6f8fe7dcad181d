"""Feature splitting, one family at a time (:mod:`workbench.analysis.splitting`).

Pick a feature of the smallest SAE: its family across sizes is drawn as a graph (one column per size, the edges
carrying decoder cosine and activation correlation), and each member's top examples are shown side by side, one
column per size. Every control is a method::

    ex = SplitExplorer(split, results, explanations)     # results/explanations: dicts keyed by SAE name
    fam = ex.select(12); ex.to_html()
"""
from __future__ import annotations

from typing import Any, Mapping

import plotly.graph_objects as go
import torch

from workbench.analysis.explain import explanation_text
from workbench.analysis.splitting import FamilyMember, SplitAnalysis, SplitFamily

from workbench.report import html as H

from .view import View

__all__ = ["SplitExplorer", "family_figure"]

_COLUMN_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2"]


def family_figure(family: SplitFamily, names: list[str], height: int = 320) -> go.Figure:
    """The family as a layered graph: x = dictionary size, one node per member, an edge per link, its hover and
    midpoint label giving the cosine and correlation."""
    pos: dict[tuple[str, int], tuple[float, float]] = {(family.parent_sae, family.parent): (0.0, 0.0)}
    for col, name in enumerate(names[1:], start=1):
        members = family.children.get(name, [])
        for r, m in enumerate(members):
            pos[(name, m.feature)] = (float(col), (len(members) - 1) / 2 - r)
    traces = []
    mid_x, mid_y, mid_t = [], [], []
    for e in family.edges:
        a, b = pos.get((e.sae_a, e.a)), pos.get((e.sae_b, e.b))
        if a is None or b is None:
            continue
        traces.append(go.Scatter(x=[a[0], b[0]], y=[a[1], b[1]], mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(width=1 + 3 * max(e.cosine, 0.0), color="#999")))
        mid_x.append((a[0] + b[0]) / 2)
        mid_y.append((a[1] + b[1]) / 2)
        mid_t.append(f"cos {e.cosine:.2f} / r {e.correlation:.2f}")
    traces.append(go.Scatter(x=mid_x, y=mid_y, mode="text", text=mid_t, textfont=dict(size=9, color="#555"),
                             hovertext=[f"{t}" for t in mid_t], hoverinfo="text", showlegend=False))
    for col, name in enumerate(names):
        nodes = [(k, v) for k, v in pos.items() if k[0] == name]
        if not nodes:
            continue
        traces.append(go.Scatter(x=[v[0] for _, v in nodes], y=[v[1] for _, v in nodes], mode="markers+text",
                                 text=[f"F{k[1]}" for k, _ in nodes], textposition="top center", name=name,
                                 marker=dict(size=14, color=_COLUMN_COLOURS[col % len(_COLUMN_COLOURS)]),
                                 hovertemplate=f"{name} %{{text}}<extra></extra>"))
    fig = go.Figure(traces)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      title=dict(text=f"family of {family.parent_sae} F{family.parent}", font=dict(size=13)),
                      xaxis=dict(tickvals=list(range(len(names))), ticktext=names, zeroline=False, showgrid=False),
                      yaxis=dict(visible=False))
    return fig


class SplitExplorer(View):
    """State (the selected family) plus an ipywidgets view of a :class:`SplitAnalysis`.

    ``results`` / ``explanations``: SAE name -> FeatureResults / ExplanationSet, for the members' top examples and
    explanations (optional: without them the view shows the numbers only)."""

    frame = "wb-split"

    def __init__(self, analysis: SplitAnalysis, results: Mapping[str, Any] | None = None,
                 explanations: Mapping[str, Any] | None = None, *, n_examples: int = 3, min_children: int = 1):
        if n_examples < 0:
            raise ValueError(f"n_examples must be >= 0, got {n_examples}")
        self.analysis = analysis
        self.results = dict(results or {})
        self.explanations = dict(explanations or {})
        self.n_examples = int(n_examples)
        self.min_children = int(min_children)
        self.family: SplitFamily | None = None
        self._ui = None

    # ----- state -----

    def parents(self, size: str | None = None) -> list[tuple[int, int]]:
        """(parent feature, children in SAE ``size``, default the largest) for every parent with at least
        ``min_children`` children that fires on the held-out tokens, the most children first."""
        a = self.analysis
        size = size or a.names[-1]
        s, _, _ = a.links(a.smallest, size)
        n = torch.bincount(s, minlength=a.sizes[0])
        alive = a.codes[a.smallest].counts > 0
        ok = ((n >= self.min_children) & alive).nonzero().squeeze(1).tolist()
        return sorted(((i, int(n[i])) for i in ok), key=lambda t: (-t[1], t[0]))

    def select(self, parent: int) -> SplitFamily:
        """Show the family of feature ``parent`` of the smallest SAE."""
        self.family = self.analysis.family(parent)
        self._refresh()
        return self.family

    # ----- pieces -----

    def _explanation(self, sae: str, feature: int) -> str:
        return explanation_text(self.explanations, sae, feature)

    def _examples_html(self, sae: str, feature: int) -> str:
        res = self.results.get(sae)
        if res is None or not self.n_examples:
            return ""
        rep = res.feature(feature)
        if not rep.top:
            return '<div class="wb-muted">never fired in the analysed tokens</div>'
        return "".join(f'<div class="wb-ex"><span class="wb-muted">{ex.activation:.2f} </span>'
                       f"{H.token_spans(ex.tokens, ex.acts, rep.max_activation, ex.index)}</div>"
                       for ex in rep.top[: self.n_examples])

    def _member_html(self, sae: str, feature: int, m: FamilyMember | None) -> str:
        fam = self.family
        if m is None:
            stats = f"parent: fires on {fam.n_parent_tokens} held-out tokens"
        else:
            stats = (f"cos {m.cosine:.2f} · r {m.correlation:.2f} · covers {m.coverage:.0%} of the parent's "
                     f"tokens · {m.inside:.0%} of its {m.n_firing} tokens inside the parent")
            others = [p for p in m.parents if p != fam.parent]
            if others:
                stats += " · <b>merge</b>: also a child of " + ", ".join(f"F{p}" for p in others)
        expl = self._explanation(sae, feature)
        return (f'<div class="wb-card" style="margin:4px 0"><b>F{feature}</b> <span class="wb-muted">{stats}'
                f"</span>" + (f"<div>{H.escape(expl)}</div>" if expl else "")
                + self._examples_html(sae, feature) + "</div>")

    def members_html(self) -> str:
        """One column per size: the parent, then each size's children, each with its top examples."""
        fam = self.family
        if fam is None:
            return '<div class="wb-muted">no family selected: call select(feature)</div>'
        cols = [f'<div style="flex:1;min-width:260px"><h4>{H.escape(fam.parent_sae)}</h4>'
                f"{self._member_html(fam.parent_sae, fam.parent, None)}</div>"]
        for name in self.analysis.names[1:]:
            members = fam.children.get(name, [])
            head = (f"<h4>{H.escape(name)}</h4><div class=\"wb-muted\">{len(members)} children · union covers "
                    f"{fam.union_coverage.get(name, 0.0):.0%} · overlap {fam.overlap.get(name, 0.0):.0%}</div>")
            body = "".join(self._member_html(name, m.feature, m) for m in members) or \
                '<div class="wb-muted">no child above the threshold</div>'
            cols.append(f'<div style="flex:1;min-width:260px">{head}{body}</div>')
        return f'<div style="display:flex;gap:10px;align-items:flex-start">{"".join(cols)}</div>'

    def edges_html(self) -> str:
        fam = self.family
        if fam is None:
            return ""
        rows = [[f"{e.sae_a} F{e.a}", f"{e.sae_b} F{e.b}", e.cosine, e.correlation] for e in fam.edges]
        return "<details><summary>edges</summary>" + H.table(["from", "to", "cosine", "correlation"], rows) + \
            "</details>"

    def figure(self) -> go.Figure:
        if self.family is None:
            raise ValueError("no family selected: call select(feature) first")
        return family_figure(self.family, self.analysis.names)

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        """The selected family: its graph, the members side by side, the edge table."""
        if self.family is None:
            return self.members_html()
        return f"{H.figure_html(self.figure(), include_plotlyjs)}{self.members_html()}{self.edges_html()}"

    def plain_text(self) -> str:
        fam = self.family
        head = f"SplitExplorer: {', '.join(self.analysis.names)}"
        if fam is None:
            return head + ", no family selected"
        n = sum(len(v) for v in fam.children.values())
        return head + f", family of {fam.parent_sae} F{fam.parent} ({n} children)"

    def _build_widget(self):
        """The ipywidgets view (built on first use): a parent menu, the family graph and the member columns."""
        import ipywidgets as W

        options = [(f"F{i} ({n} children)", i) for i, n in self.parents()]
        ui = {"parent": W.Dropdown(options=options, description="feature", value=None),
              "plot": W.Box(), "members": W.HTML()}
        ui["parent"].observe(self._on_pick, names="value")
        self._ui = ui
        box = W.VBox([W.HTML(f"<style>{H.STYLE}</style>"), ui["parent"], ui["plot"], ui["members"]])
        self._refresh()
        return box

    def _on_pick(self, change) -> None:
        new = change["new"]
        if new is not None and (self.family is None or new != self.family.parent):
            self.select(new)

    def _refresh(self) -> None:
        if self._ui is None:
            return
        ui = self._ui
        if self.family is not None:
            if ui["parent"].value != self.family.parent and any(v == self.family.parent
                                                                for _, v in ui["parent"].options):
                ui["parent"].value = self.family.parent
            ui["plot"].children = [self.figure_output(self.figure())]
        ui["members"].value = self.members_html() + self.edges_html()
