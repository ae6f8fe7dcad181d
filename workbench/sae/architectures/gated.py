"""``gated`` (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders").

Two paths share the encoder directions ``W_enc``: the gate ``pi_gate = x_in W_enc + b_gate`` decides which latents
are active, the magnitude ``pi_mag = x_in (W_enc * exp(r_mag)) + b_mag`` how much, and
``f = 1[pi_gate > 0] * ReLU(pi_mag)`` (``x_in = x - b_dec``). Our ``b_enc`` is the gate bias (SAELens's ``b_gate``),
so the shared selection machinery (``pre_activations``, the sparse path's selected entries) works on the gate.

Loss: ``||x - x_hat||^2 + lambda * sum_i ReLU(pi_gate)_i ||W_dec[i]||`` (L1 on the gate, weighted by the decoder
norms; no unit-norm constraint, decoder rows initialised at norm 0.1 as for relu) plus the auxiliary reconstruction
``||x - (ReLU(pi_gate) W_dec + b_dec)||^2`` through a frozen copy of the decoder, which trains the gate (the
step function passes no gradient). In training the magnitude is computed as ``exp(r_mag) (pi_gate - b_gate) +
b_mag`` (the same number, from the gate's entries, so the sparse path needs no second product), inference as
SAELens does. The SAELens folder format is ``gated`` with tensors W_enc, b_gate, r_mag, b_mag, W_dec, b_dec.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.sae.architectures.base import SAEArchitecture, register


class GatedArchitecture(SAEArchitecture):
    name = "gated"
    sparsity = "l1"
    unit_norm_decoder = False
    decoder_init_norm = 0.1
    extra_tensors = ("r_mag", "b_mag")
    sae_lens_name = "gated"
    sae_lens_reads = ("gated",)
    sae_lens_tensor_names = {"b_enc": "b_gate"}

    def default_lr(self, d_sae: int) -> float:
        return 1e-3

    def init_tensors(self, sae, cfg, dtype: torch.dtype) -> None:
        sae.r_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))  # log of the magnitude path's rescale
        sae.b_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))

    @torch.no_grad()
    def centre_literal(self, sae) -> None:
        super().centre_literal(sae)
        sae.b_mag.copy_(-(sae.b_dec @ (sae.W_enc * sae.r_mag.exp())))

    # ----- inference -------------------------------------------------------------------------------------------

    def encode(self, sae, x: Tensor) -> Tensor:
        x_in = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
        gate = (x_in @ sae.W_enc + sae.b_enc) > 0
        magnitude = sae.hook_sae_acts_pre(x_in @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
        return F.relu(magnitude) * gate.to(magnitude.dtype)

    def code_cut(self, sae, threshold: float) -> None:
        return None  # codes are magnitudes, not the gate's pre-activations: the feature pass encodes densely

    # ----- training (codes.pre: the gate's pre-activations) -------------------------------------------------------

    def activation(self, sae, codes) -> Tensor:
        magnitude = codes.per_latent(sae.r_mag.exp()) * (codes.pre - codes.per_latent(sae.b_enc)) \
            + codes.per_latent(sae.b_mag)
        return F.relu(magnitude) * (codes.pre.detach() > 0).to(magnitude.dtype)

    def sparsity_loss(self, sae, codes, f: Tensor, n_rows: int, scale: float) -> Tensor:
        norms = sae.W_dec.norm(dim=1)
        return sae.cfg.l1_coefficient * scale * (F.relu(codes.pre) * codes.per_latent(norms)).sum() / n_rows

    def aux_loss(self, sae, codes, aux_codes, f: Tensor, x: Tensor, recon: Tensor) -> Tensor:
        via_gate = codes.decode(F.relu(codes.pre), frozen=True) + sae.b_dec.detach()
        return (via_gate - x).pow(2).sum(-1).mean()


register(GatedArchitecture())
