"""The multilingual study of notebook 06: the standard SAE over two parallel probe sets, and the tables it reports.

    study = multilingual_study(threads=1)         # standard_sae() of $WORKBENCH_PROFILE, both probe sets run
    carriers = headline_carriers(study.probes, k=10, results=study.results)
    overlap = overlap_table(study.probes)         # rows: probe set, ranking, k, matched / baseline / p
    depth = depth_table(study.probes)             # rows: probe set, centring, layer, residual cosines / retrieval
    print("\\n".join(study.summary(overlap, depth, carriers)))

The probe sets (:mod:`workbench.analysis.multilingual_probes`): ``"wiki"``, the first sentences of the curated
parallel articles in en / es / fr, and ``"concepts"``, the hand-written sentences in six languages. The measures
are :mod:`workbench.analysis.multilingual`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from workbench.analysis.features import FeatureResults
from workbench.analysis.multilingual import (Carrier, concept_carrier, feature_scores, residual_similarity,
                                             topk_overlap)
from workbench.analysis.multilingual_probes import (ProbeActivations, concept_probe_groups, probe_activations,
                                                    wiki_probe_groups)
from workbench.data.hooks import hook_layer
from workbench.studies.profile import StandardSAE, standard_sae

__all__ = ["HEADLINE_GROUPS", "MultilingualStudy", "depth_table", "headline_carriers", "multilingual_study",
           "overlap_table", "summary_lines"]

# The group of each probe set that asks the paper's headline question: one feature for the Golden Gate Bridge?
HEADLINE_GROUPS: dict[str, str] = {"wiki": "Golden Gate Bridge", "concepts": "golden_gate"}
HOWS = ("mean", "specific")


def headline_carriers(probes: Mapping[str, ProbeActivations], k: int = 10, *, results: FeatureResults | None = None,
                      hows: Sequence[str] = HOWS,
                      groups: Mapping[str, str] = HEADLINE_GROUPS) -> list[Carrier]:
    """The best single-feature carrier (:func:`~workbench.analysis.multilingual.concept_carrier`) of the headline
    group of every probe set in ``probes`` that has one, under each ranking in ``hows``."""
    return [concept_carrier(p, groups[name], k=k, how=how, results=results)
            for name, p in probes.items() if name in groups for how in hows]


def overlap_table(probes: Mapping[str, ProbeActivations], ks: Sequence[int] = (5, 10, 20),
                  hows: Sequence[str] = HOWS) -> list[dict]:
    """One row per (probe set, ranking, k): the top-k overlap of translations against the shuffled-pairs baseline
    (:func:`~workbench.analysis.multilingual.topk_overlap`)."""
    rows = []
    for name, p in probes.items():
        for how in hows:
            scores = feature_scores(p.feature_acts(), how)
            for k in ks:
                r = topk_overlap(scores, p.languages, k, names=p.names)
                rows.append({"probes": name, "ranking": how, "k": k, "matched": r.matched, "baseline": r.baseline,
                             "ratio": r.ratio, "p": r.p_value})
    return rows


def depth_table(probes: Mapping[str, ProbeActivations], centers: Sequence[str] = ("all", "language")) -> list[dict]:
    """One row per (probe set, centring, layer): the residual cosine of translations (``matched``) and mismatched
    pairs (``baseline``) and the nearest-translation ``retrieval``
    (:func:`~workbench.analysis.multilingual.residual_similarity`)."""
    rows = []
    for name, p in probes.items():
        for center in centers:
            s = residual_similarity(p, center=center)
            rows += [{"probes": name, "center": center, "layer": layer, "matched": m, "baseline": b, "retrieval": t}
                     for layer, m, b, t in zip(s.layers, s.matched, s.baseline, s.retrieval)]
    return rows


def summary_lines(overlap: Sequence[dict], depth: Sequence[dict], carriers: Sequence[Carrier], *,
                  sae_layer: int | None, k: int = 10) -> list[str]:
    """The study's findings in words: the top-``k`` overlap under the specific ranking, the headline carriers, and
    per probe set the layer where translations are retrieved best (centre "all") against the SAE's layer."""
    lines = []
    for r in overlap:
        if r["ranking"] == "specific" and r["k"] == k:
            lines.append(f"top-{k} overlap ({r['probes']}, specific): {r['matched']:.3f} vs shuffled "
                         f"{r['baseline']:.3f} (x{r['ratio']:.1f}, p={r['p']:.3g})")
    lines += [c.describe() for c in carriers]
    for name in dict.fromkeys(r["probes"] for r in depth):
        rows = [r for r in depth if r["probes"] == name and r["center"] == "all"]
        if not rows:
            continue
        best = max(rows, key=lambda r: r["retrieval"])  # the first layer on ties
        line = f"residual retrieval ({name}): best at layer {best['layer']} ({best['retrieval']:.2f})"
        at_sae = [r["retrieval"] for r in rows if r["layer"] == sae_layer]
        if at_sae:
            line += f"; at the SAE layer {at_sae[0]:.2f}"
        lines.append(line)
    return lines


@dataclass
class MultilingualStudy:
    """What :func:`multilingual_study` ran: the standard SAE, its feature results (for cards and densities) and the
    probe activations of each probe set (``"wiki"``, ``"concepts"``)."""

    standard: StandardSAE
    results: FeatureResults
    probes: dict[str, ProbeActivations]

    @property
    def sae_layer(self) -> int | None:
        return hook_layer(self.standard.hook)

    def summary(self, overlap: Sequence[dict], depth: Sequence[dict], carriers: Sequence[Carrier],
                k: int = 10) -> list[str]:
        """:func:`summary_lines`, headed by the SAE it describes."""
        sae, prof = self.standard.sae, self.standard.profile
        head = f"SAE: {prof.name} profile, {sae.cfg.architecture} d_sae={sae.cfg.d_sae} k={sae.cfg.k} at " \
               f"{self.standard.hook}"
        return [head, *summary_lines(overlap, depth, carriers, sae_layer=self.sae_layer, k=k)]


def multilingual_study(standard: StandardSAE | None = None, *, threads: int | None = 1) -> MultilingualStudy:
    """Run the probe sets through ``standard`` (default :func:`~workbench.studies.profile.standard_sae` of the current
    profile): mean SAE activations per text and mean residuals at every layer. The feature results are the standard
    SAE's cached feature pass. ``threads``: torch CPU threads for the probe passes (small batches: 1 is fastest on
    a shared CPU; None leaves them unchanged)."""
    std = standard if standard is not None else standard_sae()
    groups = {"wiki": wiki_probe_groups(), "concepts": concept_probe_groups()}
    probes = {name: probe_activations(std.model, std.sae, g, progress=std.profile.progress, threads=threads)
              for name, g in groups.items()}
    results = std.features()
    assert isinstance(results, FeatureResults)  # the standard study holds one SAE
    return MultilingualStudy(standard=std, results=results, probes=probes)
