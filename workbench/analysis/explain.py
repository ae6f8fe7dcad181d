"""Explanations of features (or neurons) and how well they predict activations.

An **explanation** here is text plus a per-token predictor: a set of token-id n-grams, and the predictor says "fires"
at a position where one of them ends. That makes every explanation testable the same way:

* :class:`TokenExplainer` (the default, offline): from a unit's top and bucket examples it collects the n-grams
  (n <= 3) ending at the positions where the unit fires, and greedily picks those that best separate firing from
  non-firing positions of the example windows (F1 gain). Its text lists them.
* :class:`~workbench.analysis.explain_llm.OpenAIExplainer` (optional, never required; its own module): sends the examples to any OpenAI-compatible
  ``/v1/chat/completions`` endpoint (urllib; configured by arguments or ``WORKBENCH_LLM_BASE_URL``,
  ``WORKBENCH_LLM_MODEL``, ``WORKBENCH_LLM_API_KEY``) and asks for an explanation and its key tokens. Its predictor
  is a **key-token matcher**, not an LLM simulator: the quoted key tokens of the reply are tokenised (as is, with a
  leading space, lower-cased and capitalised) and matched like the offline n-grams. Honest but crude: an
  explanation that is right in words yet names no tokens scores zero.

**Scoring** (:func:`score_explanation`, :class:`ScoreAccumulator`, in :mod:`workbench.analysis.explain_scoring`)
runs the predictor over held-out tokens: precision and recall of "predicted" against "fires", and the paper's
specificity view with activation buckets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import SAELike, StoreLike
from workbench.analysis.bundle import AnalysisBundle
from workbench.analysis.feature_kernels import hash_keys
from workbench.analysis.features import ActivationExample, FeatureResults, encode_contexts
from workbench.core.config import known_fields_only
from workbench.analysis.explain_scoring import ExplanationScore, ScoreAccumulator, score_explanation
from workbench.core.persist import read_tagged_json, write_tagged_json

__all__ = [
    "Background",
    "Explanation",
    "ExplanationScore",
    "ExplanationSet",
    "Explainer",
    "ScoreAccumulator",
    "TokenExplainer",
    "UnitExamples",
    "examples_for_feature",
    "examples_from_activations",
    "explain_features",
    "heldout_contexts",
    "score_explanation",
    "score_features",
]

EXPLANATIONS_FORMAT = "workbench-explanations"
EXPLANATIONS_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# Evidence and explanations
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Background:
    """A unit's activations on every token of a set of *training* contexts, beside its example windows.

    ``token_ids`` [n_ctx, ctx] (ids < 0 are left out, e.g. BOS), ``acts`` [n_ctx, ctx] and ``vocab`` (id ->
    string, for the explanation's text). With it, an explainer can measure how often a candidate token fires the
    unit among *all* its occurrences, not only inside the windows chosen because the unit fired there: the windows
    alone overrate common tokens (docs/methods.md §5).
    """

    token_ids: Tensor
    acts: Tensor
    vocab: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token_ids.shape != self.acts.shape or self.token_ids.dim() != 2:
            raise ValueError(f"Background needs token_ids and acts of the same [n_ctx, ctx] shape, got "
                             f"{tuple(self.token_ids.shape)} and {tuple(self.acts.shape)}")


@dataclass
class UnitExamples:
    """What an explainer sees of one unit (a feature or a neuron): example windows with per-token activations,
    and optionally its activations on every token of the training contexts (:class:`Background`)."""

    unit: int
    kind: str  # "feature" or "neuron"
    max_activation: float
    examples: list[ActivationExample]
    label: str = ""  # e.g. "L3 N1021" for a neuron
    background: Background | None = None


@dataclass
class Explanation:
    """Text plus a predictor: fires at a position where one of ``patterns`` (token-id n-grams) ends."""

    text: str
    patterns: list[tuple[int, ...]]
    source: str = "tokens"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patterns = [tuple(int(t) for t in p) for p in self.patterns if len(p) > 0]

    def predict(self, token_ids: Tensor) -> Tensor:
        """Boolean tensor shaped like ``token_ids`` ([..., ctx]; ids < 0 never match)."""
        ids = token_ids.to(torch.int64)
        out = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        unigrams = [p[0] for p in self.patterns if len(p) == 1]
        if unigrams:
            out |= torch.isin(ids, torch.tensor(unigrams, dtype=torch.int64, device=ids.device))
        c = ids.shape[-1]
        for p in self.patterns:
            n = len(p)
            if n == 1 or n > c:
                continue
            m = torch.ones(ids[..., n - 1:].shape, dtype=torch.bool, device=ids.device)
            for j, t in enumerate(p):
                m &= ids[..., j:c - n + 1 + j] == t
            out[..., n - 1:] |= m
        return out

    def to_dict(self) -> dict:
        return {"text": self.text, "patterns": [list(p) for p in self.patterns], "source": self.source,
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Explanation":
        d = known_fields_only(cls, dict(d), "explanation field(s)")
        return cls(text=str(d["text"]), patterns=[tuple(p) for p in d.get("patterns", [])],
                   source=str(d.get("source", "")), meta=dict(d.get("meta", {})))


class Explainer(Protocol):
    """Anything that turns a unit's examples into an :class:`Explanation`."""

    name: str

    def explain(self, examples: UnitExamples) -> Explanation: ...


def _pattern_text(pattern: Sequence[int], strings: Mapping[int, str]) -> str:
    return "".join(strings.get(t, f"<{t}>") for t in pattern)


def _window_strings(examples: UnitExamples) -> dict[int, str]:
    out: dict[int, str] = {}
    for ex in examples.examples:
        for t, s in zip(ex.token_ids, ex.tokens):
            if t >= 0:
                out.setdefault(int(t), s)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The offline explainer
# ----------------------------------------------------------------------------------------------------------------


def _f1(tp: Tensor, fp: Tensor, n_pos: int) -> Tensor:
    prec = tp / (tp + fp).clamp_min(1)
    rec = tp / max(1, n_pos)
    return torch.where(tp > 0, 2 * prec * rec / (prec + rec).clamp_min(1e-12), torch.zeros_like(tp))


@dataclass
class TokenExplainer:
    """Top tokens and n-grams of a unit, chosen greedily by F1 on the tokens it was fitted on.

    A position counts as firing when the unit's activation there is > ``fire_fraction`` of its max (0: any non-zero
    activation). The fit uses the unit's :class:`Background` when the examples carry one (every token of the
    training contexts), else the tokens of its example windows. Candidates are the n-grams (n <= ``max_n``)
    ending at firing positions with at least ``min_support`` such positions (the ``max_candidates`` most frequent
    of each length); each round adds the candidate with the largest F1 gain of the union predictor, until
    ``max_patterns`` or a gain below ``min_gain`` (docs/methods.md §5).
    """

    max_n: int = 3
    max_patterns: int = 6
    min_support: int = 2
    min_gain: float = 0.01
    fire_fraction: float = 0.0
    max_candidates: int = 256
    name: str = "tokens"

    def explain(self, examples: UnitExamples) -> Explanation:
        strings = _window_strings(examples)
        bg = examples.background
        if bg is not None:
            ids = bg.token_ids.to(torch.int64)
            acts = bg.acts.to(torch.float32)
            for t, s in bg.vocab.items():
                strings.setdefault(int(t), s)
        else:
            ids, acts = _window_tensors(examples.examples)
        return self._fit(ids, acts, max(examples.max_activation, 0.0), strings)

    def _fit(self, ids: Tensor, acts: Tensor, max_activation: float, strings: Mapping[int, str]) -> Explanation:
        valid = ids >= 0
        y = (acts > self.fire_fraction * max_activation) & valid
        n_pos = int(y.sum())
        if n_pos == 0:
            return Explanation("(no firing examples)", [], self.name, {"n_firing": 0})
        cands, M = _candidates(ids, y, self.max_n, min(self.min_support, n_pos), self.max_candidates)
        if not cands:
            return Explanation("(no recurring tokens)", [], self.name, {"n_firing": n_pos})
        y, valid = y.reshape(-1), valid.reshape(-1)
        chosen: list[int] = []
        current = torch.zeros_like(y)
        best_f1 = 0.0
        lengths = torch.tensor([len(g) for g in cands], dtype=torch.float32)
        for _ in range(self.max_patterns):
            union = M | current[:, None]
            tp = (union & y[:, None]).sum(0).to(torch.float32)
            fp = (union & ~y[:, None] & valid[:, None]).sum(0).to(torch.float32)
            f1 = _f1(tp, fp, n_pos)
            f1[chosen] = -1.0
            score = f1 - 1e-6 * lengths  # on ties prefer shorter n-grams, then earlier candidates
            j = int(torch.argmax(score))
            if float(f1[j]) - best_f1 < self.min_gain:
                break
            chosen.append(j)
            best_f1 = float(f1[j])
            current = union[:, j]
        patterns = [cands[j] for j in chosen]
        n_tp = int((current & y).sum())
        n_fp = int((current & ~y & valid).sum())
        text = ("fires on " + ", ".join(json.dumps(_pattern_text(p, strings), ensure_ascii=False) for p in patterns)
                if patterns else "(no predictive tokens)")
        meta = {"n_firing": n_pos, "train_precision": n_tp / max(1, n_tp + n_fp), "train_recall": n_tp / max(1, n_pos),
                "pattern_strings": [_pattern_text(p, strings) for p in patterns]}
        return Explanation(text, patterns, self.name, meta)


def _window_tensors(exs: Sequence[ActivationExample]) -> tuple[Tensor, Tensor]:
    """Example windows as padded [E, width] token ids (-1 pad) and activations."""
    width = max((len(ex.token_ids) for ex in exs), default=0)
    ids = torch.full((len(exs), width), -1, dtype=torch.int64)
    acts = torch.zeros((len(exs), width), dtype=torch.float32)
    for e, ex in enumerate(exs):
        ids[e, :len(ex.token_ids)] = torch.tensor(ex.token_ids, dtype=torch.int64)
        acts[e, :len(ex.acts)] = torch.tensor(ex.acts, dtype=torch.float32)
    return ids, acts


def _candidates(ids: Tensor, y: Tensor, max_n: int, need: int, max_candidates: int
                ) -> tuple[list[tuple[int, ...]], Tensor]:
    """The n-grams ending at firing positions ``y`` seen >= ``need`` times (the most frequent ``max_candidates``
    per length), and where each matches: [positions, candidates] bool."""
    n_rows, width = ids.shape
    cands: list[tuple[int, ...]] = []
    cols: list[Tensor] = []
    for n in range(1, max_n + 1):
        if n > width:
            break
        grams = torch.full((n_rows, width, n), -1, dtype=torch.int64)
        for j in range(n):
            grams[:, n - 1:, j] = ids[:, j:width - n + 1 + j]
        ok = (grams >= 0).all(-1)
        at_fire = grams[y & ok]  # [P, n]
        if at_fire.numel() == 0:
            continue
        uniq, counts = torch.unique(at_fire, dim=0, return_counts=True)
        keep = counts >= need
        uniq, counts = uniq[keep], counts[keep]
        if uniq.numel() == 0:
            continue
        if uniq.shape[0] > max_candidates:
            uniq = uniq[torch.argsort(counts, descending=True, stable=True)[:max_candidates]]
        match = (grams[:, :, None, :] == uniq[None, None, :, :]).all(-1) & ok[..., None]  # [rows, width, C_n]
        cands.extend(tuple(int(t) for t in g) for g in uniq)
        cols.append(match.reshape(-1, uniq.shape[0]))
    return cands, (torch.cat(cols, dim=1) if cols else torch.zeros(n_rows * width, 0, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------------------------
# Examples from results or from dense activations
# ----------------------------------------------------------------------------------------------------------------


def examples_for_feature(results: FeatureResults, feature: int, *, buckets: bool = True) -> UnitExamples:
    """The top examples (and bucket samples) of a feature from the analysis pass."""
    rep = results.feature(feature)
    exs = list(rep.top)
    if buckets:
        for b in rep.buckets:
            exs.extend(b.examples)
    return UnitExamples(unit=rep.index, kind="feature", max_activation=rep.max_activation, examples=exs)


def _window_example(ids_row: Tensor, acts_row: Tensor, ctx_idx: int, pos: int, before: int, after: int,
                    vocab: Mapping[int, str]) -> ActivationExample:
    c = ids_row.shape[0]
    lo, hi = max(0, pos - before), min(c, pos + after + 1)
    ids = [int(t) for t in ids_row[lo:hi]]
    return ActivationExample(context_idx=int(ctx_idx), position=int(pos), activation=float(acts_row[pos]),
                             tokens=[vocab.get(t, f"<{t}>") for t in ids], token_ids=ids,
                             acts=[float(a) for a in acts_row[lo:hi]], index=pos - lo, start=lo)


def examples_from_activations(acts: Tensor, token_ids: Tensor, *, units: Sequence[int] | None = None,
                              kind: str = "feature", labels: Sequence[str] | None = None, top_k: int = 20,
                              n_buckets: int = 10, per_bucket: int = 5, context_before: int = 12,
                              context_after: int = 4, threshold: float = 0.0, seed: int = 0,
                              vocab: Mapping[int, str] | None = None, context_offset: int = 0,
                              background: bool = False, valid: Tensor | None = None) -> list[UnitExamples]:
    """Top-K contexts and bucket samples of each unit from dense activations [n_ctx, ctx, n_units] (in memory).

    The same selection rules as the streaming pass: one top example per context (its strongest token), bucket
    samples = the ``per_bucket`` smallest hash keys among the tokens of each linear bucket of (0, max].
    ``background=True`` also attaches every token's activation (a :class:`Background`; tokens outside the bool
    mask ``valid`` [n_ctx, ctx], e.g. BOS, left out) so that explainers can fit on all of them.
    """
    if acts.dim() != 3 or acts.shape[:2] != token_ids.shape:
        raise ValueError(f"acts must be [n_ctx, ctx, n_units] matching token_ids [n_ctx, ctx]; got "
                         f"{tuple(acts.shape)} and {tuple(token_ids.shape)}")
    n_ctx, c, U = acts.shape
    vocab = vocab or {}
    bg_ids = token_ids.to(torch.int64)
    if background and valid is not None:
        if valid.shape != token_ids.shape:
            raise ValueError(f"valid {tuple(valid.shape)} must match token_ids {tuple(token_ids.shape)}")
        bg_ids = bg_ids.masked_fill(~valid.to(torch.bool), -1)
    out = []
    for u in range(U):
        a = acts[:, :, u].to(torch.float32)
        mx = float(a.max()) if a.numel() else 0.0
        exs: list[ActivationExample] = []
        if mx > threshold:
            per_ctx, arg = a.max(dim=1)
            order = torch.argsort(per_ctx, descending=True, stable=True)
            for ci in order[:top_k].tolist():
                if float(per_ctx[ci]) <= threshold:
                    break
                exs.append(_window_example(token_ids[ci], a[ci], ci + context_offset, int(arg[ci]), context_before,
                                           context_after, vocab))
            flat = a.reshape(-1)
            fire = (flat > threshold).nonzero().squeeze(1)
            vals = flat[fire]
            b = (vals / mx * n_buckets).floor().to(torch.int64).clamp_(0, n_buckets - 1)
            keys = hash_keys(torch.full_like(fire, int(units[u]) if units is not None else u), fire, seed)
            for bi in range(n_buckets):
                sel = (b == bi).nonzero().squeeze(1)
                if sel.numel() == 0:
                    continue
                pick = sel[torch.argsort(keys[sel])[:per_bucket]]
                for f in fire[pick].tolist():
                    ci, p = divmod(f, c)
                    exs.append(_window_example(token_ids[ci], a[ci], ci + context_offset, p, context_before,
                                               context_after, vocab))
        unit = int(units[u]) if units is not None else u
        out.append(UnitExamples(unit=unit, kind=kind, max_activation=mx, examples=exs,
                                label=labels[u] if labels is not None else "",
                                background=Background(bg_ids, a, vocab) if background else None))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Batches of features
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ExplainedUnit:
    explanation: Explanation
    score: ExplanationScore | None = None


class ExplanationSet:
    """Explanations (and their scores) by feature index; saved as one JSON file."""

    def __init__(self, items: Mapping[int, ExplainedUnit] | None = None, meta: dict | None = None):
        self.items: dict[int, ExplainedUnit] = dict(items or {})
        self.meta = dict(meta or {})

    def __getitem__(self, i: int) -> ExplainedUnit:
        return self.items[int(i)]

    def __contains__(self, i: object) -> bool:
        return i in self.items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(sorted(self.items))

    def texts(self) -> dict[int, str]:
        return {i: u.explanation.text for i, u in self.items.items()}

    def __repr__(self) -> str:
        scored = sum(u.score is not None for u in self.items.values())
        return f"ExplanationSet({len(self.items)} explanations, {scored} scored)"

    def _repr_html_(self) -> str:
        from workbench.core.html_repr import repr_table

        def f1(u):
            return getattr(u.score, "f1", None) if u.score is not None else None

        units = sorted(self.items.items(), key=lambda kv: -(f1(kv[1]) or -1.0))
        rows = [[i, u.explanation.text, f1(u)] for i, u in units]
        return repr_table(repr(self), ["feature", "explanation", "held-out F1"], rows, max_rows=12)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / "explanations.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": self.meta,
                   "features": {str(i): {"explanation": u.explanation.to_dict(),
                                         "score": u.score.to_dict() if u.score else None}
                                for i, u in sorted(self.items.items())}}
        return write_tagged_json(path, payload, format=EXPLANATIONS_FORMAT, format_version=EXPLANATIONS_VERSION)

    @classmethod
    def load(cls, path: str | Path) -> "ExplanationSet":
        path = Path(path)
        if path.is_dir():
            path = path / "explanations.json"
        if not path.is_file():
            raise ValueError(f"{path} is missing: run explain_features(...).save() first")
        fix = "delete it and explain again"
        data = read_tagged_json(path, format=EXPLANATIONS_FORMAT, what="an explanations file", fix=fix,
                                max_version=EXPLANATIONS_VERSION)
        try:
            items = {int(i): ExplainedUnit(Explanation.from_dict(d["explanation"]),
                                           ExplanationScore.from_dict(d["score"]) if d.get("score") else None)
                     for i, d in data["features"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{path} is corrupt ({type(err).__name__}: {err}): {fix}") from None
        return cls(items, data.get("meta", {}))


def explain_features(results: FeatureResults, features: Iterable[int] | None = None,
                     explainer: Explainer | None = None, *, progress: bool = False) -> ExplanationSet:
    """Explain features from their top and bucket examples (default: every alive feature, offline explainer)."""
    explainer = explainer or TokenExplainer()
    feats = results.alive().tolist() if features is None else [results.check_index(i) for i in features]
    items = {}
    for i in tqdm(feats, desc="explain", disable=not progress, leave=False):
        items[i] = ExplainedUnit(explainer.explain(examples_for_feature(results, i)))
    return ExplanationSet(items, {"explainer": getattr(explainer, "name", type(explainer).__name__),
                                  "sae_fingerprint": results.meta.get("sae_fingerprint")})


def heldout_contexts(results: FeatureResults, store: StoreLike) -> range:
    """The store's contexts the analysis pass did not see (ValueError if there are none)."""
    if results.n_contexts >= store.n_contexts:
        raise ValueError(f"the analysis pass used all {store.n_contexts} contexts of the store, so none are held out: "
                         f"rerun compute_features with FeatureConfig(max_tokens=...) below the store's "
                         f"{store.n_tokens} tokens, or score on another store")
    return range(results.n_contexts, store.n_contexts)


def score_features(explanations, store: StoreLike | None = None, sae: SAELike | None = None,
                   contexts: Sequence[int] | range | None = None, *,
                   results: FeatureResults | None = None, n_buckets: int = 10, threshold: float = 0.0,
                   batch_contexts: int = 32, progress: bool = False) -> ExplanationSet:
    """Score every explanation of the set on ``contexts`` of ``store`` (encoded by ``sae``), in place; returns it.

    Bucket scales come from ``results``' max activations when given (streaming, memory of one batch); without
    ``results`` every batch is kept until the max over ``contexts`` is known. ``explanations`` may instead be an
    :class:`~workbench.analysis.bundle.AnalysisBundle` with explanations: its store, SAE and results are used, and
    ``contexts`` defaults to every context of its held-out store when it has one (else the store's contexts the
    feature pass did not see).
    """
    if isinstance(explanations, AnalysisBundle):
        bundle = explanations
        if bundle.explanations is None:
            raise ValueError("the bundle has no explanations to score: build it with explanations= "
                             "(explain_features(results)) or use bundle.with_explanations(...)")
        explanations, results = bundle.explanations, bundle.results
        if contexts is None and bundle.heldout is not None:
            store, sae, contexts = bundle.heldout, bundle.sae, range(bundle.heldout.n_contexts)
        else:
            store, sae = bundle.store, bundle.sae
            contexts = heldout_contexts(results, store) if contexts is None else contexts
    if store is None or sae is None or contexts is None:
        raise ValueError("score_features needs store, sae and contexts (or an AnalysisBundle as its first argument)")
    feats = sorted(explanations.items)
    contexts = list(contexts)
    if not feats or not contexts:
        return explanations
    if results is not None and results.d_sae != sae.cfg.d_sae:
        raise ValueError(f"the results have d_sae={results.d_sae} but the SAE has {sae.cfg.d_sae}: they do not belong "
                         f"together")
    maxes = results.max_activation[feats].tolist() if results is not None else None
    accs = [ScoreAccumulator(m, n_buckets, threshold) for m in maxes] if maxes is not None else []
    kept: list[tuple[Tensor, Tensor]] = []
    for i in tqdm(range(0, len(contexts), batch_contexts), desc="score", disable=not progress, leave=False):
        ids, acts = encode_contexts(store, sae, contexts[i:i + batch_contexts], features=feats)
        if maxes is None:
            kept.append((ids, acts))
        else:
            _score_batch(explanations, feats, accs, ids, acts, store)
    if maxes is None:
        maxes = torch.stack([a.amax(dim=(0, 1)) for _, a in kept]).amax(0).tolist()
        accs = [ScoreAccumulator(m, n_buckets, threshold) for m in maxes]
        for ids, acts in kept:
            _score_batch(explanations, feats, accs, ids, acts, store)
    for j, f in enumerate(feats):
        explanations.items[f].score = accs[j].result()
    return explanations


def _score_batch(explanations: ExplanationSet, feats: list[int], accs: list[ScoreAccumulator], ids: Tensor,
                 acts: Tensor, store: StoreLike) -> None:
    valid = torch.ones(ids.shape, dtype=torch.bool)
    if store.prepend_bos:
        valid[:, 0] = False
    for j, f in enumerate(feats):
        accs[j].update(explanations.items[f].explanation.predict(ids), acts[..., j], valid)


def explanation_text(explanations: Mapping[str, Any] | None, name: str, feature: int) -> str:
    """The explanation text of ``feature`` of the SAE ``name`` in ``{sae name: {feature: explanation}}`` (an
    :class:`Explanation`, a scored unit holding one, or plain text); "" when there is none."""
    expl = (explanations or {}).get(name)
    if expl is None or feature not in expl:
        return ""
    unit = expl[feature]
    return str(getattr(getattr(unit, "explanation", unit), "text", unit))
