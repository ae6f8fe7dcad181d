"""Completeness of a dictionary: for concepts of known categories, is there a feature dedicated to each, and how
does that depend on how often the concept occurs in the training tokens (docs/methods.md §8)?

    from workbench.analysis.completeness import CompletenessConfig, CompletenessResult, completeness
    from workbench.analysis.concepts import corpus_categories
    result = completeness(store, {"topk-1024": sae_1k, "topk-4096": sae_4k}, tokenizer=model.tokenizer)
    result.fits["topk-4096"].midpoint        # log10 frequency at which half the concepts have a feature
    result.save("runs/completeness.json"); CompletenessResult.load("runs/completeness.json")

This module matches concepts in token ids, scans SAE firings over them, applies the dedicated-feature criterion
and fits the coverage curves. The concept categories live in :mod:`workbench.analysis.concepts` (data in
``resources/completeness_concepts.json``), the logistic fit in :mod:`workbench.analysis.sigmoid_fit`, and the
study that trains SAEs of several sizes for the notebook in :mod:`workbench.studies.completeness`.

Concepts
--------
A concept's *forms* (:class:`~workbench.analysis.concepts.Concept`) are matched as whole words on token ids (with
and without a leading space); see :mod:`workbench.analysis.concepts` for how forms shared between concepts or
ambiguous across languages are resolved.

Frequency
---------
The number of occurrences of any form of the concept in the scanned store tokens, per token (BOS excluded). The
store is what the SAE trained on (a uniform shuffle of its tokens, minus a held-out part), so this estimates the
concept's frequency in the training stream.

Dedicated feature (the criterion)
---------------------------------
On the scanned tokens, every feature j has a firing count n_j (activation > ``threshold``). For a concept c with
occurrences (token spans):

- precision(c, j) = (firings of j on tokens inside c's spans) / n_j: how much of what j fires on is c;
- recall(c, j) = fraction of c's occurrences on which j fires on at least one token of the span.

c has a dedicated feature when some j has precision >= ``min_precision`` (0.5) and recall >= ``min_recall`` (0.5)
and fires on at least ``min_hits`` (2) of c's occurrences. Concepts seen fewer than ``min_hits`` times cannot pass
and are left out of the fits (``decidable`` False). A feature for a whole category (all countries) fails the
precision test for each country; a feature for a word and its neighbours ("France", "French") passes only if the
concept itself is at least half of its firings.

Fit
---
Per SAE, a logistic curve P(dedicated) = 1 / (1 + exp(-slope * (x - midpoint))) (:func:`fit_sigmoid`) on
x = log10(frequency) and on the rescaled x' = log10(frequency * n_alive), n_alive = features that fire on the
scanned tokens. If coverage is governed by frequency x dictionary size, the rescaled midpoints coincide across
sizes (the curves collapse).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.analysis.concepts import (AMBIGUOUS_FORMS, CATEGORY_NAMES, Category, Concept, builtin_categories,
                                         check_against_corpus, corpus_categories)
from workbench.analysis.feature_kernels import SparseEncoder
from workbench.analysis.features import resolve_hook
from workbench.analysis.sigmoid_fit import SigmoidFit, fit_sigmoid
from workbench.core.persist import read_tagged_json, write_tagged_json
from workbench.core.protocols import StoreLike
from workbench.data.models import load_tokenizer

if TYPE_CHECKING:
    from workbench.sae.model import SAE

__all__ = [
    "CompletenessConfig",
    "CompletenessResult",
    "ConceptOccurrences",
    "ConceptScores",
    "FeatureCounts",
    "completeness",
    "concept_feature_counts",
    "dedicated_features",
    "find_occurrences",
]

# Also importable from here, where they lived before the concept tables and the fit got their own modules (the
# workbench 0.1 path ``workbench.completeness`` aliases this module): owned by concepts.py and sigmoid_fit.py.
_MOVED = (AMBIGUOUS_FORMS, CATEGORY_NAMES, builtin_categories, check_against_corpus, SigmoidFit, fit_sigmoid)

FORMAT = "workbench-completeness"
# Files written before the version was tagged as "format_version" (it was under "version") read as version 0,
# the same layout.
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# Occurrences in token ids
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ConceptOccurrences:
    """Where the concepts occur in a [n_contexts, ctx] array of token ids.

    ``token_occurrence`` [n_contexts * ctx] is the occurrence id covering each token (-1: none);
    ``occurrence_concept`` [n_occurrences] the concept of each occurrence; ``n_tokens`` the tokens scanned
    (BOS excluded)."""

    concepts: list[Concept]
    token_occurrence: np.ndarray
    occurrence_concept: np.ndarray
    n_tokens: int

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.occurrence_concept, minlength=len(self.concepts)).astype(np.int64)

    @property
    def frequency(self) -> np.ndarray:
        return self.counts / max(self.n_tokens, 1)


def _form_ids(tokenizer, form: str) -> list[tuple[int, ...]]:
    out = []
    for text in (" " + form, form):
        ids = tuple(int(i) for i in tokenizer.encode(text, add_special_tokens=False))
        if ids:
            out.append(ids)
    return list(dict.fromkeys(out))


def find_occurrences(token_ids: np.ndarray, tokenizer, concepts: Sequence[Concept], *, skip_first: bool = True,
                     token_text: Callable[[int], str] | None = None) -> ConceptOccurrences:
    """Whole-word occurrences of the concepts' forms in ``token_ids`` [n_contexts, ctx].

    Each form is matched as its token ids with and without a leading space. At each position the longest matching
    form wins and the tokens it covers are not matched again. A match is kept only at word boundaries: the token
    after it must not start with a letter (else the form is the prefix of a longer word), and for a form without a
    leading space the token before it must not end with a letter. ``skip_first`` ignores position 0 (BOS).
    ``token_text`` maps an id to its text (default ``tokenizer.decode([id])``)."""
    tokens = np.asarray(token_ids)
    if tokens.ndim != 2:
        raise ValueError(f"token_ids must be [n_contexts, ctx], got shape {tokens.shape}")
    if not concepts:
        raise ValueError("no concepts to look for")
    decode = token_text or (lambda i: tokenizer.decode([int(i)]))
    text_cache: dict[int, str] = {}

    def text(i: int) -> str:
        if i not in text_cache:
            text_cache[i] = decode(i)
        return text_cache[i]

    by_first: dict[int, list[tuple[tuple[int, ...], int, bool]]] = {}
    for ci, c in enumerate(concepts):
        for form in c.forms:
            for ids in _form_ids(tokenizer, form):
                spaced = text(ids[0])[:1].isspace()
                by_first.setdefault(ids[0], []).append((ids, ci, spaced))
    for first in by_first:  # longest first, so the longest match wins
        by_first[first].sort(key=lambda t: -len(t[0]))

    n_ctx, ctx = tokens.shape
    flat = tokens.reshape(-1)
    start = 1 if skip_first else 0
    cand_mask = np.isin(tokens[:, start:], np.fromiter(by_first, dtype=np.int64))
    rows, cols = np.nonzero(cand_mask)
    token_occurrence = np.full(flat.shape[0], -1, dtype=np.int64)
    occ_concept: list[int] = []
    covered_until = -1
    for r, col in zip(rows.tolist(), (cols + start).tolist()):
        pos = r * ctx + col
        if pos <= covered_until:
            continue
        row = tokens[r]
        for ids, ci, spaced in by_first[int(row[col])]:
            end = col + len(ids)
            if end > ctx or tuple(int(t) for t in row[col:end]) != ids:
                continue
            if end < ctx and text(int(row[end]))[:1].isalpha():
                continue
            if not spaced and col > start and text(int(row[col - 1]))[-1:].isalpha():
                continue
            token_occurrence[pos:pos + len(ids)] = len(occ_concept)
            occ_concept.append(ci)
            covered_until = pos + len(ids) - 1
            break
    return ConceptOccurrences(list(concepts), token_occurrence, np.array(occ_concept, dtype=np.int64),
                              n_tokens=int(n_ctx * (ctx - start)))


# ----------------------------------------------------------------------------------------------------------------
# Feature statistics and the dedicated-feature criterion
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CompletenessConfig:
    """The dedicated-feature criterion (see the module docstring) and how the scan runs."""

    min_precision: float = 0.5
    min_recall: float = 0.5
    min_hits: int = 2
    threshold: float = 0.0
    max_tokens: int | None = None  # scan only the first contexts of the store (None: all)
    chunk_contexts: int = 32
    ridge: float = 1e-3  # on the sigmoid's slope
    confidence: float = 0.95
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("min_precision", "min_recall"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"CompletenessConfig.{name} must lie in (0, 1], got {v}")
        if self.min_hits < 1 or self.chunk_contexts < 1:
            raise ValueError("CompletenessConfig.min_hits and chunk_contexts must be positive integers")


@dataclass
class FeatureCounts:
    """Firing statistics of one SAE over the scanned tokens: ``count`` [d_sae] firings of each feature,
    ``token_hits`` [n_concepts, d_sae] firings inside each concept's spans, ``occ_hits`` [n_concepts, d_sae]
    occurrences of each concept on which each feature fires."""

    count: torch.Tensor
    token_hits: torch.Tensor
    occ_hits: torch.Tensor

    @property
    def n_alive(self) -> int:
        return int((self.count > 0).sum())


def concept_feature_counts(store: StoreLike, sae: SAE, occurrences: ConceptOccurrences,
                           config: CompletenessConfig | None = None,
                           *, hook: str | None = None) -> FeatureCounts:
    """Encode the store's contexts (the first ``max_tokens``) with ``sae`` and count firings (see
    :class:`FeatureCounts`). ``occurrences`` must come from the same contexts' token ids."""
    cfg = config or CompletenessConfig()
    hook = resolve_hook(store, sae, hook)
    ctx = int(store.context_size)
    n_ctx = occurrences.token_occurrence.shape[0] // ctx
    if n_ctx > store.n_contexts:
        raise ValueError(f"the occurrences cover {n_ctx} contexts but the store has {store.n_contexts}: find them "
                         f"on this store's token ids")
    d_sae, n_con = int(sae.cfg.d_sae), len(occurrences.concepts)
    count = torch.zeros(d_sae, dtype=torch.int64)
    token_hits = torch.zeros(n_con * d_sae, dtype=torch.int64)
    occ_hits = torch.zeros(n_con * d_sae, dtype=torch.int64)
    occ_of_tok = torch.from_numpy(occurrences.token_occurrence)
    occ_con = torch.from_numpy(occurrences.occurrence_concept)
    skip_bos = bool(store.prepend_bos)
    encoder = SparseEncoder(sae, cfg.threshold)
    chunk = cfg.chunk_contexts * ctx
    was_training = sae.training
    sae.eval()
    bar = tqdm(total=n_ctx * ctx, unit="tok", unit_scale=True, desc=f"scan d_sae={d_sae}", disable=not cfg.progress)
    offset = 0
    try:
        for x in store.iter_batches(chunk, hook=hook, shuffle=False, exclude_bos=False, drop_last=False,
                                    max_tokens=n_ctx * ctx, dtype=torch.float32):
            rows, feats, _ = encoder(x.to(sae.device))
            rows, feats = rows.cpu() + offset, feats.cpu().to(torch.int64)
            if skip_bos:
                keep = rows % ctx != 0
                rows, feats = rows[keep], feats[keep]
            count += torch.bincount(feats, minlength=d_sae)
            occ = occ_of_tok[rows]
            on = occ >= 0
            if bool(on.any()):
                o, f = occ[on], feats[on]
                token_hits.index_add_(0, occ_con[o] * d_sae + f, torch.ones_like(f))
                pairs = torch.unique(o * d_sae + f)  # one per (occurrence, feature)
                occ_hits.index_add_(0, occ_con[pairs // d_sae] * d_sae + pairs % d_sae, torch.ones_like(pairs))
            offset += x.shape[0]
            bar.update(x.shape[0])
    finally:
        bar.close()
        sae.train(was_training)
    return FeatureCounts(count, token_hits.view(n_con, d_sae), occ_hits.view(n_con, d_sae))


@dataclass
class ConceptScores:
    """Per concept: whether a dedicated feature exists, the best feature and its precision / recall."""

    present: np.ndarray        # bool [n_concepts]
    decidable: np.ndarray      # bool: occurs at least min_hits times
    best_feature: np.ndarray   # int [n_concepts], -1 when no feature fires on the concept
    precision: np.ndarray
    recall: np.ndarray


def dedicated_features(count, token_hits, occ_hits, n_occurrences, *, min_precision: float = 0.5,
                       min_recall: float = 0.5, min_hits: int = 2) -> ConceptScores:
    """Apply the criterion to firing statistics (tensors or arrays; see :class:`FeatureCounts`).

    The best feature of a concept is the qualifying feature of highest precision * recall, else (none qualifies)
    the feature of highest precision * recall overall."""
    count = torch.as_tensor(count, dtype=torch.float32)
    th = torch.as_tensor(token_hits, dtype=torch.float32)
    oh = torch.as_tensor(occ_hits, dtype=torch.float32)
    n_occ = torch.as_tensor(n_occurrences, dtype=torch.float32)
    if th.dim() != 2 or th.shape != oh.shape or th.shape[1] != count.shape[0] or th.shape[0] != n_occ.shape[0]:
        raise ValueError(f"shapes disagree: count {tuple(count.shape)}, token_hits {tuple(th.shape)}, occ_hits "
                         f"{tuple(oh.shape)}, n_occurrences {tuple(n_occ.shape)}")
    precision = th / count.clamp_min(1)[None, :]
    recall = oh / n_occ.clamp_min(1)[:, None]
    ok = (precision >= min_precision) & (recall >= min_recall) & (oh >= min_hits)
    score = precision * recall
    best_ok = torch.where(ok, score, torch.full_like(score, -1.0)).argmax(1)
    best_any = score.argmax(1)
    present = ok.any(1)
    best = torch.where(present, best_ok, best_any)
    fired = oh.gather(1, best[:, None]).squeeze(1) > 0
    rows = torch.arange(th.shape[0])
    return ConceptScores(present=present.numpy(), decidable=(n_occ >= min_hits).numpy(),
                         best_feature=torch.where(fired, best, torch.full_like(best, -1)).numpy(),
                         precision=precision[rows, best].numpy(), recall=recall[rows, best].numpy())



# ----------------------------------------------------------------------------------------------------------------
# The analysis
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CompletenessResult:
    """Per SAE: the concept table and the fits on raw and rescaled log frequency."""

    concepts: list[dict]             # name, category, forms, count, frequency
    n_tokens: int
    saes: dict[str, dict]            # name -> {"d_sae", "n_alive", "present", "decidable", "best_feature", ...}
    fits: dict[str, SigmoidFit]      # name -> fit on log10(frequency)
    rescaled_fits: dict[str, SigmoidFit]  # name -> fit on log10(frequency * n_alive)
    pooled_rescaled: SigmoidFit | None
    config: dict

    def table(self, sae: str) -> list[dict]:
        """One row per concept for SAE ``sae``."""
        if sae not in self.saes:
            raise ValueError(f"unknown SAE {sae!r}: the result has {list(self.saes)}")
        s = self.saes[sae]
        return [{**{k: c[k] for k in ("name", "category", "count", "frequency")}, "present": s["present"][i],
                 "decidable": s["decidable"][i], "best_feature": s["best_feature"][i],
                 "precision": s["precision"][i], "recall": s["recall"][i]} for i, c in enumerate(self.concepts)]

    def summary(self) -> list[dict]:
        """One row per SAE: size, alive features, concepts decided / covered, the median precision of the concepts'
        best features (how close the dictionary comes to dedicated features), the two midpoints."""
        rows = []
        for name, s in self.saes.items():
            f, g = self.fits[name], self.rescaled_fits[name]
            dec = np.asarray(s["decidable"], dtype=bool)
            prec = np.asarray(s["precision"], dtype=np.float64)[dec]
            rows.append({"sae": name, "d_sae": s["d_sae"], "n_alive": s["n_alive"], "decidable": int(dec.sum()),
                         "covered": int(np.asarray(s["present"], dtype=bool)[dec].sum()),
                         "median_best_precision": float(np.median(prec)) if prec.size else math.nan,
                         "midpoint_log10_freq": f.midpoint, "midpoint_ci": list(f.midpoint_ci), "slope": f.slope,
                         "midpoint_rescaled": g.midpoint, "midpoint_rescaled_ci": list(g.midpoint_ci),
                         "separable": f.separable, "in_range": f.in_range})
        return rows

    def curves(self, sae: str, rescaled: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(x, present) of the decidable concepts of ``sae``: x = log10 frequency (times n_alive if rescaled)."""
        s = self.saes[sae]
        freq = np.array([c["frequency"] for c in self.concepts])
        dec = np.asarray(s["decidable"], dtype=bool)
        x = np.log10(freq[dec] * (s["n_alive"] if rescaled else 1))
        return x, np.asarray(s["present"], dtype=bool)[dec].astype(np.float64)

    def by_category(self) -> list[dict]:
        """One row per (SAE, category): the decidable concepts and how many of them have a dedicated feature."""
        rows = []
        for name in self.saes:
            counts: dict[str, list[int]] = {}
            for row in self.table(name):
                if row["decidable"]:
                    n = counts.setdefault(row["category"], [0, 0])
                    n[0] += 1
                    n[1] += bool(row["present"])
            rows += [{"sae": name, "category": cat, "decidable": d, "covered": c} for cat, (d, c) in counts.items()]
        return rows

    def to_dict(self) -> dict:
        """The JSON payload of :meth:`save` (without the format tags)."""
        return {"concepts": self.concepts, "n_tokens": self.n_tokens, "saes": self.saes,
                "fits": {k: v.to_dict() for k, v in self.fits.items()},
                "rescaled_fits": {k: v.to_dict() for k, v in self.rescaled_fits.items()},
                "pooled_rescaled": self.pooled_rescaled.to_dict() if self.pooled_rescaled else None,
                "config": self.config}

    def save(self, path: str | Path) -> Path:
        """Write the result as tagged JSON (atomically; NaN fits are kept as JSON NaN)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_tagged_json(path, self.to_dict(), format=FORMAT, format_version=FORMAT_VERSION, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "CompletenessResult":
        data = read_tagged_json(path, format=FORMAT, what="a completeness result", max_version=FORMAT_VERSION,
                                fix="run workbench.analysis.completeness.completeness(..., out_path=...) to write it")
        return cls(concepts=data["concepts"], n_tokens=int(data["n_tokens"]), saes=data["saes"],
                   fits={k: SigmoidFit.from_dict(v) for k, v in data["fits"].items()},
                   rescaled_fits={k: SigmoidFit.from_dict(v) for k, v in data["rescaled_fits"].items()},
                   pooled_rescaled=SigmoidFit.from_dict(data["pooled_rescaled"]) if data["pooled_rescaled"] else None,
                   config=data["config"])


def completeness(store: StoreLike, saes: Mapping[str, SAE], categories: Sequence[Category] | None = None,
                 config: CompletenessConfig | None = None, *, tokenizer=None, hook: str | None = None,
                 out_path: str | Path | None = None) -> CompletenessResult:
    """Find the concepts in the store's tokens, score every SAE in ``saes`` (name -> SAE, all on the store's hook)
    and fit the coverage curves. ``categories`` default to :func:`corpus_categories` (all built-in categories,
    concepts with an embedded article). ``tokenizer`` defaults to the store's model's. ``out_path`` saves JSON."""
    cfg = config or CompletenessConfig()
    if not saes:
        raise ValueError("no SAE to score: pass {name: sae}")
    cats = list(categories) if categories is not None else corpus_categories()
    concepts = [c for cat in cats for c in cat.concepts]
    if not concepts:
        raise ValueError("the categories hold no concepts")
    tokenizer = tokenizer or load_tokenizer(store.model_name)
    ctx = int(store.context_size)
    n_ctx = store.n_contexts if cfg.max_tokens is None else min(store.n_contexts, -(-int(cfg.max_tokens) // ctx))
    tokens = store.token_ids()[:n_ctx]
    occ = find_occurrences(tokens, tokenizer, concepts, skip_first=bool(store.prepend_bos))
    counts, freq = occ.counts, occ.frequency
    table = [{"name": c.name, "category": c.category, "forms": list(c.forms), "count": int(counts[i]),
              "frequency": float(freq[i])} for i, c in enumerate(concepts)]
    per_sae, fits, rescaled = {}, {}, {}
    pooled_x, pooled_y = [], []
    for name, sae in saes.items():
        fc = concept_feature_counts(store, sae, occ, cfg, hook=hook)
        sc = dedicated_features(fc.count, fc.token_hits, fc.occ_hits, counts, min_precision=cfg.min_precision,
                                min_recall=cfg.min_recall, min_hits=cfg.min_hits)
        n_alive = fc.n_alive
        per_sae[name] = {"d_sae": int(sae.cfg.d_sae), "n_alive": n_alive, "present": sc.present.tolist(),
                         "decidable": sc.decidable.tolist(), "best_feature": sc.best_feature.tolist(),
                         "precision": sc.precision.tolist(), "recall": sc.recall.tolist()}
        dec = sc.decidable
        x = np.log10(freq[dec])
        y = sc.present[dec].astype(np.float64)
        fits[name] = fit_sigmoid(x, y, ridge=cfg.ridge, confidence=cfg.confidence)
        xr = x + math.log10(max(n_alive, 1))
        rescaled[name] = fit_sigmoid(xr, y, ridge=cfg.ridge, confidence=cfg.confidence)
        pooled_x.append(xr)
        pooled_y.append(y)
    pooled = fit_sigmoid(np.concatenate(pooled_x), np.concatenate(pooled_y), ridge=cfg.ridge,
                         confidence=cfg.confidence) if len(saes) > 1 else None
    cfg_dict = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    cfg_dict["categories"] = [c.name for c in cats]
    cfg_dict["scanned_contexts"] = n_ctx
    result = CompletenessResult(concepts=table, n_tokens=occ.n_tokens, saes=per_sae, fits=fits,
                                rescaled_fits=rescaled, pooled_rescaled=pooled, config=cfg_dict)
    if out_path is not None:
        result.save(out_path)
    return result

