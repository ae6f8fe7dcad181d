"""``relu``: Scaling Monosemanticity / Anthropic's April-2024 recipe.

``f = ReLU(W_enc^T (x - b_dec) + b_enc)``, loss ``||x - x_hat||^2 + lambda * sum_i f_i ||W_dec[i]||``; no unit-norm
constraint, decoder rows initialised at norm 0.1 with ``W_enc = W_dec^T``. The paper writes ``ReLU(W_enc x + b_enc)``:
the same functions (b_enc absorbs ``W_enc^T b_dec``), but subtracting b_dec keeps the large mean that every token of
a residual stream shares out of the encoder's gradient. Without it the L1 gradient pushes every latent down along
that mean and a quarter of the latents died on Gemma-3-270M; ``apply_b_dec_to_input=False`` gives the literal form.
Dense steps run one fused node (:class:`workbench.sae.kernels.DenseReLU`).
"""
from __future__ import annotations

import math

from torch import Tensor

from workbench.sae.architectures.base import SAEArchitecture, register
from workbench.sae.kernels import DenseReLU


class ReLUArchitecture(SAEArchitecture):
    name = "relu"
    sparsity = "l1"
    unit_norm_decoder = False
    decoder_init_norm = 0.1
    sae_lens_name = "standard"
    sae_lens_reads = ("standard",)

    def default_lr(self, d_sae: int) -> float:
        return 1e-3

    def sparsity_loss(self, sae, codes, f: Tensor, n_rows: int, scale: float) -> Tensor:
        norms = sae.W_dec.norm(dim=1)
        return sae.cfg.l1_coefficient * scale * (f * codes.per_latent(norms)).sum() / n_rows

    def dense_loss(self, sae, x: Tensor, x_in: Tensor, scale: float):
        """The objective on dense codes through :class:`DenseReLU` (same value and gradients as the generic dense
        path, tested; fewer GEMMs and passes over the [batch, d_sae] matrix)."""
        cfg = sae.cfg
        n_rows = x.shape[0]
        b_dec = sae.b_dec if cfg.apply_b_dec_to_input else None
        decoded, col_sum, n_active = DenseReLU.apply(x_in.detach(), sae.W_enc, sae.b_enc, sae.W_dec, b_dec,
                                                     sae._workspace)
        err = decoded + sae.b_dec - x
        per_token = err.pow(2).sum(-1)
        mse = per_token.mean()
        norms = sae.W_dec.norm(dim=1)
        sparsity_loss = cfg.l1_coefficient * scale * (col_sum * norms).sum() / n_rows
        return sae._output(x, mse + sparsity_loss, mse, sparsity_loss, x.new_zeros(()), per_token,
                           col_sum.detach() > 0, n_active, x.new_full((), math.inf), False)


register(ReLUArchitecture())
