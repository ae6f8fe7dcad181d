"""Decomposing a persona vector into SAE features (docs/methods.md §12, §16).

    from workbench.persona.decompose import decompose
    d = decompose(pv.vectors[15], sae, top_n=10, ks=(1, 5, 10, 50))
    d.top            # [(feature, cosine), ...] best first: show them with FeatureCard / widgets.FeatureCardView
    d.reconstruction # {k: fraction of ||v||^2 the top-k decoder directions reconstruct}

The cosine of the vector with every decoder row ``W_dec[i]`` (the SAE must be trained on the same hook as the
vector's layer) ranks the features that point the same way. The top-k reconstruction fraction is
``1 - ||v - P_k v||^2 / ||v||^2`` where ``P_k`` projects onto the span of the k decoder rows with the largest
cosine (least squares, so correlated rows are not double counted). ``baseline`` is the same measure for a seeded
Gaussian random direction (its own top-k rows): k random rows would give only about ``k / d_model``, but picking the
rows most aligned with the direction does better than that, so the fair reference is the random direction's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from workbench.core.protocols import SAELike

__all__ = ["Decomposition", "decoder_cosines", "decompose", "topk_reconstruction"]


def decoder_cosines(vector: Tensor, W_dec: Tensor) -> Tensor:
    """Cosine of ``vector`` [d] with each decoder row of ``W_dec`` [d_sae, d] -> [d_sae]."""
    v = vector.detach().to(torch.float32).cpu()
    W = W_dec.detach().to(torch.float32).cpu()
    if W.ndim != 2 or W.shape[1] != v.shape[-1]:
        raise ValueError(f"d_model mismatch: the vector has {v.shape[-1]} dimensions, W_dec is {tuple(W.shape)}: use "
                         "an SAE trained on the same model and layer")
    if float(v.norm()) == 0:
        raise ValueError("the vector is zero")
    return (W @ v) / (W.norm(dim=1).clamp_min(1e-12) * v.norm())


def topk_reconstruction(vector: Tensor, W_dec: Tensor, features: Sequence[int]) -> float:
    """Fraction of ``||v||^2`` explained by the least-squares combination of the decoder rows ``features``."""
    v = vector.detach().to(torch.float32).cpu()
    if not len(features):
        return 0.0
    A = W_dec.detach().to(torch.float32).cpu()[list(features)].T  # [d, k]
    coef = torch.linalg.lstsq(A, v[:, None]).solution
    resid = v - (A @ coef)[:, 0]
    return float(1 - resid.pow(2).sum() / v.pow(2).sum())


@dataclass
class Decomposition:
    top: list[tuple[int, float]]
    reconstruction: dict[int, float]
    baseline: dict[int, float]
    cosines: Tensor | None = field(repr=False, default=None)

    def to_dict(self) -> dict:
        return {"top": [{"feature": i, "cosine": round(c, 4)} for i, c in self.top],
                "reconstruction": self.reconstruction, "random_direction_baseline": self.baseline}


def decompose(vector: Tensor, sae: SAELike, top_n: int = 10, ks: Sequence[int] = (1, 5, 10, 20, 50), *, seed: int = 0
              ) -> Decomposition:
    """Top features by cosine and the top-k reconstruction fractions (module docstring). ``sae``: an SAE (anything
    with ``W_dec`` [d_sae, d_model]) or the ``W_dec`` tensor itself."""
    W = sae if isinstance(sae, Tensor) else sae.W_dec
    cos = decoder_cosines(vector, W)
    order = torch.argsort(cos, descending=True)
    d = int(W.shape[1])
    top = [(int(i), float(cos[i])) for i in order[: int(top_n)]]
    ks = [int(k) for k in ks if 0 < int(k) <= min(W.shape[0], d)]
    rec = {k: round(topk_reconstruction(vector, W, order[:k].tolist()), 4) for k in ks}
    r = torch.randn(d, generator=torch.Generator().manual_seed(int(seed)))
    r_order = torch.argsort(decoder_cosines(r, W), descending=True)
    base = {k: round(topk_reconstruction(r, W, r_order[:k].tolist()), 4) for k in ks}
    return Decomposition(top, rec, base, cos)
