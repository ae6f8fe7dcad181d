"""A single self-contained HTML report of one SAE: metrics table, log10 feature-density histogram, and the
feature cards of its most interesting features (plotly inlined once; opens offline in any browser).

    from workbench.report.page import write_report
    write_report("runs/report.html", results, metrics.to_dict(), explanations=expl)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import plotly.graph_objects as go
import torch

__all__ = ["density_figure", "metrics_rows", "pick_features", "write_report"]


def metrics_rows(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar entries of a (nested) metrics dict as (name, value); lists, tensors and histograms are skipped."""
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if "bin_edges" in value or "counts" in value:
                continue
            rows += metrics_rows(value, name + ".")
        elif isinstance(value, (bool, int, float, str)) or value is None:
            rows.append((name, value))
    return rows


def density_figure(density: torch.Tensor, bins: int = 40) -> go.Figure:
    """Histogram of log10(feature density) over alive features; the dead count is in the title."""
    from workbench.sae.evaluate import density_histogram

    h = density_histogram(density.to(torch.float32), bins=bins)
    edges = h["bin_edges"]
    fig = go.Figure(go.Bar(x=[(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])], y=h["counts"],
                           width=[b - a for a, b in zip(edges[:-1], edges[1:])], marker_color="#4c78a8"))
    fig.update_layout(height=260, bargap=0, margin=dict(l=40, r=10, t=30, b=40), xaxis_title="log10 density",
                      yaxis_title="features",
                      title=dict(text=f"feature density ({h['n_dead']} dead features not shown)", font=dict(size=13)))
    return fig


def pick_features(results, explanations=None, n: int = 12, max_density: float = 0.01) -> list[int]:
    """The features worth a card: alive ones firing on at most ``max_density`` of tokens (dense features are rarely
    interpretable), ranked by held-out explanation F1 where scored, then by max activation."""
    dens = results.density
    cand = [i for i in results.alive().tolist() if float(dens[i]) <= max_density]
    mx = results.max_activation

    def f1(i: int) -> float:
        unit = explanations[i] if explanations is not None and i in explanations else None
        s = getattr(unit, "score", None)
        return float(s.f1) if s is not None and s.n_firing > 0 else -1.0

    return sorted(cand, key=lambda i: (-f1(i), -float(mx[i]), i))[:n]


def write_report(path: str | Path, results, sae_metrics: Mapping[str, Any], explanations=None, n_features: int = 12,
                 title: str = "SAE report", *, features: list[int] | None = None, max_density: float = 0.01) -> Path:
    """Write the report to ``path`` (a .html file; folders are created) and return the path.

    ``sae_metrics``: e.g. ``evaluate_activations(...).to_dict()`` plus downstream metrics; ``features`` overrides
    the choice of :func:`pick_features`.
    """
    from workbench.report import html as H
    from workbench.report.card import FeatureCard

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the report is one HTML file: give a path ending in .html, got {str(path)!r}")
    feats = [results.check_index(i) for i in features] if features is not None else pick_features(
        results, explanations, n_features, max_density)
    rows = metrics_rows(dict(sae_metrics))
    alive = int(results.alive().numel())
    summary = [("features", results.d_sae), ("alive in analysis", alive), ("tokens analysed", results.n_tokens),
               ("hook", results.meta.get("hook", ""))]
    how = ("ranked by held-out explanation F1, then max activation" if explanations is not None
           else "ranked by max activation")
    cards = "".join(FeatureCard.from_results(results, i, explanations).to_html(include_plotlyjs=False)
                    for i in feats)
    body = (f"<h1>{H.escape(title)}</h1>"
            f"<h2>SAE metrics</h2>{H.table(['metric', 'value'], rows + summary)}"
            f"<h2>Feature density</h2>{H.figure_html(density_figure(results.density), False)}"
            f"<h2>Features</h2><p class=\"wb-muted\">{len(feats)} alive features with density ≤ {max_density:g}, "
            f"{how}.</p>{cards or '<p>no features to show</p>'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(H.page(title, body), encoding="utf-8")
    os.replace(tmp, path)
    return path
