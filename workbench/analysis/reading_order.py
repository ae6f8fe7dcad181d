"""The order a reader meets an SAE's features in: concept evidence first, detectors apart, a random sample beside
(docs/methods.md §22).

Ranking by a token explainer's held-out F1 rewards single-token detectors: the easiest feature to predict from its
token is one that fires on ``" "`` or on ``"("``. The lead here is ranked by evidence that a feature carries a
concept instead, and detectors (:func:`~workbench.analysis.detectors.classify_detectors`) are left out of it.

The concept score of a feature is a weighted mean of components in [0, 1] (weights in :class:`ReadingOrderConfig`;
a component whose input is missing drops out and the others' weights are renormalised)::

    types      log(distinct firing-token strings, up to case/spaces, among the top examples) / log(K)
    languages  (languages with >= min_language_examples top examples - 1) / (languages of the corpus - 1)
    documents  log(distinct documents of the top examples) / log(K)   (contexts when no store is given)
    agreement  |normalised strings it reads (firing tokens) ∩ those it writes (top logit-effect tokens)|
               / min(|reads|, |writes|)                                (needs logit effects)
    concept    concept_scores[i], an external per-feature signal in [0, 1], e.g. a held-out topic-probe score
               (features missing from the mapping get ``missing_concept``)

with K the number of top examples kept per feature. The lead holds the alive features that are no detector, no
denser than ``max_density`` and have at least ``min_examples`` top examples, best score first (ties: more distinct
tokens, then larger max activation). :func:`random_sample` draws alive features uniformly with a seed, independent
of every score, so the reader also sees what a typical feature looks like.

    order = reading_order(results, store=store, concept_scores=probe_scores, tokenizer=model.tokenizer)
    order.lead[:12], order.detectors.counts, order.sample
    lead_order(results, store=store)  # just the ranked indices (e.g. a browser's default order)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from workbench.analysis.detectors import DetectorConfig, Detectors, classify_detectors, example_tokens, token_groups
from workbench.analysis.feature_traits import feature_languages, top_example_documents
from workbench.analysis.features import FeatureResults

__all__ = ["COMPONENTS", "ConceptEvidence", "ReadingOrder", "ReadingOrderConfig", "concept_evidence", "lead_order",
           "random_sample", "reading_order"]

COMPONENTS = ("types", "languages", "documents", "agreement", "concept")


@dataclass
class ReadingOrderConfig:
    """Weights of the concept score's components and who may lead (see the module docstring).

    ``n_logits``: the top logit-effect tokens compared with what the feature reads. ``sample_size`` and
    ``sample_seed``: the random sample. ``detectors``: the detector thresholds."""

    w_types: float = 1.0
    w_languages: float = 1.0
    w_documents: float = 0.5
    w_agreement: float = 0.5
    w_concept: float = 2.0
    min_language_examples: int = 2
    n_logits: int = 10
    max_density: float = 0.01
    min_examples: int = 5
    missing_concept: float = 0.0
    sample_size: int = 8
    sample_seed: int = 0
    detectors: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if isinstance(self.detectors, Mapping):
            self.detectors = DetectorConfig(**self.detectors)
        for name in COMPONENTS:
            v = getattr(self, f"w_{name}")
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"ReadingOrderConfig.w_{name} is a weight: give a finite value >= 0, got {v!r}")
        if sum(getattr(self, f"w_{c}") for c in COMPONENTS) <= 0:
            raise ValueError("ReadingOrderConfig: every weight is 0, so no score can be formed; give one a weight > 0")
        for name in ("min_language_examples", "n_logits", "min_examples", "sample_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"ReadingOrderConfig.{name} must be a non-negative integer, got {v!r}")
        if not 0.0 <= float(self.missing_concept) <= 1.0:
            raise ValueError(f"ReadingOrderConfig.missing_concept must lie in [0, 1], got {self.missing_concept!r}")
        if not float(self.max_density) > 0:
            raise ValueError(f"ReadingOrderConfig.max_density must be > 0, got {self.max_density!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ConceptEvidence:
    """Per feature ([d_sae] tensors): the raw counts, each component in [0, 1] (None: its input was missing) and
    the weighted score."""

    n_types: Tensor
    n_documents: Tensor
    n_languages: Tensor | None
    components: dict[str, Tensor | None]
    score: Tensor
    documents_from: str  # "store" (document ids) or "contexts" (no store: contexts stand in for documents)

    def row(self, i: int) -> dict:
        """Feature ``i``'s evidence as plain numbers (for a table)."""
        out = {"score": float(self.score[i]), "types": int(self.n_types[i]), "documents": int(self.n_documents[i])}
        if self.n_languages is not None:
            out["languages"] = int(self.n_languages[i])
        for name, comp in self.components.items():
            if comp is not None and name in ("agreement", "concept"):
                out[name] = float(comp[i])
        return out


@dataclass
class ReadingOrder:
    """What a reader sees first: ``lead`` (ranked), ``detectors``, ``sample`` (random alive features) and the
    counts behind them (``n_dense``: non-detectors over max_density; ``n_few``: fewer than min_examples examples)."""

    lead: list[int]
    detectors: Detectors
    evidence: ConceptEvidence
    sample: list[int]
    n_alive: int
    n_dense: int
    n_few: int
    rest: list[int]
    config: ReadingOrderConfig

    def summary(self, n: int = 12) -> dict:
        return {"n_alive": self.n_alive, "n_lead": len(self.lead), "n_dense": self.n_dense, "n_few": self.n_few,
                "detectors": self.detectors.summary(), "lead": self.lead[:n], "sample": list(self.sample)}


# ----------------------------------------------------------------------------------------------------------------
# Evidence
# ----------------------------------------------------------------------------------------------------------------


def _distinct(values: Tensor) -> Tensor:
    valid = values >= 0
    same = (values[:, :, None] == values[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    per = same.sum(-1).clamp_min(1).to(torch.float64)
    return torch.where(valid, 1.0 / per, torch.zeros_like(per)).sum(1).round().to(torch.int64)


def _log_share(n: Tensor, k: int) -> Tensor:
    """log(n) / log(k) in [0, 1] (0 for n <= 1)."""
    if k <= 1:
        return torch.zeros(n.shape, dtype=torch.float64)
    return (n.clamp_min(1).to(torch.float64).log() / math.log(k)).clamp(0.0, 1.0)


def _agreement(results: FeatureResults, top_ids: Tensor, n_logits: int) -> Tensor | None:
    a = results.arrays
    if "logit_top_ids" not in a or n_logits < 1:
        return None
    writes = a["logit_top_ids"][:, :n_logits].to(torch.int64)
    groups = token_groups(results.vocab, torch.cat([top_ids, writes], 1), drop_blank=True)
    r, w = groups[:, : top_ids.shape[1]], groups[:, top_ids.shape[1]:]
    n_r, n_w = _distinct(r), _distinct(w)
    earlier = torch.triu(torch.ones(w.shape[1], w.shape[1], dtype=torch.bool), 1)  # [l', l]: l' < l
    first = ~((w[:, :, None] == w[:, None, :]) & earlier[None]).any(1) & (w >= 0)  # first time each group appears
    read = ((w[:, :, None] == r[:, None, :]) & (r[:, None, :] >= 0)).any(-1)
    both = (first & read).sum(1).to(torch.float64)
    return (both / torch.minimum(n_r, n_w).clamp_min(1).to(torch.float64)).clamp(0.0, 1.0)


def _concept(concept_scores: Mapping[int, float] | None, d_sae: int, missing: float) -> Tensor | None:
    if concept_scores is None:
        return None
    out = torch.full((d_sae,), float(missing), dtype=torch.float64)
    for key, value in concept_scores.items():
        i = int(key)
        if not 0 <= i < d_sae or isinstance(key, bool):
            raise ValueError(f"concept_scores names feature {key!r}, outside [0, {d_sae}): key it by feature index")
        v = float(value)
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"concept_scores[{i}] = {value!r} is not in [0, 1]: pass a score such as a held-out "
                             f"probe's accuracy or AUC rescaled to [0, 1]")
        out[i] = v
    return out


def concept_evidence(results: FeatureResults, *, store: Any = None, concept_scores: Mapping[int, float] | None = None,
                     languages: Tensor | None = None, documents: Tensor | None = None,
                     config: ReadingOrderConfig | None = None) -> ConceptEvidence:
    """The concept score of every feature (see the module docstring) with its components.

    ``store``: the store the feature pass read; gives ``languages`` (:func:`feature_languages`, wiki stores only)
    and ``documents`` (:func:`top_example_documents`) unless they are passed precomputed ([d_sae, n_languages]
    counts and [d_sae, K] document ids)."""
    cfg = config or ReadingOrderConfig()
    d = results.d_sae
    top_ids, _, _ = example_tokens(results, "top")
    k = int(top_ids.shape[1])
    groups = token_groups(results.vocab, top_ids)
    n_types = _distinct(groups)
    if languages is None and store is not None:
        fl = feature_languages(results, store)
        languages = None if fl is None else fl[0]
    n_lang = lang_comp = None
    if languages is not None:
        if tuple(languages.shape[:1]) != (d,):
            raise ValueError(f"languages has {tuple(languages.shape)} rows; expected one per feature ({d})")
        n_lang = (languages >= max(1, cfg.min_language_examples)).sum(1).to(torch.int64)
        n_all = int(languages.shape[1])
        lang_comp = ((n_lang - 1).clamp_min(0).to(torch.float64) / max(1, n_all - 1)) if n_all > 1 else None
    source = "store"
    if documents is None and store is not None:
        documents = top_example_documents(results, store)
    if documents is None:
        tok = results.arrays["top_tok"].to(torch.int64)
        documents = torch.where(tok >= 0, tok.clamp_min(0) // max(1, results.context_size), torch.full_like(tok, -1))
        source = "contexts"
    n_docs = _distinct(documents.to(torch.int64))
    comps: dict[str, Tensor | None] = {
        "types": _log_share(n_types, k), "languages": lang_comp, "documents": _log_share(n_docs, k),
        "agreement": _agreement(results, top_ids, cfg.n_logits),
        "concept": _concept(concept_scores, d, cfg.missing_concept)}
    num = torch.zeros(d, dtype=torch.float64)
    den = 0.0
    for name, comp in comps.items():
        w = float(getattr(cfg, f"w_{name}"))
        if comp is not None and w > 0:
            num += w * comp
            den += w
    score = num / den if den > 0 else num
    return ConceptEvidence(n_types, n_docs, n_lang, comps, score, source)


# ----------------------------------------------------------------------------------------------------------------
# The order
# ----------------------------------------------------------------------------------------------------------------


def random_sample(results: FeatureResults, n: int = 8, seed: int = 0) -> list[int]:
    """``n`` alive features drawn uniformly without replacement with ``seed`` (by index); all when fewer."""
    alive = results.alive().numpy()
    if n < 0:
        raise ValueError(f"a sample size is >= 0, got {n}")
    if len(alive) <= n:
        return alive.tolist()
    return sorted(np.random.default_rng(seed).choice(alive, size=n, replace=False).tolist())


def reading_order(results: FeatureResults, *, store: Any = None, concept_scores: Mapping[int, float] | None = None,
                  config: ReadingOrderConfig | None = None, tokenizer: Any = None,
                  detectors: Detectors | None = None) -> ReadingOrder:
    """The lead (concept evidence, no detectors), the detectors and a random sample of ``results`` (see the module
    docstring). ``detectors``: a precomputed :func:`classify_detectors` (default: computed with
    ``config.detectors`` and ``tokenizer``)."""
    cfg = config or ReadingOrderConfig()
    det = detectors if detectors is not None else classify_detectors(results, cfg.detectors, tokenizer=tokenizer)
    ev = concept_evidence(results, store=store, concept_scores=concept_scores, config=cfg)
    dens, mx = results.density, results.max_activation
    n_top = (results.arrays["top_tok"] >= 0).sum(1)
    alive = results.alive().tolist()

    def key(i: int):
        return (-float(ev.score[i]), -int(ev.n_types[i]), -float(mx[i]), i)

    lead, dense, few = [], [], []
    for i in alive:
        if det.kinds[i]:
            continue
        if float(dens[i]) > cfg.max_density:
            dense.append(i)
        elif int(n_top[i]) < cfg.min_examples:
            few.append(i)
        else:
            lead.append(i)
    lead.sort(key=key)
    rest = sorted(dense, key=key) + sorted(few, key=key) + sorted(det.features(), key=key)
    return ReadingOrder(lead, det, ev, random_sample(results, cfg.sample_size, cfg.sample_seed), len(alive),
                        len(dense), len(few), rest, cfg)


def lead_order(results: FeatureResults, *, store: Any = None, concept_scores: Mapping[int, float] | None = None,
               config: ReadingOrderConfig | None = None, tokenizer: Any = None, include_rest: bool = False
               ) -> list[int]:
    """Feature indices in reading order: the lead of :func:`reading_order`, best first; with ``include_rest``
    followed by every other alive feature (too dense, too few examples, then the detectors), so the list can be a
    browser's default order over all alive features."""
    order = reading_order(results, store=store, concept_scores=concept_scores, config=config, tokenizer=tokenizer)
    return order.lead + (order.rest if include_rest else [])
