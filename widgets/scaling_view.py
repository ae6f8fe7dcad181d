"""The scaling-law plots of a :class:`workbench.analysis.scaling.ScalingResults`, and the completeness curves of a
:class:`workbench.analysis.completeness.CompletenessResult`.

    view = ScalingView(results)        # in a notebook: the figures and the table of fitted exponents
    view.set_loss("mse")               # refit and redraw on another metric
    view.to_html()                     # a static fragment for reports

Figures (plotly): loss against compute (every run, one line per dictionary size, the iso-compute optima and the
fitted frontier law); the compute-optimal d_sae and steps against compute with their laws; the held-out dead
fraction against d_sae (one line per step count).
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from workbench.analysis.scaling import LOSS_KEYS
from workbench.report import html as H
from .view import View

__all__ = ["ScalingView", "completeness_figure", "dead_figure", "loss_figure", "optimum_figure"]

_LAYOUT = dict(height=340, margin=dict(l=60, r=10, t=36, b=44), legend=dict(font=dict(size=10)))


def _fmt_ci(ci) -> str:
    if ci is None or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return "n/a"
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _law_label(name: str, fit) -> str:
    if fit is None:
        return f"{name}: no fit"
    return f"{name} ∝ C^{fit.exponent:.3f} (CI {_fmt_ci(fit.exponent_ci)})"


def loss_figure(results, loss: str | None = None) -> go.Figure:
    """Loss against compute: each run (lines join the runs of one size), the optima per budget, the frontier law."""
    fits = results.fits(loss)
    key = fits.loss_key
    fig = go.Figure()
    for d in sorted({r.d_sae for r in results.runs}):
        runs = sorted((r for r in results.runs if r.d_sae == d), key=lambda r: r.compute)
        fig.add_trace(go.Scatter(x=[r.compute for r in runs], y=[r.metric(key) for r in runs], mode="lines+markers",
                                 name=f"d_sae {d}", customdata=[[r.steps, r.l0] for r in runs],
                                 hovertemplate=f"d_sae {d}<br>steps %{{customdata[0]}}<br>C %{{x:.3g}}<br>{key} "
                                               f"%{{y:.4g}}<br>L0 %{{customdata[1]:.1f}}<extra></extra>"))
    pts = fits.frontier
    if pts:
        fig.add_trace(go.Scatter(x=[p.compute for p in pts], y=[p.loss for p in pts], mode="markers",
                                 marker=dict(symbol="star", size=12, color="black"),
                                 name=f"frontier ({fits.basis})"))
    if fits.loss is not None and pts:
        c = np.geomspace(min(p.compute for p in pts), max(p.compute for p in pts), 50)
        fig.add_trace(go.Scatter(x=c, y=fits.loss.predict(c), mode="lines", line=dict(dash="dash", color="black"),
                                 name=_law_label(key, fits.loss)))
    fig.update_layout(title=dict(text=f"{key} against training compute (FLOPs)", font=dict(size=13)),
                      xaxis=dict(type="log", title="compute (FLOPs, 6·N·D)"), yaxis=dict(type="log", title=key),
                      **_LAYOUT)
    return fig


def optimum_figure(results, loss: str | None = None) -> go.Figure:
    """The compute-optimal d_sae and steps against compute, with their power laws."""
    fits = results.fits(loss)
    pts = fits.frontier
    fig = go.Figure()
    for what, attr, fit, colour in (("d_sae*", "d_sae", fits.features, "#1f77b4"),
                                    ("steps*", "steps", fits.steps, "#d62728")):
        fig.add_trace(go.Scatter(x=[p.compute for p in pts], y=[getattr(p, attr) for p in pts], mode="markers",
                                 marker=dict(color=colour, size=9), name=what))
        if fit is not None and pts:
            c = np.geomspace(min(p.compute for p in pts), max(p.compute for p in pts), 50)
            fig.add_trace(go.Scatter(x=c, y=fit.predict(c), mode="lines", line=dict(color=colour, dash="dash"),
                                     name=_law_label(what, fit)))
    fig.update_layout(title=dict(text=f"compute-optimal size and steps ({fits.basis})", font=dict(size=13)),
                      xaxis=dict(type="log", title="compute (FLOPs)"), yaxis=dict(type="log", title="optimum"),
                      **_LAYOUT)
    return fig


def dead_figure(results) -> go.Figure:
    """Held-out dead fraction against d_sae, one line per step count."""
    fig = go.Figure()
    for steps in sorted({r.steps for r in results.runs}):
        dead = results.dead_by_size(steps)
        fig.add_trace(go.Scatter(x=list(dead), y=list(dead.values()), mode="lines+markers", name=f"{steps} steps"))
    window = results.runs[0].eval_tokens if results.runs else 0
    fig.update_layout(title=dict(text=f"dead fraction (no firing on {window:,} held-out tokens)", font=dict(size=13)),
                      xaxis=dict(type="log", title="d_sae"), yaxis=dict(title="dead fraction", rangemode="tozero"),
                      **_LAYOUT)
    return fig


def completeness_figure(result, rescaled: bool = False) -> go.Figure:
    """P(dedicated feature) against log10 frequency (or log10 frequency x alive features), per SAE: the concepts
    (jittered 0/1 markers) and the fitted sigmoid."""
    fig = go.Figure()
    fits = result.rescaled_fits if rescaled else result.fits
    rng = np.random.default_rng(0)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    names = {s: [c["name"] for c, d in zip(result.concepts, result.saes[s]["decidable"]) if d] for s in result.saes}
    for i, sae in enumerate(result.saes):
        colour = palette[i % len(palette)]
        x, y = result.curves(sae, rescaled)
        fig.add_trace(go.Scatter(x=x, y=y + rng.uniform(-0.03, 0.03, y.size), mode="markers", text=names[sae],
                                 marker=dict(color=colour, size=5, opacity=0.5), name=f"{sae} concepts",
                                 hovertemplate="%{text}<br>x %{x:.2f}<extra></extra>"))
        fit = fits[sae]
        if fit.defined and x.size:
            grid = np.linspace(x.min(), x.max(), 100)
            fig.add_trace(go.Scatter(x=grid, y=fit.predict(grid), mode="lines", line=dict(color=colour),
                                     name=f"{sae}: midpoint {fit.midpoint:.2f} {_fmt_ci(fit.midpoint_ci)}"))
    xt = "log10(frequency × alive features)" if rescaled else "log10(frequency per token)"
    fig.update_layout(title=dict(text="dedicated feature present vs concept frequency", font=dict(size=13)),
                      xaxis=dict(title=xt), yaxis=dict(title="P(dedicated feature)", range=[-0.1, 1.1]), **_LAYOUT)
    return fig


class ScalingView(View):
    """The three scaling figures and the table of fitted laws for one metric, as a widget or static HTML."""

    def __init__(self, results, loss: str | None = None):
        if not results.runs:
            raise ValueError("the scaling results hold no runs: run workbench.studies.sweeps.run_sweep first")
        self.results = results
        self.loss = loss or results.config.loss
        results.fits(self.loss)  # validates the metric

    @property
    def fits(self):
        return self.results.fits(self.loss)

    def set_loss(self, loss: str) -> "ScalingView":
        """Switch the metric the laws are fitted on (fvu, mse, train_loss) and redraw."""
        self.results.fits(loss)  # raises ValueError on an unknown metric
        self.loss = loss
        if self._widget is not None:
            self._refresh()
        return self

    def figures(self) -> dict[str, go.Figure]:
        return {"loss": loss_figure(self.results, self.loss), "optimum": optimum_figure(self.results, self.loss),
                "dead": dead_figure(self.results)}

    def table_html(self) -> str:
        f = self.fits
        rows = []
        for row in f.table():
            exp = row["exponent"]
            rows.append([row["law"], "n/a" if exp is None else f"{exp:.3f}", _fmt_ci(row["ci"]),
                         _fmt_ci(row["bootstrap_ci"]), row["n"]])
        note = (f"metric: {f.loss_key}; {len(self.results.runs)} runs; frontier fitted on the {f.basis} "
                f"({len(f.frontier)} points); {int(round(f.confidence * 100))}% intervals")
        return (f'<div><b>fitted laws</b> <span class="wb-muted">{H.escape(note)}</span>'
                + H.table(["law", "exponent", "CI (fit)", "CI (bootstrap)", "points"], rows) + "</div>")

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        figs = self.figures()
        parts = self.figures_html([figs[k] for k in ("loss", "optimum", "dead")], include_plotlyjs)
        grid = "".join(f'<div style="flex:1;min-width:360px">{p}</div>' for p in parts)
        return (f"<h3>Scaling laws</h3>{self.table_html()}"
                f'<div style="display:flex;gap:8px;flex-wrap:wrap">{grid}</div>')

    def plain_text(self) -> str:
        return f"ScalingView: {len(self.results.runs)} runs, laws fitted on {self.loss}"

    # ----- widget -----

    def _refresh(self) -> None:
        import ipywidgets as W

        figs = self.figures()
        self._table.value = f"<style>{H.STYLE}</style>{self.table_html()}"
        self._plots.children = [W.Box([self.figure_output(figs[k])]) for k in ("loss", "optimum", "dead")]

    def _build_widget(self):
        import ipywidgets as W

        self._table = W.HTML()
        self._plots = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        choose = W.Dropdown(options=list(LOSS_KEYS), value=self.loss, description="metric")
        choose.observe(lambda ch: self.set_loss(ch["new"]), names="value")
        box = W.VBox([choose, self._table, self._plots])
        self._refresh()
        return box
