"""One feature at a glance in JupyterLab: the static card of :mod:`workbench.report.card` (top examples, activation
histogram by bucket, logit table) as a live widget (``card.widget``, or just ``card`` as a cell's value).

    card = FeatureCard.from_results(results, 123, explanations=expl)
    card            # in a notebook
    card.to_html()  # a self-contained fragment
"""
from __future__ import annotations

from workbench.report import html as H
from workbench.report.card import StaticFeatureCard
from workbench.report.card import histogram_figure

from .view import View, figure_output

__all__ = ["FeatureCard", "figure_output", "histogram_figure"]


class FeatureCard(StaticFeatureCard, View):
    """The live view of one :class:`workbench.analysis.features.FeatureReport`: the static card (its ``to_html``)
    plus the :class:`View` contract (``widget``, the notebook display with a static fallback)."""

    def __init__(self, report, explanation=None, **kwargs):
        super().__init__(report, explanation, **kwargs)
        self.bucket: int | None = None  # the activation bucket whose examples the card lists (a click on a bar)

    def plain_text(self) -> str:
        return f"FeatureCard: feature {self.report.index}" + (f" ({self.explanation})" if self.explanation else "")

    def show_bucket(self, b: int) -> list:
        """List the examples of activation bucket ``b`` under the histogram (what a click on a bar does)."""
        n = len(self.report.buckets)
        if not 0 <= int(b) < n:
            raise ValueError(f"bucket {b} out of range: this feature has {n} activation buckets")
        self.bucket = int(b)
        if self._widget is not None:
            self._bucket_html.value = self.bucket_html()
        return self.report.buckets[self.bucket].examples

    def bucket_html(self) -> str:
        if self.bucket is None:
            return '<div class="wb-muted">click a bar of the histogram to list examples from its activation range</div>'
        bk = self.report.buckets[self.bucket]
        rows = "".join(f'<div class="wb-ex">{H.token_spans(ex.tokens, ex.acts, self.report.max_activation, ex.index)}'
                       f"</div>" for ex in bk.examples) or '<div class="wb-muted">no examples kept</div>'
        return (f"<div><b>bucket {self.bucket}: activations in [{bk.lo:.3g}, {bk.hi:.3g}]</b> "
                f'<span class="wb-muted">({bk.count} tokens)</span>{rows}</div>')

    def _on_click(self, points: list[dict]) -> None:
        if points and points[0].get("customdata") is not None:
            self.show_bucket(int(points[0]["customdata"]))

    def _build_widget(self):
        import ipywidgets as W

        style = W.HTML(f"<style>{H.STYLE}</style>")
        # this module's figure_output, not View.figure_output: benchmarks/bench_widgets.py swaps it for plotly's
        # FigureWidget (tests/browser/lab.py BASELINE_PATCH) to measure the baseline
        plot = figure_output(self.figure())
        plot.on_click(self._on_click)
        self._bucket_html = W.HTML(self.bucket_html())
        return W.VBox([style, W.HTML(self.header_html()), W.HBox([plot, W.HTML(self.logits_html())]),
                       self._bucket_html, W.HTML(self.examples_html())])
