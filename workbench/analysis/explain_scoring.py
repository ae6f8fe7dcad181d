"""How well an explanation's predictor matches where a unit fires, on held-out tokens (docs/methods.md §5).

Precision and recall of "predicted" against "fires" (activation > threshold), and the paper's specificity view
with activation buckets: for each of ``n_buckets`` linear buckets between 0 and the unit's max, the fraction of the
tokens in that bucket the predictor calls positive (plus the rate on non-firing tokens).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Protocol

import torch
from torch import Tensor

from workbench.core.config import known_fields_only

__all__ = ["ExplanationScore", "Predictor", "ScoreAccumulator", "score_explanation"]


class Predictor(Protocol):
    """Anything with ``predict(token_ids) -> bool tensor`` of the same shape (an explanation)."""

    def predict(self, token_ids: Tensor) -> Tensor: ...



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


def score_explanation(explanation: Predictor, token_ids: Tensor, acts: Tensor, *, max_activation: float | None = None,
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

