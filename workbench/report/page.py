"""A single self-contained HTML report of one SAE: metrics table, log10 feature-density histogram, the
interpretability scorecard (when given) and the feature cards of its most readable features (plotly inlined once;
opens offline in any browser).

    from workbench.report.page import write_report
    write_report("runs/report.html", results, metrics.to_dict(), explanations=expl, scorecard=card)

Which features get a card (:func:`rank_features`): alive ones no denser than ``max_density``, minus special-token
detectors (top examples mostly BOS/EOS/padding or whitespace; the report says how many it skipped), ranked by the
held-out F1 of their explanation (scored on at least ``min_heldout_firing`` held-out tokens), then by max activation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import plotly.graph_objects as go
import torch

from workbench.analysis.feature_traits import special_token_features
from workbench.analysis.scorecard import KIND_NAMES, Scorecard
from workbench.core.persist import atomic_write_text
from workbench.report import html as H
from workbench.report.card import FeatureCard
from workbench.sae.evaluate import density_histogram

__all__ = ["FeatureRanking", "density_figure", "metrics_rows", "pick_features", "rank_features", "scorecard_figure",
           "scorecard_html", "write_report"]

SCORECARD_FIG_WIDTH = 560


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
    h = density_histogram(density.to(torch.float32), bins=bins)
    edges = h["bin_edges"]
    fig = go.Figure(go.Bar(x=[(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])], y=h["counts"],
                           width=[b - a for a, b in zip(edges[:-1], edges[1:])], marker_color="#4c78a8"))
    fig.update_layout(height=260, bargap=0, margin=dict(l=40, r=10, t=30, b=40), xaxis_title="log10 density",
                      yaxis_title="features",
                      title=dict(text=f"feature density ({h['n_dead']} dead features not shown)", font=dict(size=13)))
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Which features to show
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FeatureRanking:
    """The features a report shows, best first, and what was left out: ``n_candidates`` alive features with density
    <= max_density, ``special`` the special-token detectors among them (skipped when ``skip_special``),
    ``n_special_alive`` such detectors among all alive features, ``n_scored`` candidates ranked by held-out F1."""

    features: list[int]
    n_candidates: int
    special: list[int] = field(default_factory=list)
    n_special_alive: int = 0
    n_alive: int = 0
    n_scored: int = 0
    skip_special: bool = True


def _score(explanations, i: int):
    unit = explanations[i] if explanations is not None and i in explanations else None
    return getattr(unit, "score", None)


def rank_features(results, explanations=None, n: int = 12, max_density: float = 0.01, *, skip_special: bool = True,
                  min_heldout_firing: int = 5, tokenizer=None, special: torch.Tensor | None = None
                  ) -> FeatureRanking:
    """The features worth a card (see the module docstring) with the counts the report states.

    ``special``: a precomputed bool [d_sae] of special-token detectors (default
    :func:`~workbench.analysis.feature_traits.special_token_features` from the results' token strings and
    ``tokenizer``). Features whose explanation was scored on fewer than ``min_heldout_firing`` firing held-out
    tokens (an F1 from a handful of tokens is luck) rank after the scored ones, by max activation.
    """
    dens, mx = results.density, results.max_activation
    alive = results.alive().tolist()
    flags = special if special is not None else special_token_features(results, tokenizer=tokenizer)
    cand = [i for i in alive if float(dens[i]) <= max_density]
    spec = [i for i in cand if bool(flags[i])]
    if skip_special:
        cand = [i for i in cand if not bool(flags[i])]

    def key(i: int):
        s = _score(explanations, i)
        if s is not None and s.n_firing >= max(1, min_heldout_firing):
            return (0, -float(s.f1), -int(s.n_firing), -float(mx[i]), i)
        return (1, 0.0, 0, -float(mx[i]), i)

    ranked = sorted(cand, key=key)
    n_scored = sum(1 for i in cand if key(i)[0] == 0)
    return FeatureRanking(ranked[:n], len(cand) + (len(spec) if skip_special else 0), spec,
                          int(sum(bool(flags[i]) for i in alive)), len(alive), n_scored, skip_special)


def pick_features(results, explanations=None, n: int = 12, max_density: float = 0.01, **kwargs) -> list[int]:
    """The features worth a card, best first (:func:`rank_features`, which also says what it skipped)."""
    return rank_features(results, explanations, n, max_density, **kwargs).features


# ----------------------------------------------------------------------------------------------------------------
# The scorecard section
# ----------------------------------------------------------------------------------------------------------------

_KIND_COLOURS = {"features": "#e4572e", "neurons": "#4c78a8", "random": "#9e9e9e"}


def scorecard_figure(card: Scorecard) -> go.Figure:
    """Histograms of held-out explanation F1, one bar group per unit kind (fractions of the scored units)."""
    fig = go.Figure()
    for kind, s in card.f1_stats(int(card.meta.get("f1_bins", 10))).items():
        edges, counts = s["hist_edges"], s["hist_counts"]
        total = max(1, sum(counts))
        fig.add_bar(x=[(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])], y=[c / total for c in counts],
                    name=KIND_NAMES.get(kind, kind), marker_color=_KIND_COLOURS.get(kind),
                    hovertemplate="F1 %{x:.2f}: %{y:.0%}<extra>" + KIND_NAMES.get(kind, kind) + "</extra>")
    fig.update_layout(barmode="group", height=300, width=SCORECARD_FIG_WIDTH, autosize=False,
                      margin=dict(l=50, r=10, t=30, b=80), xaxis=dict(title="held-out F1", range=[0, 1]),
                      yaxis=dict(title="fraction of units", tickformat=".0%"),
                      legend=dict(orientation="h", yanchor="top", y=-0.25, x=0), title=None)
    return fig


def _pct(v) -> str:
    return "–" if v is None else f"{v:.1%}"


def scorecard_html(card: Scorecard) -> str:
    """The scorecard's summary table (features vs neurons vs random directions), its F1 histogram and the
    special-token and language lines, as an HTML fragment (plotly must be loaded by the page)."""
    rows = [[name, n, sc, *("–" if v is None else f"{v:.3f}" for v in (med, q1, q3, mean))]
            for name, n, sc, med, q1, q3, mean in card.table_rows()]
    table = H.table(["units", "n", "scored", "median F1", "Q1", "Q3", "mean F1"], rows)
    m, sp, lg = card.meta, card.special, card.languages
    how = (f"Same explainer ({H.escape(m.get('explainer', ''))}) for every unit, fitted on "
           f"{m.get('n_train_tokens', '?')} training tokens ({m.get('n_train_contexts', '?')} contexts), scored on "
           f"{m.get('n_heldout_tokens', '?')} held-out tokens ({H.escape(m.get('heldout', ''))}). Neurons: MLP layer(s) "
           f"{H.escape(', '.join(map(str, m.get('neuron_layers') or [])) or '–')}; neurons and random residual directions are thresholded to "
           f"fire at the sampled features' densities.")
    lines = [f"special-token/whitespace detectors: {sp.get('n_alive', 0)} of {sp.get('n_alive_features', 0)} alive "
             f"features ({_pct(sp.get('fraction_alive'))})"]
    if lg is None:
        lines.append("languages: the corpus records none per document")
    else:
        share = ", ".join(f"{k} {v:.0%}" for k, v in lg.get("token_share", {}).items())
        lines.append(f"features firing in ≥ {lg.get('min_languages', 2)} languages among their top examples: "
                     f"{_pct(lg.get('fraction_alive'))} of alive features (tokens analysed: {H.escape(share)})")
    return (f'<div class="wb-row"><div class="wb-side">{table}'
            + "".join(f"<div>{H.escape(t)}</div>" for t in lines)
            + f'<p class="wb-muted">{how}</p></div>'
            f'<div class="wb-fig" style="width:{SCORECARD_FIG_WIDTH}px">{H.figure_html(scorecard_figure(card), False)}'
            f"</div></div>")


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------


def write_report(path: str | Path, results, sae_metrics: Mapping[str, Any], explanations=None, n_features: int = 12,
                 title: str = "SAE report", *, features: list[int] | None = None, max_density: float = 0.01,
                 scorecard: Scorecard | str | Path | None = None, skip_special: bool = True,
                 min_heldout_firing: int = 5, tokenizer=None) -> Path:
    """Write the report to ``path`` (a .html file; folders are created) and return the path.

    ``sae_metrics``: e.g. ``evaluate_activations(...).to_dict()`` plus downstream metrics; ``features`` overrides
    the choice of :func:`rank_features`; ``scorecard``: a :class:`~workbench.analysis.scorecard.Scorecard` (or the
    path of its JSON) whose summary table the report shows.
    """
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the report is one HTML file: give a path ending in .html, got {str(path)!r}")
    if scorecard is not None and not isinstance(scorecard, Scorecard):
        scorecard = Scorecard.load(scorecard)
    if features is not None:
        feats = [results.check_index(i) for i in features]
        shown = f"{len(feats)} chosen features."
    else:
        rk = rank_features(results, explanations, n_features, max_density, skip_special=skip_special,
                           min_heldout_firing=min_heldout_firing, tokenizer=tokenizer)
        feats = rk.features
        how = (f"ranked by held-out explanation F1 ({rk.n_scored} scored on ≥ {min_heldout_firing} firing held-out "
               f"tokens), then by max activation" if rk.n_scored else
               "ranked by max activation (no held-out explanation scores were given)")
        listed = ", ".join(map(str, rk.special[:20])) + (", …" if len(rk.special) > 20 else "")
        skipped = (f" Skipped as special-token/whitespace detectors: {len(rk.special)}"
                   + (f" (features {listed})" if rk.special else "")
                   + f"; such detectors are {rk.n_special_alive} of all {rk.n_alive} alive features."
                   if rk.skip_special else "")
        shown = (f"{len(feats)} of {rk.n_candidates} alive features with density ≤ {max_density:g}, {how}."
                 + skipped)
    rows = metrics_rows(dict(sae_metrics))
    alive = int(results.alive().numel())
    summary = [("features", results.d_sae), ("alive in analysis", alive), ("tokens analysed", results.n_tokens),
               ("hook", results.meta.get("hook", ""))]
    cards = "".join(FeatureCard.from_results(results, i, explanations).to_html(include_plotlyjs=False)
                    for i in feats)
    card_section = (f"<h2>Interpretability scorecard</h2>{scorecard_html(scorecard)}" if scorecard is not None
                    else "")
    body = (f"<h1>{H.escape(title)}</h1>"
            f"<h2>SAE metrics</h2>{H.table(['metric', 'value'], rows + summary)}"
            f"<h2>Feature density</h2>{H.figure_html(density_figure(results.density), False)}"
            f"{card_section}"
            f"<h2>Features</h2><p class=\"wb-muted\">{H.escape(shown)}</p>{cards or '<p>no features to show</p>'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, H.page(title, body))
    return path
