"""Reused persona features: do the SAE features that fire where a *person* in a story shows a trait also fire where
the *assistant* shows it, and does clamping them bring the trait out (docs/methods.md §34)?

    from workbench.persona.reuse import span_feature_acts, top_features, overlap, clamp_trial
    narr = span_feature_acts(model, sae, 15, [bos] * n, stories)          # [n_texts, d_sae] per-text means
    delta = mean_delta(narr[:8], narr[8:])                                # trait minus neutral stories
    overlap(top_features(delta, 16), top_features(asst_delta, 16))        # Jaccard of the two top-k sets

The pieces:

- :func:`span_feature_acts`: per text, the SAE's activations at every token of a span (after a prefix: BOS for a
  story, the chat prompt for an assistant turn), averaged over the span's tokens (encode first, then average: the
  SAE is not linear).
- :func:`mean_delta` / :func:`shuffled_delta`: the trait-minus-neutral difference of those means, and the same with
  the labels of exactly half of the matched pairs swapped (the control of extraction, so the trait cancels).
- :func:`top_features`, :func:`jaccard`, :func:`rank_correlation`, :func:`overlap_row`: the overlap of the
  narrative top-k with the assistant top-k, beside control overlaps (another trait's narratives, shuffled labels).
- :class:`FeatureSetClamp` / :func:`clamp_trial`: clamp a set of features at once (``x + sum_i (v_i - f_i(x))
  W_dec[i]``, the SAE error kept) and judge the answers, with :func:`random_features` for the control set.
- :func:`streetlight`: compare an interpretability score (held-out explanation F1) of reused features with that of
  trait-related features that are not reused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from workbench.core.protocols import ModelLike, SAELike
from workbench.intervene.steering import Steering
from workbench.persona.extract import shuffled_control, span_residuals

__all__ = ["FeatureSetClamp", "clamp_trial", "jaccard", "mean_delta", "overlap_row", "random_features",
           "rank_correlation", "shuffled_delta", "span_feature_acts", "streetlight", "top_features"]


# ---------------------------------------------------------------------------------------------- activations


def span_feature_acts(model: ModelLike, sae: SAELike, layer: int, prefixes: Sequence[str], spans: Sequence[str]
                      ) -> Tensor:
    """Per (prefix, span): the SAE's activations on the span's tokens (tokenised after the prefix's), averaged over
    those tokens: ``[n, d_sae]`` float32. ``layer``: the SAE's ``blocks.layer.hook_resid_post``."""
    if len(prefixes) != len(spans) or not spans:
        raise ValueError(f"give as many prefixes as spans (got {len(prefixes)} and {len(spans)}), at least one")
    if int(sae.W_dec.shape[1]) != int(model.cfg.d_model):
        raise ValueError(f"the SAE's decoder is {tuple(sae.W_dec.shape)} but the model's d_model is "
                         f"{model.cfg.d_model}: use an SAE trained on this model")
    out = torch.zeros(len(spans), int(sae.cfg.d_sae))
    for r, (prefix, span) in enumerate(zip(prefixes, spans)):
        x = span_residuals(model, prefix, span, [int(layer)],
                           empty_error=f"span {r} has no tokens: drop empty texts first")[int(layer)]
        with torch.inference_mode():
            out[r] = sae.encode(x.to(sae.device, sae.dtype)).float().mean(0).cpu()
    return out


def mean_delta(pos: Tensor, neg: Tensor) -> Tensor:
    """Mean over the rows of ``pos`` minus the mean over the rows of ``neg`` ([n, d] each): ``[d]``."""
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1] or not len(pos) or not len(neg):
        raise ValueError(f"pos and neg must be non-empty [n, d] tensors of the same d, got {tuple(pos.shape)} and "
                         f"{tuple(neg.shape)}")
    return pos.float().mean(0) - neg.float().mean(0)


def shuffled_delta(pos: Tensor, neg: Tensor, seed: int = 0) -> Tensor:
    """:func:`mean_delta` of matched pairs (row i of ``pos`` with row i of ``neg``) with exactly half of the pairs'
    labels swapped: the trait difference cancels, what the pairs share stays."""
    if pos.shape != neg.shape or len(pos) < 2:
        raise ValueError(f"the shuffled control needs >= 2 matched pairs of equal shape, got {tuple(pos.shape)} and "
                         f"{tuple(neg.shape)}")
    return shuffled_control(pos.float(), neg.float(), seed)


# ---------------------------------------------------------------------------------------------- overlap


def top_features(scores: Tensor, k: int, *, positive: bool = True) -> list[int]:
    """The ``k`` features with the largest score (best first); ``positive``: only scores > 0."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = torch.argsort(scores.float(), descending=True)[:k]
    return [int(i) for i in order if not positive or float(scores[i]) > 0]


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """``|a & b| / |a | b|`` (0 for two empty sets)."""
    sa, sb = set(int(x) for x in a), set(int(x) for x in b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def rank_correlation(x: Tensor, y: Tensor, features: Sequence[int] | None = None) -> float:
    """Spearman correlation of two score vectors (over ``features``, default all); NaN when either is constant."""
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of the same length, got {tuple(x.shape)} and {tuple(y.shape)}")
    idx = torch.tensor(sorted(set(int(i) for i in features))) if features is not None else torch.arange(len(x))
    if len(idx) < 3:
        return float("nan")
    rx = torch.argsort(torch.argsort(x[idx].double())).double()
    ry = torch.argsort(torch.argsort(y[idx].double())).double()
    if float(x[idx].std()) == 0 or float(y[idx].std()) == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def overlap_row(narrative: Tensor, assistant: Tensor, controls: Mapping[str, Tensor], k: int) -> dict:
    """The overlap of the narrative delta's top-``k`` features with the assistant delta's (Jaccard, shared count,
    Spearman over the union of both top sets), and the same for each control delta in place of the narrative one.
    ``shared``: the reused features, best narrative rank first."""
    top_a = top_features(assistant, k)

    def stats(delta: Tensor) -> dict:
        top_n = top_features(delta, k)
        union = sorted(set(top_n) | set(top_a))
        return {"jaccard": round(jaccard(top_n, top_a), 4), "n_shared": len(set(top_n) & set(top_a)),
                "spearman": round(rank_correlation(delta, assistant, union), 4) if len(union) >= 3 else float("nan")}

    top_n = top_features(narrative, k)
    row: dict[str, Any] = {"k": k, **stats(narrative), "shared": [i for i in top_n if i in set(top_a)],
                           "narrative_top": top_n, "assistant_top": top_a}
    for name, delta in controls.items():
        row[f"control_{name}"] = stats(delta)
    return row


# ---------------------------------------------------------------------------------------------- clamping


@dataclass(eq=False)
class FeatureSetClamp(Steering):
    """Clamp several SAE features at once: ``x + sum_i (values[i] - f_i(x)) W_dec[features[i]]`` (the SAE error and
    every other feature's contribution kept), at every position after ``skip_first``."""

    sae: Any = field(default=None, repr=False)
    features: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.sae is None or not self.features or len(self.features) != len(self.values):
            raise ValueError("FeatureSetClamp needs sae= and as many values as features (at least one)")
        d = int(self.sae.cfg.d_sae)
        bad = [f for f in self.features if not 0 <= int(f) < d]
        if bad:
            raise ValueError(f"unknown feature(s) {bad}: the SAE has features 0..{d - 1}")
        self.features = tuple(int(f) for f in self.features)

    def apply(self, x: Tensor) -> Tensor:
        idx = torch.tensor(self.features)
        with torch.no_grad():
            f = self.sae.encode(x.to(self.sae.device, self.sae.dtype))[..., idx].float()
            target = torch.tensor(self.values, dtype=torch.float32, device=f.device)
            step = (target - f) @ self.sae.W_dec[idx].float()
        return (x.float() + step.to(x.device)).to(x.dtype)


def random_features(d_sae: int, n: int, *, exclude: Sequence[int] = (), pool: Sequence[int] | None = None,
                    seed: int = 0) -> list[int]:
    """``n`` distinct features drawn (seeded) from ``pool`` (default all) minus ``exclude``."""
    cand = [i for i in (range(d_sae) if pool is None else pool) if i not in set(int(e) for e in exclude)]
    if len(cand) < n:
        raise ValueError(f"only {len(cand)} candidate features for a control set of {n}: lower n or widen the pool")
    g = torch.Generator().manual_seed(int(seed))
    return sorted(cand[int(i)] for i in torch.randperm(len(cand), generator=g)[:n])


def clamp_trial(model: ModelLike, steering: Steering | None, questions: Sequence[str], judge, config) -> dict:
    """Answers to ``questions`` under ``steering`` (None: unsteered), judged: mean trait and coherence, their
    count and up to three answers. ``config``: a :class:`workbench.persona.steer.SteerConfig` (sampling)."""
    from workbench.persona.steer import score_answers

    traits, cohs, texts = score_answers(model, questions, steering, judge, config)
    n = len(traits)
    sem = float(torch.tensor(traits, dtype=torch.float64).std()) / math.sqrt(n) if n > 1 else float("nan")
    return {"trait": round(sum(traits) / n, 2), "trait_sem": round(sem, 2),
            "coherence": round(sum(cohs) / n, 2), "n": n, "examples": texts[:3]}


# ---------------------------------------------------------------------------------------------- streetlight


def streetlight(scores: Mapping[int, float], reused: Sequence[int], others: Sequence[int]) -> dict:
    """An interpretability score (e.g. held-out explanation F1 per feature) of the ``reused`` features against the
    trait-related features that are not reused (``others``): means, counts and the probability that a reused
    feature outscores a non-reused one (the Mann-Whitney AUC, 0.5 = no difference). Features without a score are
    dropped."""
    a = [float(scores[i]) for i in reused if i in scores and math.isfinite(float(scores[i]))]
    b = [float(scores[i]) for i in others if i in scores and math.isfinite(float(scores[i]))]
    auc = (sum((x > y) + 0.5 * (x == y) for x in a for y in b) / (len(a) * len(b))) if a and b else float("nan")
    return {"reused_mean": round(sum(a) / len(a), 4) if a else float("nan"), "n_reused": len(a),
            "other_mean": round(sum(b) / len(b), 4) if b else float("nan"), "n_other": len(b),
            "auc": round(auc, 4) if a and b else float("nan")}
