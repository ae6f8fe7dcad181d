"""The SDM-MLP (Bricken et al. 2023): one hidden layer read as an SDM, and the MLP baselines it is compared with.

The SDMLP's hidden units are SDM neurons: weight rows are addresses (L2-normalised, non-negative), an input
(L2-normalised, non-negative) activates the ``k`` units whose addresses it is most similar to (Top-K, no bias), and
the output layer is the stored value. The "GABA switch" keeps Top-K from leaving dead units: ``k`` starts at the
width (every unit learns at first) and is annealed linearly down to ``k`` over ``anneal_steps``. Plain SGD, because
a momentum optimiser keeps moving units whose inputs stopped arriving (stale momentum).

Every component is a flag of :class:`MLPConfig`, so the ablations and the baselines are the same class:

    MLPConfig.sdmlp()           # Top-K, no bias, normalised non-negative weights/inputs, GABA switch, SGD
    MLPConfig.relu()            # ReLU MLP with biases
    MLPConfig.topk_mlp()        # Top-K MLP with biases, no normalisation, no annealing
    replace(MLPConfig.sdmlp(), gaba=False)      # an ablation
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["MLPConfig", "SparseMLP", "prepare_inputs"]


@dataclass(frozen=True)
class MLPConfig:
    width: int = 1000
    k: int = 10
    topk: bool = True
    bias: bool = False
    normalise: bool = True  # L2-normalised weight rows and inputs
    nonneg: bool = True  # non-negative weights and inputs
    gaba: bool = True  # anneal k from the width down to k
    anneal_steps: int = 500
    optimizer: str = "sgd"  # "sgd" (no momentum) or "adam"
    lr: float = 0.2
    address_lr: float = 1.0  # the hidden (address) rows' step as a multiple of lr; 0 keeps random addresses fixed

    def __post_init__(self):
        if not 1 <= self.k <= self.width:
            raise ValueError(f"k={self.k} must lie in 1..width={self.width}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")

    @classmethod
    def sdmlp(cls, **kw) -> "MLPConfig":
        return cls(**kw)

    @classmethod
    def relu(cls, **kw) -> "MLPConfig":
        return cls(**{**dict(topk=False, bias=True, normalise=False, nonneg=False, gaba=False, lr=0.05), **kw})

    @classmethod
    def topk_mlp(cls, **kw) -> "MLPConfig":
        return cls(**{**dict(topk=True, bias=True, normalise=False, nonneg=False, gaba=False, lr=0.05), **kw})

    @classmethod
    def smoke(cls) -> "MLPConfig":
        return cls(width=200, k=5, anneal_steps=100)


def prepare_inputs(x: Tensor, cfg: MLPConfig) -> Tensor:
    """Inputs as the model takes them: with ``nonneg``, signed features become [relu(x), relu(-x)] (no information
    lost); with ``normalise``, unit L2 norm. Baselines without either get the same width (zero-padded halves are
    not used: the signed input is repeated with a sign flip) so every model sees the same dimension."""
    x = x.float()
    x = torch.cat([x.clamp_min(0), (-x).clamp_min(0)], -1) if cfg.nonneg else torch.cat([x, -x], -1)
    if cfg.normalise:
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return x


class SparseMLP(nn.Module):
    def __init__(self, d_in: int, n_classes: int, cfg: MLPConfig, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.cfg = cfg
        w = torch.randn(cfg.width, d_in, generator=g) / d_in ** 0.5
        if cfg.nonneg:
            w = w.abs()
        self.w1 = nn.Parameter(w)
        self.b1 = nn.Parameter(torch.zeros(cfg.width)) if cfg.bias else None
        self.w2 = nn.Parameter(torch.randn(n_classes, cfg.width, generator=g) / cfg.width ** 0.5 * 0.1)
        self.b2 = nn.Parameter(torch.zeros(n_classes)) if cfg.bias else None
        self.steps = 0
        self.project()

    def current_k(self) -> int:
        c = self.cfg
        if not c.topk:
            return c.width
        if not c.gaba:
            return c.k
        frac = min(1.0, self.steps / max(1, c.anneal_steps))
        return max(c.k, int(round(c.width - (c.width - c.k) * frac)))

    def hidden(self, x: Tensor) -> Tensor:
        h = x @ self.w1.T
        if self.b1 is not None:
            h = h + self.b1
        h = h.clamp_min(0)
        k = self.current_k()
        if self.cfg.topk and k < self.cfg.width:
            top = h.topk(k, dim=-1)
            h = torch.zeros_like(h).scatter(-1, top.indices, top.values)
        return h

    def forward(self, x: Tensor) -> Tensor:
        out = self.hidden(x) @ self.w2.T
        return out + self.b2 if self.b2 is not None else out

    @torch.no_grad()
    def project(self) -> None:
        """Back onto the constraint set after a step: non-negative, unit-norm address rows."""
        if self.cfg.nonneg:
            self.w1.clamp_(min=0)
        if self.cfg.normalise:
            self.w1.div_(self.w1.norm(dim=1, keepdim=True).clamp_min(1e-8))

    def make_optimizer(self) -> torch.optim.Optimizer:
        lr = self.cfg.lr * (0.05 if self.cfg.optimizer == "adam" else 1.0)
        rest = [p for p in self.parameters() if p is not self.w1]
        groups = [{"params": [self.w1], "lr": lr * self.cfg.address_lr}, {"params": rest, "lr": lr}]
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=lr)
        return torch.optim.SGD(groups, lr=lr, momentum=0.0)
