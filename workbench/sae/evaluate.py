"""How good an SAE is: reconstruction, feature statistics, and the model's loss with the SAE spliced in.

- :func:`evaluate_activations` streams activation batches once and returns FVU / explained variance, MSE, L0,
  the firing density of every feature, the dead and dense fractions and a log10 feature-density histogram.
- :func:`downstream_metrics` runs a TransformerLens ``HookedTransformer`` on token contexts three times (clean,
  SAE reconstruction in place of the activation, activation zeroed) and returns SAEBench's CE loss score and the
  KL divergence of the spliced next-token distribution from the clean one (and its score).

Definitions (docs/methods.md §4): FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2; explained variance = 1 - FVU;
L0 = mean number of active features per token; a feature is dead if it never fires on the evaluated tokens and
dense if it fires on more than ``dense_threshold`` (10%) of them; CE loss score =
(CE_zero - CE_spliced) / (CE_zero - CE_clean), the zero-ablation baseline zeroing every position as SAELens and
SAEBench do (:class:`DownstreamMetrics`).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.sae.model import SAE
from workbench.sae.interop import as_sae, hook_name_of

_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


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
    sae = as_sae(sae)
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
    """The model's loss with the SAE spliced in, by SAELens's / SAEBench's definitions (docs/methods.md §4).

    ``ce_loss_score = (ce_zero_ablation - ce_spliced) / (ce_zero_ablation - ce_clean)`` and ``kl_div_score =
    (kl_div_ablation - kl_div) / kl_div_ablation``, where the zero-ablation baseline zeroes the activation at
    *every* position (BOS included) and positions whose input is a special token (BOS) are neither spliced nor
    counted. ``ablation`` says which baseline was used: ``"all positions"`` (the field's) or ``"BOS kept"`` (the
    workbench's definition before 0.3, whose baseline leaves the BOS activation intact: the model then loses its
    attention sink's value but not its position, a far worse loss, so the score read higher: 0.970 vs 0.932 on the
    demo SAE)."""

    n_tokens: int  # predicted positions counted
    ce_clean: float
    ce_spliced: float
    ce_zero_ablation: float
    ce_loss_score: float
    kl_div: float  # mean over counted positions of KL(clean || spliced), in nats
    kl_div_ablation: float  # the same for the zero-ablated model
    kl_div_score: float
    ablation: str = "all positions"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_hook(model: Any, hook_name: str) -> None:
    hooks = getattr(model, "hook_dict", {})
    if hook_name not in hooks:
        near = [h for h in hooks if h.split(".")[-1] == hook_name.split(".")[-1]][:6]
        raise ValueError(f"the model has no hook {hook_name!r}" + (f"; hooks of that kind: {near}" if near else ""))


def _resume_layer(model: Any, hook_name: str) -> int | None:
    """The block after which the residual stream equals ``hook_name``'s activation (so a pass can start there), or
    None for hooks inside a block (attention, MLP) or models without ``start_at_layer``."""
    m = _RESID.match(hook_name)
    if m is None or not hasattr(model, "blocks"):
        return None
    layer = int(m.group(1)) + (1 if m.group(2) == "post" else 0)
    return layer if 0 < layer <= model.cfg.n_layers else None


def _special_mask(model: Any, toks: Tensor) -> Tensor:
    """True where the input token is special: position 0 (the contexts' BOS) and the tokenizer's special ids."""
    mask = torch.zeros_like(toks, dtype=torch.bool)
    mask[:, 0] = True
    ids = sorted(set(getattr(getattr(model, "tokenizer", None), "all_special_ids", None) or []))
    if ids:
        mask |= torch.isin(toks, torch.tensor(ids, device=toks.device))
    return mask


@torch.no_grad()
def downstream_metrics(model: Any, sae: SAE, tokens: Tensor, *, hook_name: str | None = None, batch_size: int = 4,
                       keep_bos_in_ablation: bool = False) -> DownstreamMetrics:
    """CE loss score and KL to the clean logits with ``sae`` spliced in at ``hook_name`` (SAEBench's core metrics).

    ``model`` is a TransformerLens ``HookedTransformer``; ``tokens`` [n_contexts, ctx] are held-out token ids
    (start them with BOS as the SAE's training contexts did). The reconstruction replaces the activation at every
    position whose input is not a special token; the zero-ablation baseline zeroes every position (with
    ``keep_bos_in_ablation``, every position the SAE replaces: the workbench's earlier baseline). Losses and KL are
    averaged over the predictions made from non-special positions. ``hook_name`` defaults to the SAE's
    ``metadata.hook_name``. For residual-stream hooks the blocks before the hook run once per batch and the three
    passes continue from there (``start_at_layer``); the logits are those of full passes.
    """
    hook_name = hook_name or hook_name_of(sae)
    if not hook_name:
        raise ValueError("the SAE's metadata has no hook_name: pass hook_name= (e.g. 'blocks.6.hook_resid_post')")
    _check_hook(model, hook_name)
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [n_contexts, ctx] with ctx >= 2, got shape {tuple(tokens.shape)}")
    if tokens.shape[0] == 0:
        raise ValueError("no contexts to evaluate: tokens has 0 rows")
    sae = as_sae(sae, model=model)  # a sae_lens.SAE, a folder...; on the model's device
    was_training = sae.training
    sae.eval()
    resume = _resume_layer(model, hook_name)
    device = getattr(getattr(model, "cfg", None), "device", None) or tokens.device
    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0, "kl": 0.0, "kl_zero": 0.0}
    count = 0
    for start in range(0, tokens.shape[0], batch_size):
        toks = tokens[start:start + batch_size].to(device)
        special = _special_mask(model, toks)
        keep = ~special[:, :-1]  # predictions counted: made from a non-special position
        targets = toks[:, 1:][keep]

        def splice(act: Tensor, hook: Any = None) -> Tensor:
            recon = sae(act.to(sae.device)).to(act.dtype).to(act.device)
            return torch.where(special[..., None], act, recon)

        def zero(act: Tensor, hook: Any = None) -> Tensor:
            return torch.where(special[..., None], act, torch.zeros_like(act)) if keep_bos_in_ablation \
                else torch.zeros_like(act)

        if resume is not None:
            act = model(toks, stop_at_layer=resume)
            logits = [model(a, start_at_layer=resume) for a in (act, splice(act), zero(act))]
        else:
            logits = [model(toks, return_type="logits"),
                      model.run_with_hooks(toks, return_type="logits", fwd_hooks=[(hook_name, splice)]),
                      model.run_with_hooks(toks, return_type="logits", fwd_hooks=[(hook_name, zero)])]
        clean, spliced, zeroed = (lg[:, :-1][keep].float().log_softmax(-1) for lg in logits)
        del logits
        for key, logp in (("clean", clean), ("spliced", spliced), ("zero", zeroed)):
            sums[key] += float(F.nll_loss(logp, targets, reduction="sum"))
        p = clean.exp()
        sums["kl"] += float((p * (clean - spliced)).sum())
        sums["kl_zero"] += float((p * (clean - zeroed)).sum())
        count += targets.numel()
        del clean, spliced, zeroed, p
    if was_training:
        sae.train()
    if count == 0:
        raise ValueError("every position of tokens is a special token: nothing to evaluate")
    ce_clean, ce_spliced, ce_zero, kl, kl_zero = (sums[k] / count for k in ("clean", "spliced", "zero", "kl",
                                                                            "kl_zero"))
    denom = ce_zero - ce_clean
    return DownstreamMetrics(n_tokens=count, ce_clean=ce_clean, ce_spliced=ce_spliced, ce_zero_ablation=ce_zero,
                             ce_loss_score=(ce_zero - ce_spliced) / denom if abs(denom) > 1e-12 else float("nan"),
                             kl_div=kl, kl_div_ablation=kl_zero,
                             kl_div_score=(kl_zero - kl) / kl_zero if kl_zero > 1e-12 else float("nan"),
                             ablation="BOS kept" if keep_bos_in_ablation else "all positions")
