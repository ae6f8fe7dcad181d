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

**Scoring** (:func:`score_explanation`, :class:`ScoreAccumulator`) runs the predictor over held-out tokens: precision
and recall of "predicted" against "fires" (activation > threshold), and the paper's specificity view with
activation buckets: for each of ``n_buckets`` linear buckets between 0 and the unit's max, the fraction of the
tokens in that bucket the predictor calls positive (plus the rate on non-firing tokens).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.analysis.feature_kernels import hash_keys
from workbench.analysis.features import ActivationExample, FeatureResults, encode_contexts
from workbench.core.config import known_fields_only
from workbench.core.persist import read_tagged_json, write_tagged_json

__all__ = [
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
class UnitExamples:
    """What an explainer sees of one unit (a feature or a neuron): example windows with per-token activations."""

    unit: int
    kind: str  # "feature" or "neuron"
    max_activation: float
    examples: list[ActivationExample]
    label: str = ""  # e.g. "L3 N1021" for a neuron


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
    """Top tokens and n-grams of the examples, chosen greedily by F1 on the example windows.

    A position of an example window counts as firing when the unit's activation there is > ``fire_fraction`` of
    its max (0: any non-zero activation). Candidates are the n-grams (n <= ``max_n``) ending at firing positions
    with at least ``min_support`` such positions; each round adds the candidate with the largest F1 gain of the
    union predictor over the windows' tokens, until ``max_patterns`` or a gain below ``min_gain``.
    """

    max_n: int = 3
    max_patterns: int = 6
    min_support: int = 2
    min_gain: float = 0.01
    fire_fraction: float = 0.0
    name: str = "tokens"

    def explain(self, examples: UnitExamples) -> Explanation:
        exs = examples.examples
        strings = _window_strings(examples)
        width = max((len(ex.token_ids) for ex in exs), default=0)
        ids = torch.full((len(exs), width), -1, dtype=torch.int64)
        acts = torch.zeros((len(exs), width), dtype=torch.float32)
        for e, ex in enumerate(exs):
            ids[e, :len(ex.token_ids)] = torch.tensor(ex.token_ids, dtype=torch.int64)
            acts[e, :len(ex.acts)] = torch.tensor(ex.acts, dtype=torch.float32)
        valid = ids >= 0
        y = (acts > self.fire_fraction * max(examples.max_activation, 0.0)) & valid
        n_pos = int(y.sum())
        if n_pos == 0:
            return Explanation("(no firing examples)", [], self.name, {"n_firing": 0})
        need = min(self.min_support, n_pos)
        # n-grams ending at every position ([E, width, n], -1 where they would start before the window)
        cands: list[tuple[int, ...]] = []
        cols: list[Tensor] = []
        for n in range(1, self.max_n + 1):
            if n > width:
                break
            grams = torch.full((len(exs), width, n), -1, dtype=torch.int64)
            for j in range(n):
                grams[:, n - 1:, j] = ids[:, j:width - n + 1 + j]
            ok = (grams >= 0).all(-1)
            at_fire = grams[y & ok]  # [P, n]
            if at_fire.numel() == 0:
                continue
            uniq, counts = torch.unique(at_fire, dim=0, return_counts=True)
            uniq = uniq[counts >= need]
            if uniq.numel() == 0:
                continue
            match = (grams[:, :, None, :] == uniq[None, None, :, :]).all(-1) & ok[..., None]  # [E, width, C_n]
            cands.extend(tuple(int(t) for t in g) for g in uniq)
            cols.append(match.reshape(-1, uniq.shape[0]))
        if not cands:
            return Explanation("(no recurring tokens)", [], self.name, {"n_firing": n_pos})
        M = torch.cat(cols, dim=1)  # [positions, candidates]
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
        tp = int((current & y).sum())
        fp = int((current & ~y & valid).sum())
        text = ("fires on " + ", ".join(json.dumps(_pattern_text(p, strings), ensure_ascii=False) for p in patterns)
                if patterns else "(no predictive tokens)")
        meta = {"n_firing": n_pos, "train_precision": tp / max(1, tp + fp), "train_recall": tp / max(1, n_pos),
                "pattern_strings": [_pattern_text(p, strings) for p in patterns]}
        return Explanation(text, patterns, self.name, meta)


# ----------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ExplanationScore:
    """How well a predictor matches where a unit fires, on held-out tokens.

    ``bucket_counts[b]`` tokens had an activation in bucket b of (0, max]; the predictor called
    ``bucket_predicted[b]`` of them positive: ``bucket_positive_rate`` is the specificity curve of the paper.
    ``false_positive_rate`` is the rate on the non-firing tokens.
    """

    precision: float
    recall: float
    f1: float
    n_tokens: int
    n_firing: int
    n_predicted: int
    n_true_positive: int
    false_positive_rate: float
    bucket_edges: list[float]
    bucket_counts: list[int]
    bucket_predicted: list[int]

    @property
    def bucket_positive_rate(self) -> list[float | None]:
        return [p / c if c else None for p, c in zip(self.bucket_predicted, self.bucket_counts)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ExplanationScore":
        return cls(**known_fields_only(cls, dict(d), "explanation-score field(s)"))


class ScoreAccumulator:
    """Streaming counts for :class:`ExplanationScore` over batches of (predictions, activations)."""

    def __init__(self, max_activation: float, n_buckets: int = 10, threshold: float = 0.0):
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be positive, got {n_buckets}")
        self.max_activation = float(max_activation)
        self.n_buckets, self.threshold = n_buckets, float(threshold)
        self.n = self.fire = self.pred = self.tp = 0
        self.b_count = torch.zeros(n_buckets, dtype=torch.int64)
        self.b_pred = torch.zeros(n_buckets, dtype=torch.int64)

    def update(self, predicted: Tensor, acts: Tensor, valid: Tensor | None = None) -> None:
        p, a = predicted.reshape(-1).cpu(), acts.reshape(-1).to(torch.float32).cpu()
        if valid is not None:
            v = valid.reshape(-1).cpu()
            p, a = p[v], a[v]
        fires = a > self.threshold
        self.n += int(a.numel())
        self.fire += int(fires.sum())
        self.pred += int(p.sum())
        self.tp += int((p & fires).sum())
        if self.max_activation > 0 and bool(fires.any()):
            af = a[fires]
            b = (af / self.max_activation * self.n_buckets).floor().to(torch.int64).clamp_(0, self.n_buckets - 1)
            self.b_count += torch.bincount(b, minlength=self.n_buckets)
            self.b_pred += torch.bincount(b[p[fires]], minlength=self.n_buckets)

    def result(self) -> ExplanationScore:
        prec = self.tp / self.pred if self.pred else 0.0
        rec = self.tp / self.fire if self.fire else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        neg = self.n - self.fire
        fpr = (self.pred - self.tp) / neg if neg else 0.0
        mx, nb = self.max_activation, self.n_buckets
        return ExplanationScore(precision=prec, recall=rec, f1=f1, n_tokens=self.n, n_firing=self.fire,
                                n_predicted=self.pred, n_true_positive=self.tp, false_positive_rate=fpr,
                                bucket_edges=[mx * j / nb for j in range(nb + 1)],
                                bucket_counts=self.b_count.tolist(), bucket_predicted=self.b_pred.tolist())


def score_explanation(explanation: Explanation, token_ids: Tensor, acts: Tensor, *, max_activation: float | None = None,
                      n_buckets: int = 10, threshold: float = 0.0, valid: Tensor | None = None) -> ExplanationScore:
    """Score ``explanation`` on tokens [n_ctx, ctx] with the unit's activations [n_ctx, ctx] (pure).

    ``max_activation`` sets the bucket scale (default: the max of ``acts``); ``valid`` masks tokens (e.g. BOS).
    """
    if token_ids.shape != acts.shape:
        raise ValueError(f"token_ids {tuple(token_ids.shape)} and acts {tuple(acts.shape)} must have the same shape")
    mx = float(acts.max()) if max_activation is None and acts.numel() else float(max_activation or 0.0)
    acc = ScoreAccumulator(mx, n_buckets, threshold)
    acc.update(explanation.predict(token_ids), acts, valid)
    return acc.result()


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
                              vocab: Mapping[int, str] | None = None, context_offset: int = 0
                              ) -> list[UnitExamples]:
    """Top-K contexts and bucket samples of each unit from dense activations [n_ctx, ctx, n_units] (in memory).

    The same selection rules as the streaming pass: one top example per context (its strongest token), bucket
    samples = the ``per_bucket`` smallest hash keys among the tokens of each linear bucket of (0, max].
    """
    if acts.dim() != 3 or acts.shape[:2] != token_ids.shape:
        raise ValueError(f"acts must be [n_ctx, ctx, n_units] matching token_ids [n_ctx, ctx]; got "
                         f"{tuple(acts.shape)} and {tuple(token_ids.shape)}")
    n_ctx, c, U = acts.shape
    vocab = vocab or {}
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
                                label=labels[u] if labels is not None else ""))
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


def heldout_contexts(results: FeatureResults, store) -> range:
    """The store's contexts the analysis pass did not see (ValueError if there are none)."""
    if results.n_contexts >= store.n_contexts:
        raise ValueError(f"the analysis pass used all {store.n_contexts} contexts of the store, so none are held out: "
                         f"rerun compute_features with FeatureConfig(max_tokens=...) below the store's "
                         f"{store.n_tokens} tokens, or score on another store")
    return range(results.n_contexts, store.n_contexts)


def score_features(explanations: ExplanationSet, store, sae, contexts: Sequence[int] | range, *,
                   results: FeatureResults | None = None, n_buckets: int = 10, threshold: float = 0.0,
                   batch_contexts: int = 32, progress: bool = False) -> ExplanationSet:
    """Score every explanation of the set on ``contexts`` of ``store`` (encoded by ``sae``), in place; returns it.

    Bucket scales come from ``results``' max activations when given (streaming, memory of one batch); without
    ``results`` every batch is kept until the max over ``contexts`` is known.
    """
    feats = sorted(explanations.items)
    contexts = list(contexts)
    if not feats or not contexts:
        return explanations
    if results is not None and results.d_sae != sae.cfg.d_sae:
        raise ValueError(f"the results have d_sae={results.d_sae} but the SAE has {sae.cfg.d_sae}: they do not belong "
                         f"together")
    maxes = results.max_activation[feats].tolist() if results is not None else None
    accs = [None if maxes is None else ScoreAccumulator(m, n_buckets, threshold) for m in (maxes or feats)]
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
                 acts: Tensor, store) -> None:
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
