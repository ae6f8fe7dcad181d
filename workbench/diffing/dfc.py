"""Dedicated Feature Crosscoders: the partition of latents into A-only, B-only and shared (docs/methods.md §13).

The latent index space is split into three contiguous blocks: ``[0, a_only)`` may only encode from and decode to
model A, ``[a_only, a_only + b_only)`` only model B, the rest both. The *forbidden* weights are model B's encoder
and decoder entries of the A-only latents and model A's of the B-only ones. They start at exactly zero, their
gradients are zeroed before every optimizer step and their Adam moments are zeroed after it, so they stay exactly
zero; :func:`check_partition` measures them (the test asserts < 1e-6 during training and after a resume).

Shapes follow the crosscoder (:mod:`workbench.diffing.crosscoder`): ``W_enc`` [d_A + d_B, d_sae] and ``W_dec``
[d_sae, d_A + d_B], model A's dimensions first. Everything here is a pure function of tensors and the partition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["Partition", "check_partition", "forbidden_blocks", "forbidden_max", "zero_forbidden_"]

SHARED, A_ONLY, B_ONLY = 0, 1, 2
KIND_NAMES = {SHARED: "shared", A_ONLY: "a_only", B_ONLY: "b_only"}


@dataclass(frozen=True)
class Partition:
    """``a_only`` A-only latents first, then ``b_only`` B-only ones, then the shared ones (of ``d_sae``)."""

    d_sae: int
    a_only: int = 0
    b_only: int = 0

    def __post_init__(self) -> None:
        if self.a_only < 0 or self.b_only < 0 or self.a_only + self.b_only > self.d_sae:
            raise ValueError(f"a partition of {self.d_sae} latents cannot hold a_only={self.a_only} and b_only="
                             f"{self.b_only}: both must be >= 0 and together at most d_sae")

    @classmethod
    def from_fractions(cls, d_sae: int, a_fraction: float = 0.05, b_fraction: float = 0.05) -> "Partition":
        """The DFC default: 5% of the latents exclusive to each model (rounded, at least 1 when the fraction > 0)."""
        for name, f in (("a_fraction", a_fraction), ("b_fraction", b_fraction)):
            if not 0 <= f < 1:
                raise ValueError(f"{name}={f} must lie in [0, 1)")
        n_a = max(1, round(a_fraction * d_sae)) if a_fraction > 0 else 0
        n_b = max(1, round(b_fraction * d_sae)) if b_fraction > 0 else 0
        return cls(int(d_sae), int(n_a), int(n_b))

    @property
    def is_dedicated(self) -> bool:
        return self.a_only > 0 or self.b_only > 0

    @property
    def a_slice(self) -> slice:
        return slice(0, self.a_only)

    @property
    def b_slice(self) -> slice:
        return slice(self.a_only, self.a_only + self.b_only)

    @property
    def shared_slice(self) -> slice:
        return slice(self.a_only + self.b_only, self.d_sae)

    def kinds(self) -> Tensor:
        """[d_sae] long: 0 shared, 1 A-only, 2 B-only."""
        out = torch.zeros(self.d_sae, dtype=torch.long)
        out[self.a_slice] = A_ONLY
        out[self.b_slice] = B_ONLY
        return out

    def indices(self, kind: str) -> Tensor:
        """Latent indices of ``kind`` ("a_only", "b_only" or "shared")."""
        table = {"a_only": self.a_slice, "b_only": self.b_slice, "shared": self.shared_slice}
        if kind not in table:
            raise ValueError(f"unknown latent kind {kind!r}: use a_only, b_only or shared")
        s = table[kind]
        return torch.arange(s.start, s.stop)

    def to_dict(self) -> dict:
        return {"d_sae": self.d_sae, "a_only": self.a_only, "b_only": self.b_only}


def forbidden_blocks(partition: Partition, d_models: Sequence[int]) -> list[tuple[slice, slice]]:
    """``(input dims, latents)`` blocks that must stay zero: B's dims x A-only latents, A's dims x B-only latents."""
    if len(d_models) != 2:
        raise ValueError(f"a crosscoder partition needs exactly two models, got d_models={list(d_models)}")
    d_a, d_b = int(d_models[0]), int(d_models[1])
    blocks = []
    if partition.a_only:
        blocks.append((slice(d_a, d_a + d_b), partition.a_slice))
    if partition.b_only:
        blocks.append((slice(0, d_a), partition.b_slice))
    return blocks


@torch.no_grad()
def zero_forbidden_(partition: Partition, d_models: Sequence[int], enc: Tensor | None = None,
                    dec: Tensor | None = None) -> None:
    """Set the forbidden entries of ``enc`` [d_in, d_sae] and ``dec`` [d_sae, d_in] to zero, in place (weights,
    their gradients or their optimizer moments: any tensor of those shapes)."""
    for dims, latents in forbidden_blocks(partition, d_models):
        if enc is not None:
            enc[dims, latents] = 0
        if dec is not None:
            dec[latents, dims] = 0


@torch.no_grad()
def forbidden_max(partition: Partition, d_models: Sequence[int], enc: Tensor | None = None,
                  dec: Tensor | None = None) -> float:
    """The largest absolute forbidden entry of ``enc`` / ``dec`` (0.0 when the partition has no exclusive block)."""
    worst = 0.0
    for dims, latents in forbidden_blocks(partition, d_models):
        for block in ([enc[dims, latents]] if enc is not None else []) + ([dec[latents, dims]] if dec is not None
                                                                           else []):
            if block.numel():
                worst = max(worst, float(block.abs().max()))
    return worst


def check_partition(crosscoder, optimizer: torch.optim.Optimizer | None = None, *, tol: float = 1e-6,
                    extra: Iterable[tuple[str, Tensor, Tensor]] = ()) -> dict:
    """Partition integrity of a crosscoder: the largest forbidden weight, gradient and Adam moment.

    Returns ``{"weights": max, "grads": max, "optimizer": max, "ok": all <= tol, "tol": tol, ...}``;
    ``extra`` adds named ``(enc, dec)`` pairs (tensors read from a checkpoint, say)."""
    part, dims = crosscoder.partition, crosscoder.cfg.d_models
    out = {"weights": forbidden_max(part, dims, crosscoder.W_enc, crosscoder.W_dec), "grads": 0.0, "optimizer": 0.0}
    if crosscoder.W_enc.grad is not None or crosscoder.W_dec.grad is not None:
        out["grads"] = forbidden_max(part, dims, crosscoder.W_enc.grad, crosscoder.W_dec.grad)
    if optimizer is not None:
        enc_state = optimizer.state.get(crosscoder.W_enc, {})
        dec_state = optimizer.state.get(crosscoder.W_dec, {})
        for key in ("exp_avg", "exp_avg_sq"):
            out["optimizer"] = max(out["optimizer"], forbidden_max(part, dims, enc_state.get(key),
                                                                   dec_state.get(key)))
    for name, enc, dec in extra:
        out[name] = forbidden_max(part, dims, enc, dec)
    out["ok"] = all(v <= tol for k, v in out.items() if k != "ok")
    out["tol"] = tol
    out["partition"] = part.to_dict()
    return out
