"""Synthetic pairs of activations with planted shared and model-exclusive features, for tests and demos.

Model A has width ``d_a`` and model B width ``d_b``. Each planted feature has a random unit direction in each
model it belongs to: shared features in both, A-only features only in A, B-only only in B. A token activates
``active`` features on average (independent Bernoulli draws with the same rate for every feature, magnitudes
uniform in [0.5, 1.5]); a shared feature fires in both models at once with the same magnitude. The truth
(directions and kinds) comes back so a crosscoder's latents can be matched against it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PlantedPair", "planted_pair"]


@dataclass
class PlantedPair:
    x: Tensor  # [n, d_a + d_b], model A first
    d_models: tuple[int, int]
    directions_a: Tensor  # [n_features, d_a] (zero rows for B-only features)
    directions_b: Tensor  # [n_features, d_b] (zero rows for A-only features)
    kinds: Tensor  # [n_features] long: 0 shared, 1 A-only, 2 B-only (the DFC's codes)


def planted_pair(n_tokens: int = 8192, d_a: int = 48, d_b: int = 32, n_shared: int = 24, n_a_only: int = 6,
                 n_b_only: int = 6, active: float = 3.0, noise: float = 0.0, seed: int = 0,
                 same_space: bool = False) -> PlantedPair:
    """Draw ``n_tokens`` paired activations (see the module docstring). ``same_space`` (needs ``d_a == d_b``):
    shared features have the same direction in both models, as in a model and its fine-tune."""
    n_feat = n_shared + n_a_only + n_b_only
    if n_feat < 1 or min(d_a, d_b, n_tokens) < 1:
        raise ValueError("planted_pair needs at least one feature, one token and positive widths")
    gen = torch.Generator().manual_seed(seed)
    kinds = torch.cat([torch.zeros(n_shared), torch.ones(n_a_only), torch.full((n_b_only,), 2.0)]).long()
    dir_a = torch.randn(n_feat, d_a, generator=gen)
    dir_b = torch.randn(n_feat, d_b, generator=gen)
    if same_space:
        if d_a != d_b:
            raise ValueError(f"same_space needs equal widths, got d_a={d_a}, d_b={d_b}")
        dir_b = torch.where((kinds == 0)[:, None], dir_a, dir_b)
    dir_a = dir_a / dir_a.norm(dim=1, keepdim=True) * (kinds != 2).float()[:, None]
    dir_b = dir_b / dir_b.norm(dim=1, keepdim=True) * (kinds != 1).float()[:, None]
    rate = min(1.0, active / n_feat)
    on = torch.rand(n_tokens, n_feat, generator=gen) < rate
    mag = (torch.rand(n_tokens, n_feat, generator=gen) + 0.5) * on.float()
    x = torch.cat([mag @ dir_a, mag @ dir_b], dim=1)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=gen)
    return PlantedPair(x, (d_a, d_b), dir_a, dir_b, kinds)
