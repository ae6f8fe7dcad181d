"""One feature at a glance in JupyterLab: the static card of :mod:`workbench.report.card` (top examples, activation
histogram by bucket, logit table) as a live widget (``card.widget``, or just ``card`` as a cell's value).

    card = FeatureCard.from_results(results, 123, explanations=expl)
    card            # in a notebook
    card.to_html()  # a self-contained fragment
"""
from __future__ import annotations

import plotly.graph_objects as go

from workbench.report import html as H
from workbench.report.card import FeatureCard as StaticFeatureCard
from workbench.report.card import histogram_figure

__all__ = ["FeatureCard", "figure_output", "histogram_figure"]


def figure_output(fig: go.Figure):
    """A widget showing ``fig``: a FigureWidget where plotly's widget backend (anywidget) is installed, else an
    ``ipywidgets.Output`` holding the static figure."""
    import ipywidgets as W

    try:
        return go.FigureWidget(fig)
    except Exception:  # plotly >= 6 needs anywidget for FigureWidget
        out = W.Output()
        with out:
            fig.show()
        return out


class FeatureCard(StaticFeatureCard):
    """The live view of one :class:`workbench.analysis.features.FeatureReport`: the static card plus ``widget``."""

    def __init__(self, report, explanation=None, **kwargs):
        super().__init__(report, explanation, **kwargs)
        self._widget = None

    @property
    def widget(self):
        """The ipywidgets view (built on first use)."""
        if self._widget is None:
            import ipywidgets as W

            style = W.HTML(f"<style>{H.STYLE}</style>")
            self._widget = W.VBox([style, W.HTML(self.header_html()),
                                   W.HBox([figure_output(self.figure()), W.HTML(self.logits_html())]),
                                   W.HTML(self.examples_html())])
        return self._widget

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
