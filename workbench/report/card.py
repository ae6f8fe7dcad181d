"""One feature at a glance as static HTML: top examples with highlighted tokens, the activation histogram coloured
by bucket, the logit table, density and max. The report renders these; ``widgets.FeatureCard`` adds the live
JupyterLab view on top.

    card = StaticFeatureCard.from_results(results, 123, explanations=expl)
    card.to_html()  # a self-contained fragment
"""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from workbench.report import html as H

__all__ = ["HIST_WIDTH", "StaticFeatureCard", "histogram_figure"]

BUCKET_COLOURS = ["#fde0c5", "#fcc89b", "#fbb072", "#f99850", "#f7803a", "#ee6a2e", "#dd5426", "#c7401f",
                  "#ad2f19", "#8e2013"]


def _bucket_colour(b: int, n: int) -> str:
    return BUCKET_COLOURS[min(len(BUCKET_COLOURS) - 1, b * len(BUCKET_COLOURS) // max(n, 1))]


HIST_WIDTH = 440  # px: the card's histogram has a fixed width, so it never spills over the logit table


def histogram_figure(report, n_buckets: int | None = None, height: int = 220, width: int | None = HIST_WIDTH
                     ) -> go.Figure:
    """Bar chart of the feature's non-zero activations (linear bins from 0 to its max), each bar coloured by the
    activation bucket it falls in (``n_buckets``: default the number of buckets of the report). ``width`` in
    pixels (None: plotly's autosize to the container when it is drawn)."""
    h = report.histogram
    n_buckets = n_buckets or max(len(report.buckets), 1)
    mx = max(float(report.max_activation), 1e-12)
    centres = [(a + b) / 2 for a, b in zip(h.edges[:-1], h.edges[1:])]
    widths = [b - a for a, b in zip(h.edges[:-1], h.edges[1:])]
    buckets = [min(n_buckets - 1, int(c / mx * n_buckets)) for c in centres]
    fig = go.Figure(go.Bar(x=centres, y=h.counts, width=widths, marker_color=[_bucket_colour(b, n_buckets)
                                                                                for b in buckets],
                           customdata=buckets, hovertemplate="act %{x:.3g}: %{y} tokens (bucket %{customdata})"
                                                             "<extra></extra>"))
    fig.update_layout(height=height, width=width, autosize=width is None, margin=dict(l=40, r=10, t=24, b=30),
                      bargap=0,
                      title=dict(text=f"F{report.index} activations (non-zero)", font=dict(size=12)),
                      xaxis_title=None, yaxis_title="tokens")
    return fig


class StaticFeatureCard:
    """The static view of one :class:`workbench.analysis.features.FeatureReport` (plus, optionally, its explanation and score
    and a ``note`` line, e.g. the report's concept evidence)."""

    def __init__(self, report, explanation: Any = None, *, n_examples: int = 10, n_bucket_examples: int = 2,
                 note: str | None = None):
        self.report = report
        self.note = note  # one line under the header, e.g. why the feature is shown
        unit = explanation
        self.explanation = getattr(getattr(unit, "explanation", unit), "text", unit)
        self.score = getattr(unit, "score", None)
        self.n_examples = int(n_examples)
        self.n_bucket_examples = int(n_bucket_examples)

    @classmethod
    def from_results(cls, results, index: int, explanations=None, **kwargs) -> "StaticFeatureCard":
        """The card of feature ``index`` of a :class:`FeatureResults`; ``explanations``: an ExplanationSet or a
        mapping feature -> text."""
        i = results.check_index(index)
        unit = None
        if explanations is not None and i in explanations:
            unit = explanations[i]
        return cls(results.feature(i), unit, **kwargs)

    # ----- pieces (HTML strings) -----

    def header_html(self) -> str:
        r = self.report
        parts = [f"<h3>Feature {r.index}</h3>",
                 H.table(["density", "count", "max act", "mean act"],
                         [[f"{r.density:.3g}", r.count, float(r.max_activation), float(r.mean_activation)]])]
        if self.explanation:
            parts.append(f"<div><b>explanation:</b> {H.escape(self.explanation)}</div>")
        if self.score is not None:
            s = self.score
            parts.append(f'<div class="wb-muted">held-out score: precision {s.precision:.2f}, recall '
                         f"{s.recall:.2f}, F1 {s.f1:.2f} ({s.n_firing} firing tokens)</div>")
        if self.note:
            parts.append(f'<div class="wb-muted wb-note">{H.escape(self.note)}</div>')
        return "".join(parts)

    def examples_html(self) -> str:
        r = self.report
        if not r.top:
            return '<div class="wb-muted">no examples: the feature never fired</div>'
        rows = [f'<div class="wb-ex"><span class="wb-muted">{ex.activation:.2f} </span>'
                f"{H.token_spans(ex.tokens, ex.acts, r.max_activation, ex.index)}</div>"
                for ex in r.top[: self.n_examples]]
        out = "<div><b>top examples</b>" + "".join(rows) + "</div>"
        sampled = [(b, ex) for b in reversed(r.buckets) for ex in b.examples[: self.n_bucket_examples]]
        if sampled and self.n_bucket_examples:
            rows = [f'<div class="wb-ex"><span class="wb-muted">[{b.lo:.2g}, {b.hi:.2g}] </span>'
                    f"{H.token_spans(ex.tokens, ex.acts, r.max_activation, ex.index)}</div>" for b, ex in sampled]
            out += "<details><summary>examples by activation bucket</summary>" + "".join(rows) + "</details>"
        return out

    def logits_html(self) -> str:
        lg = self.report.logits
        if lg is None:
            return '<div class="wb-muted">no logit effects (compute_features was run without model=)</div>'
        n = max(len(lg.top_tokens), len(lg.bottom_tokens))

        def at(xs, j):
            return xs[j] if j < len(xs) else ""

        rows = [[repr(at(lg.top_tokens, j)), at(lg.top_values, j), repr(at(lg.bottom_tokens, j)),
                 at(lg.bottom_values, j)] for j in range(n)]
        return "<div><b>logit effects</b>" + H.table(["promoted", "", "suppressed", ""], rows) + "</div>"

    def figure(self) -> go.Figure:
        return histogram_figure(self.report)

    # ----- renderings -----

    def to_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        """A static fragment: header, histogram, logit table, examples. ``include_plotlyjs`` as in
        :func:`workbench.report.html.figure_html` (False inside a page that already loads plotly)."""
        # The figure's box has the figure's own fixed width: plotly draws when its script runs, before the logit
        # table after it is parsed, so a box sized by the flex layout (flex:1) was measured wider than it ends up
        # and the plot covered the table until a window resize.
        fig = self.figure()
        width = fig.layout.width or HIST_WIDTH
        return (f'<div class="wb-card">{self.header_html()}'
                f'<div class="wb-row"><div class="wb-fig" style="width:{int(width)}px">'
                f"{H.figure_html(fig, include_plotlyjs)}</div>"
                f'<div class="wb-side">{self.logits_html()}</div></div>'
                f"{self.examples_html()}</div>")


def __getattr__(name: str):
    # the 0.2 name, kept for one release: widgets.FeatureCard is the notebook view of the same card
    if name == "FeatureCard":
        import warnings

        warnings.warn("workbench.report.card.FeatureCard is now StaticFeatureCard (widgets.FeatureCard is the "
                      "notebook view); the old name goes in 0.3", DeprecationWarning, stacklevel=2)
        return StaticFeatureCard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
