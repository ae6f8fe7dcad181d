"""``topk`` (Gao et al. 2024): each token keeps its k largest pre-activations; unit-norm decoder rows (the
gradient component parallel to each row removed); AuxK loss over dead latents."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.sae.architectures.base import SAEArchitecture, auxk_loss, register
from workbench.sae.kernels import Selection, select_topk


class TopKArchitecture(SAEArchitecture):
    name = "topk"
    sparsity = "k"
    selects_for_dense = True
    auxk = True
    sae_lens_name = "topk"
    sae_lens_reads = ("topk",)

    def validate(self, cfg) -> None:
        self.check_k(cfg)
        if float(cfg.k) != int(cfg.k):
            raise ValueError(f"topk needs an integer k, got {cfg.k}; use batchtopk for a fractional mean k")

    def default_lr(self, d_sae: int) -> float:
        """2e-4 / sqrt(d_sae / 2^14) (Gao et al.)."""
        return 2e-4 / math.sqrt(d_sae / 2 ** 14)

    def activate(self, sae, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(int(sae.cfg.k), dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))

    def per_token_k(self, cfg) -> int:
        return min(int(cfg.k), int(cfg.d_sae))

    def select(self, sae, pre: Tensor) -> Selection:
        return select_topk(pre, int(sae.cfg.k))

    def aux_loss(self, sae, codes, aux_codes, f: Tensor, x: Tensor, recon: Tensor) -> Tensor | None:
        return auxk_loss(sae, aux_codes, x, recon)

    def sae_lens_fields(self, cfg) -> dict[str, Any]:
        return {"k": int(cfg.k), "rescale_acts_by_decoder_norm": False}

    def config_from_sae_lens(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return {"k": int(cfg.get("k", 100))}


register(TopKArchitecture())
