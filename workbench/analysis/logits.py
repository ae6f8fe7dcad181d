"""Logit effects: a feature's decoder direction through the final norm's scale and the unembedding.

The paper's "logit weights": for decoder row ``d`` (a residual-stream direction), ``(d * w_eff) @ W_U`` where
``w_eff`` is the per-dimension scale the final norm applies (for a LayerNorm also after removing the mean, since
the norm centres its input). The normalisation's division by the RMS is a positive per-token scalar and does not
change the ranking, nor does Gemma's monotonic final-logit soft-capping; ``b_U`` and the norm's bias do not depend on
the direction and are left out.

Gemma's RMSNorm multiplies by ``(1 + w)`` in HF's parameterisation; TransformerLens folds the 1 in when it loads the
weights. Rather than trust either convention, :func:`final_norm_scale` finds ``w_eff`` numerically: it runs
``model.ln_final`` on random inputs and keeps the candidate (``w``, ``1 + w``, or ones) that reproduces it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike

__all__ = ["LogitEffects", "final_norm_scale", "logit_effects", "logit_weights"]


@dataclass(frozen=True)
class NormScale:
    """How the final norm acts on a direction: ``(d - mean(d) if centre else d) * weight``."""

    weight: Tensor  # [d_model]
    centre: bool
    convention: str  # "w", "1+w", "none"


def final_norm_scale(model: ModelLike, *, atol: float = 1e-4, seed: int = 0) -> NormScale:
    """The final norm's effective per-dimension scale, verified against ``model.ln_final`` on random inputs.

    Raises ValueError if no candidate reproduces the module (an unknown norm type): the logit effects would be wrong.
    """
    d_model = int(model.cfg.d_model)
    ln = getattr(model, "ln_final", None)
    param = next(model.parameters())
    if ln is None or getattr(model.cfg, "normalization_type", None) is None:
        return NormScale(torch.ones(d_model, dtype=param.dtype, device=param.device), False, "none")
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(4, d_model, generator=gen) * 3 + 0.5).to(param.device, param.dtype)
    with torch.no_grad():
        y = ln(x)
        w = getattr(ln, "w", None)
        b = getattr(ln, "b", None)
        if b is not None:
            y = y - b
        eps = float(getattr(ln, "eps", getattr(model.cfg, "eps", 1e-5)))
        ones = torch.ones(d_model, dtype=x.dtype, device=x.device)
        candidates = [("w", w), ("1+w", None if w is None else 1 + w), ("none", ones)]
        for centre in (False, True):
            xc = x - x.mean(-1, keepdim=True) if centre else x
            normed = xc / (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
            for name, weight in candidates:
                if weight is None:
                    continue
                pred = normed * weight
                scale = y.abs().max().clamp_min(1.0)
                if torch.allclose(pred, y, atol=atol * float(scale), rtol=1e-4):
                    return NormScale(weight.detach().clone(), centre, name)
    raise ValueError(f"cannot identify the final norm of {type(model).__name__} ({type(ln).__name__}): neither "
                     f"x/rms(x)*w, x/rms(x)*(1+w) nor their centred forms reproduce model.ln_final; logit effects "
                     f"would be wrong for this model")


def logit_weights(model: ModelLike, directions: Tensor, norm: NormScale | None = None) -> Tensor:
    """[n, d_vocab] logit effect of residual directions [n, d_model] (through the final norm's scale and W_U)."""
    if directions.dim() != 2 or directions.shape[1] != model.cfg.d_model:
        raise ValueError(f"directions must be [n, d_model={model.cfg.d_model}], got shape {tuple(directions.shape)}: "
                         f"is the SAE from this model?")
    norm = norm or final_norm_scale(model)
    W_U = model.W_U
    d = directions.to(W_U.device, W_U.dtype)
    if norm.centre:
        d = d - d.mean(-1, keepdim=True)
    with torch.no_grad():
        return (d * norm.weight.to(d.dtype)) @ W_U


@dataclass
class LogitEffects:
    """Top and bottom ``k`` tokens per direction: ids [n, k] and values [n, k]; ``tokens`` decodes them."""

    top_ids: Tensor
    top_values: Tensor
    bottom_ids: Tensor
    bottom_values: Tensor
    norm_convention: str = ""

    def tokens(self, tokenizer, i: int) -> dict[str, list]:
        """{"top": [(token string, value)], "bottom": [...]} for direction ``i``."""
        if not 0 <= int(i) < self.top_ids.shape[0]:
            raise ValueError(f"index {i} out of range [0, {self.top_ids.shape[0]})")

        def pairs(ids: Tensor, vals: Tensor) -> list[tuple[str, float]]:
            strings = tokenizer.batch_decode([[int(t)] for t in ids])
            return [(s, float(v)) for s, v in zip(strings, vals)]

        return {"top": pairs(self.top_ids[i], self.top_values[i]),
                "bottom": pairs(self.bottom_ids[i], self.bottom_values[i])}


def logit_effects(model: ModelLike, directions: Tensor, k: int = 10, *, block: int = 256, progress: bool = False
                  ) -> LogitEffects:
    """Top/bottom ``k`` logit effects of every row of ``directions`` (e.g. ``sae.W_dec``), ``block`` rows at once
    (memory ``block * d_vocab * 4`` bytes)."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    norm = final_norm_scale(model)
    n = directions.shape[0]
    k = min(k, int(model.cfg.d_vocab))
    tops, topv, bots, botv = [], [], [], []
    for i in tqdm(range(0, n, block), desc="logits", disable=not progress, leave=False, dynamic_ncols=True):
        lw = logit_weights(model, directions[i:i + block], norm)
        v, idx = lw.topk(k, dim=-1)
        bv, bidx = lw.topk(k, dim=-1, largest=False)
        tops.append(idx.cpu())
        topv.append(v.float().cpu())
        bots.append(bidx.cpu())
        botv.append(bv.float().cpu())
    if not tops:
        empty = torch.zeros(0, k)
        return LogitEffects(empty.long(), empty, empty.long(), empty, norm.convention)
    return LogitEffects(torch.cat(tops), torch.cat(topv), torch.cat(bots), torch.cat(botv), norm.convention)
