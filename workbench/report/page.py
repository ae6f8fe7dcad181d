"""A single self-contained HTML report of one SAE, in the order a reader should meet it (docs/methods.md §22):
metrics and the feature-density histogram, the concept-probing table (when given), the explainer-F1 scorecard
(when given; token predictability), then the lead (cards of the features that carry a concept, ranked by
:func:`~workbench.analysis.reading_order.reading_order`), the single-token-type detectors (counts per kind and a
compact list) and a seeded random sample of alive features (small cards). Plotly is inlined once; the file opens
offline in any browser.

    from workbench.report.page import write_report
    write_report("runs/report.html", results, metrics.to_dict(), explanations=expl, scorecard=card, store=store,
                 concept_scores=probe_scores, probing={"rows": [...], "note": "..."})

:func:`rank_features` (held-out explainer F1, special-token detectors skipped) remains for callers that want the
features a token explainer predicts best; the report no longer leads with it, since F1 rewards single-token
detectors.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import plotly.graph_objects as go
import torch

from workbench.core.protocols import StoreLike
from workbench.analysis.feature_traits import special_token_features
from workbench.analysis.reading_order import ReadingOrder, ReadingOrderConfig, reading_order
from workbench.analysis.scorecard import KIND_NAMES, Scorecard
from workbench.core.persist import atomic_write_text
from workbench.report import html as H
from workbench.analysis.bundle import unpack
from workbench.report.card import StaticFeatureCard
from workbench.sae.evaluate import density_histogram

__all__ = ["FeatureRanking", "density_figure", "detectors_html", "metrics_rows", "pick_features", "probing_html",
           "rank_features", "scorecard_figure", "scorecard_html", "write_report"]

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
# Concept probing, the lead, the detectors, the sample
# ----------------------------------------------------------------------------------------------------------------

DETECTOR_HELP = {"special": "BOS/EOS/padding tokens", "position": "the first token(s) of a context or document",
                 "whitespace": "spaces, newlines", "punctuation": "brackets, hyphens, quotes, commas, symbols",
                 "number": "digits", "token": "one token string (up to case and spaces)"}


def probing_html(probing: Mapping[str, Any]) -> str:
    """The concept-probing table: ``probing["rows"]`` (mappings; the columns are their keys, in first-seen order)
    and an optional ``probing["note"]``."""
    if not isinstance(probing, Mapping) or not isinstance(probing.get("rows"), (list, tuple)):
        raise ValueError("probing must be a mapping {'rows': [{column: value, ...}, ...], 'note': '...'}, got "
                         f"{type(probing).__name__}")
    rows = list(probing["rows"])
    if not all(isinstance(r, Mapping) for r in rows):
        raise ValueError("probing['rows'] must hold one mapping {column: value} per row")
    cols: list[str] = []
    for r in rows:
        cols += [str(k) for k in r if str(k) not in cols]

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else ("–" if v is None else v)

    table = H.table(cols, [[cell(r.get(c)) for c in cols] for r in rows]) if rows else "<p>no probing rows</p>"
    note = probing.get("note")
    return table + (f'<p class="wb-muted">{H.escape(note)}</p>' if note else "")


def _evidence_note(order: ReadingOrder, i: int) -> str:
    row = order.evidence.row(i)
    parts = [f"concept evidence {row['score']:.2f}", f"{row['types']} distinct tokens"]
    if "languages" in row:
        parts.append(f"{row['languages']} language(s)")
    parts.append(f"{row['documents']} {'documents' if order.evidence.documents_from == 'store' else 'contexts'}")
    if "agreement" in row:
        parts.append(f"reads/writes agreement {row['agreement']:.2f}")
    if "concept" in row:
        parts.append(f"concept signal {row['concept']:.2f}")
    kind = order.detectors.kinds[i]
    if kind:
        parts.append(f"a {kind} detector")
    return ", ".join(parts)


def detectors_html(order: ReadingOrder, results, per_kind: int = 10) -> str:
    """Detector counts per kind and, per kind, the ``per_kind`` features of largest max activation: feature,
    kind, dominant token, share of examples, density."""
    det = order.detectors
    n = sum(det.counts.values())
    counts = H.table(["kind", "features", "of alive", "fires mostly on"],
                     [[k, c, _pct(c / max(1, det.n_alive)), DETECTOR_HELP.get(k, "")] for k, c in det.counts.items()])
    mx = results.max_activation
    rows = []
    for kind in det.counts:
        feats = sorted(det.features(kind), key=lambda i: (-float(mx[i]), i))
        rows += [[i, kind, repr(det.dominant[i]), f"{float(det.share[i]):.0%}", f"{float(results.density[i]):.3g}"]
                 for i in feats[:per_kind]]
        if len(feats) > per_kind:
            rows.append(["…", kind, f"{len(feats) - per_kind} more", "", ""])
    listing = (H.table(["feature", "kind", "dominant token", "share", "density"], rows) if rows else "")
    return (f"<p>{n} of {det.n_alive} alive features ({_pct(n / max(1, det.n_alive))}) are single-token-type "
            f"detectors: left out of the lead, listed here (per kind, largest max activation first).</p>"
            f'<div class="wb-row"><div class="wb-side">{counts}</div><div class="wb-side">{listing}</div></div>')


def _cards(results, feats, explanations, order: ReadingOrder, **kwargs) -> str:
    return "".join(StaticFeatureCard.from_results(results, i, explanations, note=_evidence_note(order, i), **kwargs)
                   .to_html(include_plotlyjs=False) for i in feats)


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------


def write_report(path: str | Path, results, sae_metrics: Mapping[str, Any], explanations=None, n_features: int = 12,
                 title: str = "SAE report", *, features: list[int] | None = None, max_density: float = 0.01,
                 scorecard: Scorecard | str | Path | None = None, skip_special: bool = True,
                 min_heldout_firing: int = 5, tokenizer=None, probing: Mapping[str, Any] | None = None,
                 store: StoreLike | None = None, concept_scores: Mapping[int, float] | None = None,
                 order_config: ReadingOrderConfig | None = None, n_sample: int | None = None) -> Path:
    """Write the report to ``path`` (a .html file; folders are created) and return the path.

    Sections, in order: SAE metrics and density; concept probing (``probing``, see :func:`probing_html`); the
    explainer-F1 scorecard (``scorecard``: a :class:`~workbench.analysis.scorecard.Scorecard` or the path of its
    JSON); the lead, ``n_features`` cards of the features that carry a concept
    (:func:`~workbench.analysis.reading_order.reading_order` with ``store``, ``concept_scores`` and
    ``order_config``, whose max_density ``max_density`` replaces); the detectors (counts and a compact list); a
    seeded random sample of ``n_sample`` alive features (default ``order_config.sample_size``) as small cards.

    ``sae_metrics``: e.g. ``evaluate_activations(...).to_dict()`` plus downstream metrics; ``features`` replaces
    the lead by those features; ``explanations`` label the cards. ``skip_special`` and ``min_heldout_firing``
    only matter to :func:`rank_features` (the F1 ranking), which the report no longer uses. ``results`` may be an
    :class:`~workbench.analysis.bundle.AnalysisBundle`: its explanations and store are used, and its model's
    tokenizer.
    """
    parts = unpack(results, explanations=explanations, store=store)
    results, explanations, store = parts["results"], parts["explanations"], parts["store"]
    if tokenizer is None and parts.get("model") is not None:
        tokenizer = getattr(parts["model"], "tokenizer", None)
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the report is one HTML file: give a path ending in .html, got {str(path)!r}")
    if scorecard is not None and not isinstance(scorecard, Scorecard):
        scorecard = Scorecard.load(scorecard)
    probing_section = (f"<h2>Concept probing</h2>{probing_html(probing)}" if probing is not None else "")
    sampled: dict[str, Any] = {} if n_sample is None else {"sample_size": int(n_sample)}
    cfg = replace(order_config or ReadingOrderConfig(), max_density=max_density, **sampled)
    order = reading_order(results, store=store, concept_scores=concept_scores, config=cfg, tokenizer=tokenizer)
    if features is not None:
        feats = [results.check_index(i) for i in features]
        shown = f"{len(feats)} chosen features."
    else:
        feats = order.lead[:n_features]
        comps = [c for c, v in order.evidence.components.items() if v is not None and getattr(cfg, f"w_{c}") > 0]
        shown = (f"{len(feats)} of {len(order.lead)} candidates: alive features with density ≤ {cfg.max_density:g} "
                 f"and ≥ {cfg.min_examples} top examples that are no single-token-type detector, ranked by concept "
                 f"evidence (weighted mean of {', '.join(comps)}; docs/methods.md §22). Left out: "
                 f"{sum(order.detectors.counts.values())} detectors, {order.n_dense} denser features, {order.n_few} "
                 f"with too few examples, of {order.n_alive} alive.")
    rows = metrics_rows(dict(sae_metrics))
    alive = int(results.alive().numel())
    summary = [("features", results.d_sae), ("alive in analysis", alive), ("tokens analysed", results.n_tokens),
               ("hook", results.meta.get("hook", ""))]
    card_section = ("<h2>Explainer F1 (token predictability)</h2><p class=\"wb-muted\">How well an offline token "
                    "n-gram explainer predicts where each unit fires on held-out text. It rewards single-token "
                    "detectors, so it does not decide which features the report shows first.</p>"
                    f"{scorecard_html(scorecard)}" if scorecard is not None else "")
    cards = _cards(results, feats, explanations, order)
    sample = _cards(results, order.sample, explanations, order, n_examples=5, n_bucket_examples=0)
    body = (f"<h1>{H.escape(title)}</h1>"
            f"<h2>SAE metrics</h2>{H.table(['metric', 'value'], rows + summary)}"
            f"<h2>Feature density</h2>{H.figure_html(density_figure(results.density), False)}"
            f"{probing_section}{card_section}"
            f"<h2>Features that carry a concept</h2><p class=\"wb-muted\">{H.escape(shown)}</p>"
            f"{cards or '<p>no features to show</p>'}"
            f"<h2>Detectors</h2>{detectors_html(order, results)}"
            f"<h2>A random sample of features</h2><p class=\"wb-muted\">{len(order.sample)} alive features drawn "
            f"uniformly (seed {cfg.sample_seed}), whatever their kind or score: what a typical feature looks "
            f"like.</p>{sample or '<p>no alive features</p>'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, H.page(title, body))
    return path
