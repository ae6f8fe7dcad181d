"""Class-incremental learning curves of the SDMLP, its ablations and the baselines
(:func:`workbench.studies.sdm.continual_study` or :func:`workbench.sdm.continual.continual_table`): accuracy on
every class seen so far after each task, mean and s.e.m. over seeds, and the table of final accuracies.

    view = ContinualView(study["table"], title="split wiki topics")
    view.show(["sdmlp", "relu", "topk", "ewc"])      # the methods drawn (all by default)
    view.to_html()
"""
from __future__ import annotations

import plotly.graph_objects as go

from workbench.report import html as H
from .view import View

__all__ = ["ContinualView", "continual_figure"]


def continual_figure(table: dict, methods: list[str], title: str = "") -> go.Figure:
    fig = go.Figure()
    for m in methods:
        row = table[m]
        y = row["per_task_mean"]
        err = row.get("per_task_sem") or [0.0] * len(y)
        fig.add_trace(go.Scatter(x=list(range(1, len(y) + 1)), y=y, mode="lines+markers", name=m,
                                 error_y=dict(type="data", array=err, visible=True),
                                 line=dict(width=3 if m == "sdmlp" else 1.5)))
    fig.update_layout(title=dict(text=f"accuracy on all classes seen so far {title}".strip(), font=dict(size=13)),
                      xaxis=dict(title="after task", dtick=1), yaxis=dict(title="accuracy", range=[0, 1.02]),
                      height=360, margin=dict(l=60, r=10, t=36, b=44), legend=dict(font=dict(size=10)))
    return fig


class ContinualView(View):
    """The learning curves and the final-accuracy table of a continual-learning comparison."""

    def __init__(self, table: dict, title: str = "", methods: list[str] | None = None):
        if not table:
            raise ValueError("ContinualView needs a table {method: row}: run workbench.studies.sdm.continual_study")
        self.table = table
        self.title = title
        self.methods = self._check(methods or list(table))

    def _check(self, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in self.table]
        if unknown:
            raise ValueError(f"methods {unknown} are not in the table: it has {', '.join(self.table)}")
        return list(methods)

    def show(self, methods: list[str]) -> "ContinualView":
        self.methods = self._check(methods)
        if self._widget is not None:
            self._refresh()
        return self

    def table_html(self) -> str:
        rows = sorted(self.table.items(), key=lambda kv: -kv[1]["final_mean"])
        return H.table(["method", "final accuracy", "s.e.m.", "dead units"],
                       [[m, f"{r['final_mean']:.3f}", f"{r['final_sem']:.3f}", f"{r.get('dead_mean', 0):.0f}"]
                        for m, r in rows])

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        fig = continual_figure(self.table, self.methods, self.title)
        return (f"<h3>Continual learning {H.escape(self.title)}</h3>" + self.table_html()
                + "".join(self.figures_html([fig], include_plotlyjs)))

    def plain_text(self) -> str:
        best = max(self.table, key=lambda m: self.table[m]["final_mean"])
        return f"ContinualView {self.title}: {len(self.table)} methods, best {best}"

    def _refresh(self) -> None:
        self._plot.children = [self.figure_output(continual_figure(self.table, self.methods, self.title))]

    def _build_widget(self):
        import ipywidgets as W

        pick = W.SelectMultiple(options=list(self.table), value=tuple(self.methods), description="methods", rows=6)
        pick.observe(lambda ch: self.show(list(ch["new"])), names="value")
        self._plot = W.VBox()
        self._refresh()
        return W.VBox([W.HTML(f"<style>{H.STYLE}</style>{self.table_html()}"), pick, self._plot])
