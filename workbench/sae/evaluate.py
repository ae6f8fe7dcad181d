"""How good an SAE is: reconstruction, feature statistics, and the model's loss with the SAE spliced in.

- :func:`evaluate_activations` streams activation batches once and returns FVU / explained variance, MSE, L0,
  the firing density of every feature, the dead and dense fractions and a log10 feature-density histogram.
- :func:`downstream_metrics` runs a TransformerLens ``HookedTransformer`` on token contexts three times (clean,
  SAE reconstruction in place of the activation, activation zeroed) and returns the CE loss recovered and the KL
  divergence of the spliced next-token distribution from the clean one.

Definitions (docs/methods.md §4): FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2; explained variance = 1 - FVU;
L0 = mean number of active features per token; a feature is dead if it never fires on the evaluated tokens and
dense if it fires on more than ``dense_threshold`` (10%) of them; CE loss recovered =
(CE_zero - CE_spliced) / (CE_zero - CE_clean).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.sae.model import SAE


@dataclass
class ActivationMetrics:
    n_tokens: int
    mse: float  # mean over tokens of ||x - x_hat||^2 (raw activation units)
    fvu: float
    explained_variance: float
    l0: float
    dead_fraction: float
    dense_fraction: float
    density: Tensor  # [d_sae] fraction of tokens on which each feature fires
    log10_density_histogram: dict  # bin_edges (log10 density), counts (alive features), n_dead

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("density")
        return out


def density_histogram(density: Tensor, bins: int = 40, lowest: float | None = None) -> dict:
    """Histogram of log10(density) over alive features; dead features are counted apart as ``n_dead``."""
    alive = density[density > 0].to(torch.float64)
    lo = math.log10(lowest) if lowest else (float(alive.log10().min()) if alive.numel() else -6.0)
    lo = math.floor(min(lo, -1.0))
    edges = torch.linspace(lo, 0.0, bins + 1, dtype=torch.float64)
    counts = torch.histc(alive.log10(), bins=bins, min=lo, max=0.0) if alive.numel() else torch.zeros(bins)
    return {"bin_edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()],
            "n_dead": int((density <= 0).sum())}


@torch.no_grad()
def evaluate_activations(sae: SAE, batches: Iterable[Tensor], *, max_tokens: int | None = None,
                         input_scale: float = 1.0, dense_threshold: float = 0.1, bins: int = 40) -> ActivationMetrics:
    """Per-activation and feature-level metrics of ``sae`` over a stream of [batch, d_in] activations.

    ``input_scale`` multiplies the batches first (for an SAE still in its training scale; saved SAEs take raw
    activations, so leave it at 1). Sums are kept in float64, so the large shared mean of residual streams does
    not cost precision.
    """
    was_training = sae.training
    sae.eval()
    n_sae = sae.cfg.d_sae
    device = sae.device
    fired = torch.zeros(n_sae, dtype=torch.float64, device=device)
    sum_err = sum_sq = 0.0
    sum_x = torch.zeros(sae.cfg.d_in, dtype=torch.float64, device=device)
    n = 0
    for batch in batches:
        if max_tokens is not None and n >= max_tokens:
            break
        if max_tokens is not None:
            batch = batch[: max_tokens - n]
        x = batch.to(device=device, dtype=sae.dtype).reshape(-1, batch.shape[-1]) * input_scale
        acts = sae.encode(x)
        recon = sae.decode(acts)
        x64 = x.to(torch.float64)
        sum_err += float((recon.to(torch.float64) - x64).pow(2).sum())
        sum_sq += float(x64.pow(2).sum())
        sum_x += x64.sum(0)
        fired += (acts > 0).sum(0).to(torch.float64)
        n += x.shape[0]
    if was_training:
        sae.train()
    if n == 0:
        raise ValueError("no activations to evaluate: the batch stream is empty")
    total_var = sum_sq - float(sum_x.pow(2).sum()) / n
    fvu = sum_err / total_var if total_var > 0 else float("nan")
    density = (fired / n).to(torch.float32).cpu()
    return ActivationMetrics(
        n_tokens=n, mse=sum_err / n, fvu=fvu, explained_variance=1.0 - fvu, l0=float(fired.sum()) / n,
        dead_fraction=float((density == 0).float().mean()),
        dense_fraction=float((density > dense_threshold).float().mean()), density=density,
        log10_density_histogram=density_histogram(density, bins=bins, lowest=1.0 / n))


@dataclass
class DownstreamMetrics:
    n_tokens: int  # predicted positions
    ce_clean: float
    ce_spliced: float
    ce_zero_ablation: float
    ce_loss_recovered: float
    kl_div: float  # mean over positions of KL(clean || spliced), in nats

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_hook(model: Any, hook_name: str) -> None:
    hooks = getattr(model, "hook_dict", {})
    if hook_name not in hooks:
        near = [h for h in hooks if h.split(".")[-1] == hook_name.split(".")[-1]][:6]
        raise ValueError(f"the model has no hook {hook_name!r}" + (f"; hooks of that kind: {near}" if near else ""))


@torch.no_grad()
def downstream_metrics(model: Any, sae: SAE, tokens: Tensor, *, hook_name: str | None = None, batch_size: int = 4,
                       splice_bos: bool = False) -> DownstreamMetrics:
    """CE loss recovered and KL to the clean logits with ``sae`` spliced in at ``hook_name``.

    ``model`` is a TransformerLens ``HookedTransformer``; ``tokens`` [n_contexts, ctx] are held-out token ids
    (start them with BOS as the SAE's training contexts did). The reconstruction replaces the activation at every
    position except the first (BOS) unless ``splice_bos``; the zero-ablation baseline zeroes the same positions.
    ``hook_name`` defaults to the SAE's ``metadata.hook_name``.
    """
    hook_name = hook_name or sae.metadata.hook_name
    if not hook_name:
        raise ValueError("the SAE's metadata has no hook_name: pass hook_name= (e.g. 'blocks.6.hook_resid_post')")
    _check_hook(model, hook_name)
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [n_contexts, ctx] with ctx >= 2, got shape {tuple(tokens.shape)}")
    first = 0 if splice_bos else 1
    was_training = sae.training
    sae.eval()

    def splice(act: Tensor, hook: Any) -> Tensor:
        out = act.clone()
        part = act[:, first:]
        out[:, first:] = sae(part.to(sae.device)).to(act.dtype).to(act.device)
        return out

    def zero(act: Tensor, hook: Any) -> Tensor:
        out = act.clone()
        out[:, first:] = 0
        return out

    device = getattr(getattr(model, "cfg", None), "device", None) or tokens.device
    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0, "kl": 0.0}
    count = 0
    for start in range(0, tokens.shape[0], batch_size):
        toks = tokens[start:start + batch_size].to(device)
        targets = toks[:, 1:]
        clean = model(toks, return_type="logits")[:, :-1].float().log_softmax(-1)
        spliced = model.run_with_hooks(toks, return_type="logits", fwd_hooks=[(hook_name, splice)])[:, :-1]
        spliced = spliced.float().log_softmax(-1)
        zeroed = model.run_with_hooks(toks, return_type="logits", fwd_hooks=[(hook_name, zero)])[:, :-1]
        zeroed = zeroed.float().log_softmax(-1)
        for key, logp in (("clean", clean), ("spliced", spliced), ("zero", zeroed)):
            sums[key] += float(F.nll_loss(logp.reshape(-1, logp.shape[-1]), targets.reshape(-1), reduction="sum"))
        sums["kl"] += float((clean.exp() * (clean - spliced)).sum())
        count += targets.numel()
        del clean, spliced, zeroed
    if was_training:
        sae.train()
    ce_clean, ce_spliced, ce_zero = (sums[k] / count for k in ("clean", "spliced", "zero"))
    denom = ce_zero - ce_clean
    recovered = (ce_zero - ce_spliced) / denom if abs(denom) > 1e-12 else float("nan")
    return DownstreamMetrics(n_tokens=count, ce_clean=ce_clean, ce_spliced=ce_spliced, ce_zero_ablation=ce_zero,
                             ce_loss_recovered=recovered, kl_div=sums["kl"] / count)
