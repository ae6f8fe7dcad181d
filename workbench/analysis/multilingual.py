"""Multilingual features: whether the same SAE features carry the same content in several languages.

The probes (parallel texts, and the model pass that averages SAE activations and residuals per text) are
:mod:`workbench.analysis.multilingual_probes`; this module holds the measures on a
:class:`~workbench.analysis.multilingual_probes.ProbeActivations` (docs/methods.md §10):

- :func:`shared_top_features`: the features whose mean activation ranks in the top ``k`` in *every* language of a
  group (the paper's test: the Golden Gate feature was the top feature by mean activation in each language);
- :func:`topk_overlap`: the overlap of the top-k feature sets of the same group in two languages, against the
  shuffled-pairs baseline (group g in one language against a different group g' in the other), with a
  permutation p-value;
- :func:`overlap_by_layer` (one SAE per layer) and :func:`residual_similarity` (no SAE needed): how cross-lingual
  sharing varies with depth, the latter as the cosine of mean residuals of translations against mismatched pairs.

``how="specific"`` (see :func:`feature_scores`) subtracts each feature's mean over the *other* groups in the same
language before ranking, so that features that fire on every text (position, "prose", language identity) do not
fill every top-k set; ``how="mean"`` is the paper's raw mean activation.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from workbench.analysis.multilingual_probes import (CONCEPT_SENTENCES, LANGUAGE_NAMES, WIKI_PARALLEL_TITLES,
                                                    ProbeActivations, ProbeGroup, concept_probe_groups,
                                                    first_sentence, probe_activations, shared_title_groups,
                                                    wiki_probe_groups)
from workbench.data.hooks import hook_layer

__all__ = [
    "CENTERS",
    "SCORES",
    "Carrier",
    "LayerSimilarity",
    "OverlapResult",
    "SharedFeature",
    "concept_carrier",
    "feature_scores",
    "overlap_by_layer",
    "residual_similarity",
    "top_k_frequency",
    "topk_overlap",
]

# Also importable from here, where they lived before the probes got their own module (the workbench 0.1 path
# ``workbench.multilingual`` aliases this module): owned by multilingual_probes.py.
_MOVED = (CONCEPT_SENTENCES, LANGUAGE_NAMES, WIKI_PARALLEL_TITLES, ProbeGroup, concept_probe_groups, first_sentence,
          probe_activations, shared_title_groups, wiki_probe_groups)

SCORES = ("mean", "specific")


def feature_scores(acts: Tensor, how: str = "mean") -> Tensor:
    """Scores [G, L, d] to rank features by, from mean activations ``acts`` [G, L, d].

    ``"mean"``: the activations themselves. ``"specific"``: minus each feature's mean over the other groups in the
    same language (leave-one-out), so a feature that is as active on every text scores 0.
    """
    if acts.dim() != 3:
        raise ValueError(f"acts must be [n_groups, n_languages, d_sae], got shape {tuple(acts.shape)}")
    if how == "mean":
        return acts
    if how == "specific":
        G = acts.shape[0]
        if G < 2:
            raise ValueError("how='specific' needs at least two groups (it subtracts the other groups' mean)")
        others = (acts.sum(0, keepdim=True) - acts) / (G - 1)
        return acts - others
    raise ValueError(f"how must be one of {', '.join(SCORES)}, got {how!r}")


def _ranks(scores: Tensor) -> Tensor:
    """0-based descending rank of every entry along the last dim; entries <= 0 get rank = size (never top)."""
    d = scores.shape[-1]
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(d).expand_as(order).contiguous())
    return torch.where(scores > 0, ranks, torch.full_like(ranks, d))


@dataclass
class SharedFeature:
    """A feature in the top ``k`` of every language: its rank (0 = top) and score per language."""

    feature: int
    worst_rank: int
    ranks: dict[str, int]
    scores: dict[str, float]


def shared_top_features(scores: Tensor, languages: Sequence[str], k: int = 10) -> list[SharedFeature]:
    """Features ranked in the top ``k`` in every language of one group; ``scores`` [n_languages, d].

    Sorted by worst rank across languages, then by the mean score. The first entry is the best candidate for "one
    feature carries this content in every language"; an empty list means no feature makes the top ``k`` everywhere.
    """
    if scores.dim() != 2 or scores.shape[0] != len(languages):
        raise ValueError(f"scores must be [n_languages={len(languages)}, d], got shape {tuple(scores.shape)}")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    ranks = _ranks(scores)
    worst = ranks.max(0).values
    keep = (worst < k).nonzero().flatten().tolist()
    mean = scores.mean(0)
    keep.sort(key=lambda i: (int(worst[i]), -float(mean[i])))
    return [SharedFeature(i, int(worst[i]), {lang: int(ranks[j, i]) for j, lang in enumerate(languages)},
                          {lang: float(scores[j, i]) for j, lang in enumerate(languages)}) for i in keep]


def top_k_frequency(scores: Tensor, k: int = 10) -> Tensor:
    """[d]: the fraction of all texts (every group and language of ``scores`` [G, L, d]) in whose top ``k`` each
    feature ranks. A feature in the top k of most texts is generic (position, prose, a language), not a concept."""
    if scores.dim() != 3:
        raise ValueError(f"scores must be [n_groups, n_languages, d], got shape {tuple(scores.shape)}")
    return (_ranks(scores) < k).double().mean(dim=(0, 1))


@dataclass
class Carrier:
    """The feature that comes closest to carrying one group's content in every language.

    ``feature``: the feature with the best worst-rank across languages (by ``how``); ``ranks`` its rank per language
    (0 = top); ``shared``: whether it is in the top ``k`` everywhere; ``generality``: the fraction of *all* probe
    texts in whose top ``k`` it ranks (near 1: it fires on everything, so it does not carry this content);
    ``density``: the fraction of corpus tokens it fires on (given the feature results), the plainest sign of a
    generic feature.
    """

    group: str
    how: str
    k: int
    feature: int
    ranks: dict[str, int]
    shared: bool
    generality: float
    density: float | None = None

    def describe(self) -> str:
        ranks = ", ".join(f"{lang} #{r + 1}" for lang, r in self.ranks.items())
        verdict = (f"in the top {self.k} of every language" if self.shared
                   else f"not in the top {self.k} of every language")
        density = f"; fires on {self.density:.2%} of corpus tokens" if self.density is not None else ""
        return (f"{self.group} ({self.how}): best feature F{self.feature} ranks {ranks}: {verdict}; it ranks in the "
                f"top {self.k} of {self.generality:.0%} of all probe texts{density}")


def concept_carrier(probes: ProbeActivations, group: str | int, *, hook: str | None = None, k: int = 10,
                    how: str = "specific", results=None) -> Carrier:
    """The best single-feature carrier of ``group`` across its languages (see :class:`Carrier`); ``results`` (the
    SAE's :class:`~workbench.analysis.features.FeatureResults`) adds the feature's corpus density."""
    scores = feature_scores(probes.feature_acts(hook), how)
    gi = probes.group_index(group)
    ranks = _ranks(scores[gi])  # [L, d]
    worst = ranks.max(0).values
    mean = scores[gi].mean(0)
    best = min(range(worst.numel()), key=lambda i: (int(worst[i]), -float(mean[i])))
    freq = top_k_frequency(scores, k)
    if results is not None and int(results.d_sae) != int(scores.shape[-1]):
        raise ValueError(f"results have d_sae={results.d_sae} but the probes' SAE has d_sae={scores.shape[-1]}")
    return Carrier(group=probes.names[gi], how=how, k=k, feature=best,
                   ranks={lang: int(ranks[j, best]) for j, lang in enumerate(probes.languages)},
                   shared=bool(int(worst[best]) < k), generality=float(freq[best]),
                   density=float(results.density[best]) if results is not None else None)


@dataclass
class OverlapResult:
    """Top-k overlap (|A ∩ B| / k) of translations (``matched``) against mismatched groups (``baseline``).

    Means over language pairs; ``per_pair`` "en-es" -> (matched, baseline); ``per_group`` the matched overlap of
    each group averaged over pairs; ``p_value``: the fraction of random re-pairings of the groups whose mean overlap
    reaches the matched one (permutation test, 1/(n+1) at best).
    """

    k: int
    matched: float
    baseline: float
    p_value: float
    per_pair: dict[str, tuple[float, float]]
    per_group: dict[str, float]
    n_groups: int
    n_permutations: int

    @property
    def ratio(self) -> float:
        return self.matched / self.baseline if self.baseline > 0 else float("inf")

    def to_dict(self) -> dict:
        return asdict(self)


def _membership(scores: Tensor, k: int) -> Tensor:
    """[..., d] float 0/1: in the top k and > 0."""
    return (_ranks(scores) < k).float()


def topk_overlap(scores: Tensor, languages: Sequence[str], k: int = 10, *, names: Sequence[str] | None = None,
                 n_permutations: int = 1000, seed: int = 0) -> OverlapResult:
    """How many of a group's top-k features (by ``scores`` [G, L, d]) are shared between two languages, against
    the shuffled-pairs baseline: group g in language a against group g' != g in language b."""
    if scores.dim() != 3 or scores.shape[1] != len(languages):
        raise ValueError(f"scores must be [n_groups, n_languages={len(languages)}, d], got {tuple(scores.shape)}")
    G = scores.shape[0]
    if G < 2:
        raise ValueError("the shuffled-pairs baseline needs at least two groups")
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"k={k} must be in [1, d={scores.shape[-1]}]")
    names = list(names) if names is not None else [str(i) for i in range(G)]
    member = _membership(scores, k)  # [G, L, d]
    off = ~torch.eye(G, dtype=torch.bool)
    mats, per_pair = [], {}
    for a, b in itertools.combinations(range(len(languages)), 2):
        m = member[:, a] @ member[:, b].T / k  # [G, G]
        mats.append(m)
        per_pair[f"{languages[a]}-{languages[b]}"] = (float(m.diagonal().mean()), float(m[off].mean()))
    stack = torch.stack(mats)  # [pairs, G, G]
    mean_mat = stack.mean(0)
    matched = float(mean_mat.diagonal().mean())
    baseline = float(mean_mat[off].mean())
    gen = torch.Generator().manual_seed(seed)
    hits = 0
    for _ in range(n_permutations):
        perm = torch.randperm(G, generator=gen)
        hits += float(mean_mat[torch.arange(G), perm].mean()) >= matched - 1e-12
    p = (hits + 1) / (n_permutations + 1)
    per_group = {n: float(v) for n, v in zip(names, mean_mat.diagonal())}
    return OverlapResult(k=k, matched=matched, baseline=baseline, p_value=p, per_pair=per_pair, per_group=per_group,
                         n_groups=G, n_permutations=n_permutations)


def overlap_by_layer(probes: ProbeActivations, k: int = 10, how: str = "mean", **kwargs) -> dict[str, OverlapResult]:
    """:func:`topk_overlap` for every SAE of ``probes`` (one per hook), in layer order."""
    out = {}
    for hook in sorted(probes.features, key=lambda h: (hook_layer(h) if hook_layer(h) is not None else 1 << 30, h)):
        scores = feature_scores(probes.features[hook], how)
        out[hook] = topk_overlap(scores, probes.languages, k, names=probes.names, **kwargs)
    return out


@dataclass
class LayerSimilarity:
    """Per layer: mean cosine of translations (``matched``) and of mismatched groups (``baseline``), and
    ``retrieval``: the fraction of (text, other language) where the nearest text of the other language is the
    translation (chance = 1 / n_groups)."""

    layers: list[int]
    matched: list[float]
    baseline: list[float]
    retrieval: list[float]
    center: str
    n_groups: int
    languages: list[str] = field(default_factory=list)

    @property
    def gap(self) -> list[float]:
        return [m - b for m, b in zip(self.matched, self.baseline)]

    def to_dict(self) -> dict:
        return {**asdict(self), "gap": self.gap}


CENTERS = ("none", "all", "language")


def residual_similarity(probes_or_residuals, languages: Sequence[str] | None = None, *, center: str = "all",
                        layers: Sequence[int] | None = None) -> LayerSimilarity:
    """Cross-lingual similarity of mean residuals at every layer (no SAE needed).

    ``center``: "all" subtracts the mean over every text at that layer (the residual stream has a large direction
    shared by all tokens, which makes every raw cosine near 1); "language" subtracts each language's own mean
    (removes the language-identity direction too); "none" keeps raw vectors.
    """
    if isinstance(probes_or_residuals, ProbeActivations):
        if probes_or_residuals.residuals is None:
            raise ValueError("these probes were run with residual_layers=False: rerun probe_activations with it True")
        resid = probes_or_residuals.residuals
        languages = probes_or_residuals.languages
        layers = probes_or_residuals.layers
    else:
        resid = probes_or_residuals
        if languages is None:
            raise ValueError("give languages= with a residual tensor")
        layers = list(layers) if layers is not None else list(range(resid.shape[0]))
    if resid.dim() != 4 or resid.shape[2] != len(languages):
        raise ValueError(f"residuals must be [n_layers, n_groups, n_languages={len(languages)}, d], "
                         f"got {tuple(resid.shape)}")
    if center not in CENTERS:
        raise ValueError(f"center must be one of {', '.join(CENTERS)}, got {center!r}")
    G, L = resid.shape[1], resid.shape[2]
    if G < 2:
        raise ValueError("the mismatched-pairs baseline needs at least two groups")
    x = resid.double()
    if center == "all":
        x = x - x.mean(dim=(1, 2), keepdim=True)
    elif center == "language":
        x = x - x.mean(dim=1, keepdim=True)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    off = ~torch.eye(G, dtype=torch.bool)
    matched, baseline, retrieval = [], [], []
    for li in range(x.shape[0]):
        ms, bs, rs = [], [], []
        for a, b in itertools.permutations(range(L), 2):
            cos = x[li, :, a] @ x[li, :, b].T  # [G, G]
            ms.append(cos.diagonal().mean())
            bs.append(cos[off].mean())
            rs.append((cos.argmax(dim=1) == torch.arange(G)).double().mean())
        matched.append(float(torch.stack(ms).mean()))
        baseline.append(float(torch.stack(bs).mean()))
        retrieval.append(float(torch.stack(rs).mean()))
    return LayerSimilarity(layers=list(layers), matched=matched, baseline=baseline, retrieval=retrieval,
                           center=center, n_groups=G, languages=list(languages))
