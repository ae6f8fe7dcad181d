"""``batchtopk``: the top ``k * batch`` pre-activations of the whole batch are kept (a mean of k per token); at
inference a global threshold, an EMA of the smallest kept activation. Unit-norm decoder, AuxK. Written to SAELens
as ``jumprelu`` with the global threshold in every entry of ``threshold`` (as SAELens saves BatchTopK)."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.sae.architectures.base import SAEArchitecture, auxk_loss, batch_min_active, register
from workbench.sae.kernels import Selection, select_batch_topk


class BatchTopKArchitecture(SAEArchitecture):
    name = "batchtopk"
    sparsity = "k"
    selects_for_dense = True
    auxk = True
    extra_tensors = ("threshold",)
    has_threshold = True
    sae_lens_name = "jumprelu"
    sae_lens_reads = ("batchtopk",)

    def validate(self, cfg) -> None:
        self.check_k(cfg)

    def default_lr(self, d_sae: int) -> float:
        return 2e-4 / math.sqrt(d_sae / 2 ** 14)

    def init_tensors(self, sae, cfg, dtype: torch.dtype) -> None:
        # the EMA of the smallest kept activation; -1 means "not measured yet"
        sae.register_buffer("threshold", torch.full((cfg.d_sae,), -1.0, dtype=dtype))

    def export_tensors(self, sae) -> dict[str, Tensor]:
        out = super().export_tensors(sae)
        out["threshold"] = sae.threshold.clamp_min(0)
        return out

    def activate(self, sae, pre: Tensor) -> Tensor:
        return F.relu(pre) * (pre > sae.threshold.clamp_min(0)).to(pre.dtype)

    def code_cut(self, sae, threshold: float) -> Tensor:
        return sae.threshold.detach().clamp_min(0).clamp_min(threshold)

    def select(self, sae, pre: Tensor) -> Selection:
        return select_batch_topk(pre, sae.cfg.k)

    def aux_loss(self, sae, codes, aux_codes, f: Tensor, x: Tensor, recon: Tensor) -> Tensor | None:
        return auxk_loss(sae, aux_codes, x, recon)

    def min_active(self, f: Tensor, default: Tensor) -> Tensor:
        return batch_min_active(f, default)

    def apply_constraints(self, sae, output) -> None:
        if output is None:
            return
        m = output.min_active.to(sae.threshold.dtype)
        rate = sae.cfg.threshold_ema_rate
        ema = torch.where(sae.threshold < 0, m, (1 - rate) * sae.threshold + rate * m)
        sae.threshold.copy_(torch.where(torch.isfinite(m), ema, sae.threshold))

    def config_from_sae_lens(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return {"k": float(cfg.get("k", 100))}


register(BatchTopKArchitecture())
