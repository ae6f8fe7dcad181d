"""``jumprelu`` (Rajamanoharan et al. 2024, Gemma Scope): a per-latent threshold learned through a straight-through
estimator (rectangle kernel of width ``jumprelu_bandwidth``) and a direct L0 penalty; unit-norm decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.sae.architectures.base import SAEArchitecture, register
from workbench.sae.kernels import Selection, select_above

__all__ = ["JumpReLUArchitecture", "JumpReLUFunction", "StepFunction", "rectangle"]


def rectangle(u: Tensor) -> Tensor:
    """The STE kernel: 1 on (-1/2, 1/2), 0 elsewhere."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """``pre * H(pre - theta)``; d/dpre = H(pre - theta); d/dtheta by the rectangle-kernel STE."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = grad * (pre > theta).to(grad.dtype)
        grad_theta = -(theta / bw) * rectangle((pre - theta) / bw) * grad
        return grad_pre, grad_theta, None


class StepFunction(torch.autograd.Function):
    """``H(pre - theta)``, for the L0 penalty; the STE sends gradient to theta only."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        bw = ctx.bandwidth
        return None, -(1.0 / bw) * rectangle((pre - theta) / bw) * grad, None


class JumpReLUArchitecture(SAEArchitecture):
    name = "jumprelu"
    sparsity = "l0"
    extra_tensors = ("threshold",)
    has_threshold = True
    sae_lens_name = "jumprelu"
    sae_lens_reads = ("jumprelu",)

    def default_lr(self, d_sae: int) -> float:
        return 7e-4

    def init_tensors(self, sae, cfg, dtype: torch.dtype) -> None:
        sae.threshold = nn.Parameter(torch.full((cfg.d_sae,), float(cfg.jumprelu_init_threshold), dtype=dtype))

    def activate(self, sae, pre: Tensor) -> Tensor:
        return F.relu(pre) * (pre > sae.threshold.clamp_min(0)).to(pre.dtype)

    def code_cut(self, sae, threshold: float) -> Tensor:
        return sae.threshold.detach().clamp_min(0).clamp_min(threshold)

    def select(self, sae, pre: Tensor) -> Selection:
        # every entry the STE window touches, pre > theta - bandwidth / 2
        return select_above(pre, sae.threshold.detach() - sae.cfg.jumprelu_bandwidth / 2)

    def activation(self, sae, codes) -> Tensor:
        return JumpReLUFunction.apply(codes.pre, codes.per_latent(sae.threshold), sae.cfg.jumprelu_bandwidth)

    def sparsity_loss(self, sae, codes, f: Tensor, n_rows: int, scale: float) -> Tensor:
        cfg = sae.cfg
        l0 = StepFunction.apply(codes.pre, codes.per_latent(sae.threshold), cfg.jumprelu_bandwidth)
        return cfg.l0_coefficient * scale * l0.sum() / n_rows

    def apply_constraints(self, sae, output) -> None:
        sae.threshold.clamp_(min=0.0)


register(JumpReLUArchitecture())
