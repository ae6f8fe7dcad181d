"""Crosscoders: one dictionary of latents over two models' activations, one encoder and decoder per model
(docs/methods.md §13).

A crosscoder reads the concatenation ``x = [x_A, x_B]`` (model A's ``d_A`` dimensions first; the widths may
differ) of the two models' activations at the same text position. Its encoder sums the per-model encoders
(``x @ W_enc`` with ``W_enc = [W_enc^A; W_enc^B]``), and its decoder writes each model's block with that model's
decoder (``W_dec = [W_dec^A, W_dec^B]``). So a crosscoder *is* an SAE on the concatenation whose decoder rows are
read per model, and :class:`Crosscoder` subclasses :class:`workbench.sae.model.SAE`: the SAE trainer
(:mod:`workbench.sae.train`: several runs from one pass, checkpoints and exact resume, NaN handling, progress)
trains it unchanged through :class:`CrosscoderSpec`, and ``save_sae`` writes it in SAELens format (a valid SAE on
the concatenated input, with the crosscoder's settings in its metadata; :func:`load_crosscoder` reads it back).

What differs from an SAE:

- no unit-norm decoder: the per-model decoder norms carry the information (relative norm, exclusivity);
- ``relu`` (the L1 crosscoder): loss ``sum_m ||x_m - x_hat_m||^2 + lambda * sum_i f_i (||d_i^A|| + ||d_i^B||)``,
  the penalty weighted by the *sum of the per-model decoder norms*;
- ``batchtopk``: keeps the ``k * batch`` largest scores ``f_i * (||d_i^A|| + ||d_i^B||)`` of the batch (so the
  decoder scale cannot game the selection); at inference a threshold on the same score, an EMA of the smallest
  kept score; AuxK over dead latents as for SAEs;
- an optional DFC :class:`~workbench.diffing.dfc.Partition` whose forbidden weights stay exactly zero;
- ``exclusive_k`` (DFC, BatchTopK): ``exclusive_k * batch`` of the kept scores are chosen *within* each exclusive
  block and the rest within the shared block, each block with its own inference threshold, so an exclusive block
  stays in use even when its model is a small part of the loss (docs/methods.md §17);
- ``loss_weights`` ``(w_A, w_B)``: each model's squared error is multiplied by its weight, and the decoder norms in
  the L1 penalty and the BatchTopK score by its square root (so penalty and selection measure a latent's
  contribution to the weighted loss). :func:`fvu_weights` makes each model's FVU count the same (docs/methods.md
  §17) while the inputs keep the papers' norm scaling;
- inputs: each model's activations scaled so that their mean norm is sqrt(d_model) (the paired source does it,
  :mod:`workbench.diffing.paired_store`); :meth:`Crosscoder.folded` folds those per-model scales and the trainer's
  global one into the weights, so the saved crosscoder takes raw activations.
"""
from __future__ import annotations

import json
import math
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.diffing.dfc import Partition, zero_forbidden_
from workbench.sae.model import SAE, SAEConfig, SAEMetadata, TrainingOutput, load_parameters
from workbench.sae.train_config import RunSpec

__all__ = ["CROSSCODER_ARCHITECTURES", "Crosscoder", "CrosscoderConfig", "CrosscoderSpec", "fvu_weights",
           "load_crosscoder", "split_models"]

CROSSCODER_ARCHITECTURES = ("relu", "batchtopk")


@dataclass
class CrosscoderConfig(SAEConfig):
    """An :class:`SAEConfig` on ``d_in = d_A + d_B`` plus the two widths and the DFC partition sizes.

    ``threshold_per_latent`` marks a folded BatchTopK crosscoder whose score threshold has been turned into one
    threshold per latent on its code (exactly the SAE's BatchTopK inference rule). ``exclusive_k``: per token, how
    many of the ``k`` slots each exclusive block of a BatchTopK DFC gets (0: one top-k over all latents, the
    papers'). ``loss_weights``: per-model weights of the squared error (1, 1: the papers' plain sum)."""

    d_models: tuple[int, int] = (0, 0)
    a_only: int = 0
    b_only: int = 0
    threshold_per_latent: bool = False
    exclusive_k: float = 0.0
    loss_weights: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.d_models = tuple(int(d) for d in self.d_models)  # type: ignore[assignment]
        self.loss_weights = tuple(float(w) for w in self.loss_weights)  # type: ignore[assignment]
        if self.architecture not in CROSSCODER_ARCHITECTURES:
            raise ValueError(f"crosscoder architecture {self.architecture!r} is not supported: use "
                             f"{' or '.join(CROSSCODER_ARCHITECTURES)}")
        if len(self.d_models) != 2 or min(self.d_models) < 1 or sum(self.d_models) != self.d_in:
            raise ValueError(f"d_models={list(self.d_models)} must be two positive widths summing to d_in="
                             f"{self.d_in} (the concatenated activations)")
        part = Partition(self.d_sae, self.a_only, self.b_only)  # validates
        if len(self.loss_weights) != 2 or not all(math.isfinite(w) and w > 0 for w in self.loss_weights):
            raise ValueError(f"loss_weights={list(self.loss_weights)} must be two finite numbers > 0 (model A's "
                             "and model B's; (1, 1) is the plain sum)")
        if self.exclusive_k:
            blocks = int(part.a_only > 0) + int(part.b_only > 0)
            if self.architecture != "batchtopk" or not part.is_dedicated:
                raise ValueError(f"exclusive_k={self.exclusive_k:g} needs a BatchTopK DFC (a_only or b_only > 0): "
                                 "set exclusive_k=0 for a plain crosscoder or an L1 one")
            if self.exclusive_k < 0 or blocks * self.exclusive_k >= self.k:
                raise ValueError(f"exclusive_k={self.exclusive_k:g} must be >= 0 and leave the shared block some of "
                                 f"k={self.k:g} ({blocks} exclusive block(s) take exclusive_k each): lower it")

    def block_k(self) -> list[tuple[slice, float]]:
        """``(latents, k)`` per block for block-wise BatchTopK (exclusive blocks ``exclusive_k`` each, the shared
        block the rest of ``k``); empty when the selection is one top-k over all latents."""
        if not self.exclusive_k:
            return []
        part = Partition(self.d_sae, self.a_only, self.b_only)
        blocks = [(sl, float(self.exclusive_k)) for sl, n in ((part.a_slice, part.a_only),
                                                               (part.b_slice, part.b_only)) if n]
        return blocks + [(part.shared_slice, float(self.k) - sum(k for _, k in blocks))]

    @property
    def unit_norm_decoder(self) -> bool:
        return False

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["d_models"] = list(self.d_models)
        out["loss_weights"] = list(self.loss_weights)
        # options added later are left out at their defaults, so the fingerprints of runs trained before they existed
        # (the trainer's resume check, saved configs) stay what they were
        for key, default in (("exclusive_k", 0.0), ("loss_weights", [1.0, 1.0])):
            if out[key] == default:
                del out[key]
        return out


def fvu_weights(variances) -> tuple[float, float]:
    """Loss weights that make each model's share of the loss its FVU: ``w_m`` proportional to ``1 / var_m`` (the
    centred variance of model m's training inputs), scaled so that ``sum_m w_m var_m`` equals ``sum_m var_m`` (the
    weighted loss keeps the unweighted loss's size at the start, so learning rates carry over)."""
    v = [float(x) for x in variances]
    if len(v) != 2 or not all(math.isfinite(x) and x > 0 for x in v):
        raise ValueError(f"fvu_weights needs two positive variances (model A's, model B's), got {v}")
    total = v[0] + v[1]
    return total / (2 * v[0]), total / (2 * v[1])


def split_models(x: Tensor, d_models) -> tuple[Tensor, Tensor]:
    """``(x_A, x_B)`` views of concatenated activations ``[..., d_A + d_B]``."""
    d_a = int(d_models[0])
    return x[..., :d_a], x[..., d_a:]


def _batch_topk(score: Tensor, k: float, n_rows: int) -> tuple[Tensor, Tensor]:
    """The mask of the ``round(k * n_rows)`` largest positive entries of ``score`` [n_rows, n] and the smallest kept
    one (inf when none is kept): BatchTopK's selection and its threshold statistic."""
    flat = score.flatten()
    min_active = score.new_full((), math.inf)
    n_keep = max(1, min(flat.numel(), int(round(k * n_rows))))
    kept = flat.topk(n_keep, sorted=False)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[kept.indices] = True
    mask &= flat > 0
    if bool(mask.any()):
        min_active = kept.values[kept.values > 0].min()
    return mask.view_as(score), min_active


class Crosscoder(SAE):
    """A two-model crosscoder (see the module docstring). ``encode`` / ``decode`` / ``forward`` take concatenated
    activations; :meth:`encode_pair` takes the two models' activations separately."""

    cfg: CrosscoderConfig

    def __init__(self, cfg: CrosscoderConfig, metadata: SAEMetadata | None = None, *, seed: int | None = 0,
                 device: str | torch.device = "cpu"):
        if not isinstance(cfg, CrosscoderConfig):
            raise ValueError("Crosscoder needs a CrosscoderConfig (d_models, partition), not a plain SAEConfig")
        super().__init__(cfg, metadata, seed=seed, device=device)
        self.partition = Partition(cfg.d_sae, cfg.a_only, cfg.b_only)
        self._optimizer_ref: weakref.ref[torch.optim.Optimizer] | None = None
        zero_forbidden_(self.partition, cfg.d_models, self.W_enc.data, self.W_dec.data)

    # ----- per-model views ------------------------------------------------------------------------------------

    @property
    def d_models(self) -> tuple[int, int]:
        return self.cfg.d_models

    def decoder_norms(self) -> Tensor:
        """[d_sae, 2]: each latent's decoder norm in model A and in model B, in the training units (each model at
        mean norm sqrt(d_model)) also for a folded crosscoder, so the two models' norms compare."""
        d_a = self.cfg.d_models[0]
        w = self.W_dec.detach().float()
        norms = torch.stack([w[:, :d_a].norm(dim=1), w[:, d_a:].norm(dim=1)], dim=1)
        folded = self.metadata.extra.get("crosscoder", {}).get("folded_scales")
        return norms * torch.tensor(folded, dtype=norms.dtype, device=norms.device) if folded else norms

    def _norm_sum(self) -> Tensor:
        """``sqrt(w_A) ||d_A|| + sqrt(w_B) ||d_B||`` per latent (the plain sum of decoder norms with unit weights):
        the L1 penalty's weight and the BatchTopK score's factor."""
        d_a = self.cfg.d_models[0]
        w_a, w_b = self.cfg.loss_weights
        n_a, n_b = self.W_dec[:, :d_a].norm(dim=1), self.W_dec[:, d_a:].norm(dim=1)
        if (w_a, w_b) == (1.0, 1.0):
            return n_a + n_b
        return math.sqrt(w_a) * n_a + math.sqrt(w_b) * n_b

    def _error_weights(self, like: Tensor) -> Tensor | None:
        """[d_A + d_B] per-dimension weights of the squared error (None for the plain sum)."""
        w_a, w_b = self.cfg.loss_weights
        if (w_a, w_b) == (1.0, 1.0):
            return None
        d_a, d_b = self.cfg.d_models
        return torch.cat([like.new_full((d_a,), w_a), like.new_full((d_b,), w_b)])

    def encode_pair(self, x_a: Tensor, x_b: Tensor) -> Tensor:
        return self.encode(torch.cat([x_a, x_b], dim=-1))

    # ----- inference ------------------------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        if self.cfg.architecture == "relu" or self.cfg.threshold_per_latent:
            return super().encode(x)
        self._check_input(x)
        x = self.hook_sae_input(x.to(self.dtype))
        pre = self.hook_sae_acts_pre(self.pre_activations(x))
        f = F.relu(pre)
        score = f * self._norm_sum().detach()
        return self.hook_sae_acts_post(f * (score > self.threshold.clamp_min(0)).to(f.dtype))

    # ----- training (dense; the trainer calls these) ----------------------------------------------------------

    def training_loss(self, x: Tensor, *, dead_mask: Tensor | None = None, sparsity_scale: float = 1.0,
                      **_: object) -> TrainingOutput:
        """The crosscoder objective on scaled concatenated activations ``x`` [batch, d_A + d_B]. The SAE's
        path-selection arguments (sparse, density hints, selection dtype) are accepted and ignored: this runs
        densely."""
        cfg = self.cfg
        if x.dim() != 2:
            raise ValueError(f"training_loss expects a [batch, d_in] matrix, got shape {tuple(x.shape)}")
        self._check_input(x)
        n_rows = x.shape[0]
        x = x.to(self.dtype)
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        f_all = F.relu(pre)
        norm_sum = self._norm_sum()
        zero = x.new_zeros(())
        min_active = x.new_full((), math.inf)
        if cfg.architecture == "batchtopk":
            with torch.no_grad():
                score = f_all * norm_sum
                blocks = cfg.block_k()
                if blocks:
                    mask = torch.zeros_like(score, dtype=torch.bool)
                    min_active = x.new_full((cfg.d_sae,), math.inf)
                    for sl, k_block in blocks:
                        m_block, t_block = _batch_topk(score[:, sl], k_block, n_rows)
                        mask[:, sl] = m_block
                        min_active[sl] = t_block
                else:
                    mask, min_active = _batch_topk(score, cfg.k, n_rows)
            f = f_all * mask.to(f_all.dtype)
        else:
            f = f_all
        recon = f @ self.W_dec + self.b_dec
        sq_err = (recon - x).pow(2)
        per_token = sq_err.sum(-1)
        mse = per_token.mean()
        weights = self._error_weights(x)
        loss = mse if weights is None else (sq_err * weights).sum(-1).mean()
        sparsity_loss = zero
        if cfg.architecture == "relu":
            sparsity_loss = cfg.l1_coefficient * sparsity_scale * (f * norm_sum).sum() / n_rows
            loss = loss + sparsity_loss
        aux_loss = zero
        if cfg.architecture == "batchtopk" and dead_mask is not None and cfg.aux_coefficient > 0 \
                and bool(dead_mask.any()):
            dead = dead_mask.nonzero().squeeze(1)
            dead_pre = F.relu(pre[:, dead])
            assert cfg.aux_k is not None  # SAEConfig.__post_init__ fills it
            k_aux = min(int(cfg.aux_k), dead.numel())
            top = dead_pre.topk(k_aux, dim=1)
            aux_f = torch.zeros_like(dead_pre).scatter(1, top.indices, top.values)
            residual = (x - recon).detach()
            aux_err = (aux_f @ self.W_dec[dead] - residual).pow(2)
            aux_loss = cfg.aux_coefficient * (aux_err if weights is None else aux_err * weights).sum(-1).mean()
            loss = loss + aux_loss
        with torch.no_grad():
            fd = f.detach()
            fired, n_active = fd.sum(0) > 0, torch.count_nonzero(fd)
        return self._output(x, loss, mse, sparsity_loss, aux_loss, per_token, fired, n_active, min_active, False)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called by the trainer once the optimizer exists: a DFC zeroes its forbidden Adam moments each step."""
        self._optimizer_ref = weakref.ref(optimizer)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """The trainer's hook between ``backward`` and the optimizer step: here it zeroes the DFC's forbidden
        gradients (crosscoder decoders are not unit-norm, so there is no parallel component to remove)."""
        if self.partition.is_dedicated:
            zero_forbidden_(self.partition, self.cfg.d_models, self.W_enc.grad, self.W_dec.grad)

    @torch.no_grad()
    def apply_constraints(self, output: TrainingOutput | None = None) -> None:
        """After an optimizer step: the forbidden weights and Adam moments back to exactly zero (they already are
        when gradients were masked from the start; this also covers state loaded from elsewhere), and BatchTopK's
        threshold EMA."""
        super().apply_constraints(output)
        if not self.partition.is_dedicated:
            return
        dims = self.cfg.d_models
        zero_forbidden_(self.partition, dims, self.W_enc.data, self.W_dec.data)
        opt = self._optimizer_ref() if self._optimizer_ref is not None else None
        if opt is not None:
            enc_state, dec_state = opt.state.get(self.W_enc, {}), opt.state.get(self.W_dec, {})
            for key in ("exp_avg", "exp_avg_sq"):
                zero_forbidden_(self.partition, dims, enc_state.get(key), dec_state.get(key))

    # ----- folding ---------------------------------------------------------------------------------------------

    def model_scales(self) -> tuple[float, float]:
        """The per-model scales the training inputs were multiplied by (1, 1 once folded)."""
        info = self.metadata.extra.get("crosscoder", {})
        if info.get("scales_folded"):
            return 1.0, 1.0
        scales = info.get("model_scales") or (1.0, 1.0)
        return float(scales[0]), float(scales[1])

    @torch.no_grad()
    def folded(self, input_scale: float) -> "Crosscoder":
        """A copy taking raw activations: the trainer's global ``input_scale`` and the per-model scales of the
        paired source (``metadata.extra["crosscoder"]["model_scales"]``) folded into the weights; a BatchTopK score
        threshold becomes per-latent code thresholds first (they do not change under the folding)."""
        if self.cfg.architecture == "batchtopk" and not self.cfg.threshold_per_latent:
            t = self.threshold.clamp_min(0) / self._norm_sum().detach().clamp_min(1e-12)
            out = super().folded(1.0)
            out.threshold.copy_(t)
            out.cfg = replace(self.cfg, threshold_per_latent=True)
        else:
            out = super().folded(1.0)
            out.cfg = replace(self.cfg)
        out._optimizer_ref = None
        d_a = self.cfg.d_models[0]
        c_a, c_b = self.model_scales()
        s = float(input_scale)
        for sl, c in ((slice(0, d_a), c_a), (slice(d_a, self.cfg.d_in), c_b)):
            out.W_enc[sl].mul_(s * c)
            out.W_dec[:, sl].div_(s * c)
            out.b_dec[sl].div_(s * c)
        info = dict(self.metadata.extra.get("crosscoder", {}))
        info.update({"scales_folded": True, "folded_scales": [s * c_a, s * c_b]})
        out.metadata = replace(self.metadata, extra={**self.metadata.extra, "crosscoder": info})
        return out


@dataclass
class CrosscoderSpec(RunSpec):
    """A :class:`RunSpec` that makes the trainer build a :class:`Crosscoder` (``architecture`` relu = the L1
    crosscoder, batchtopk). ``d_models`` are the two widths (model A first); ``a_only`` / ``b_only`` the DFC's
    exclusive latent counts (0: a plain crosscoder). :func:`workbench.diffing.paired_store.crosscoder_spec` fills
    them from a paired store."""

    d_models: tuple[int, int] = (0, 0)
    a_only: int = 0
    b_only: int = 0
    exclusive_k: float = 0.0
    loss_weights: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.d_models = tuple(int(d) for d in self.d_models)  # type: ignore[assignment]
        self.loss_weights = tuple(float(w) for w in self.loss_weights)  # type: ignore[assignment]
        if self.architecture not in CROSSCODER_ARCHITECTURES:
            raise ValueError(f"crosscoder architecture {self.architecture!r}: use relu (L1) or batchtopk")

    def sae_config(self, d_in: int) -> CrosscoderConfig:
        extra = dict(self.options)
        if self.l1_coefficient is not None:
            extra["l1_coefficient"] = self.l1_coefficient
        return CrosscoderConfig(self.architecture, d_in, int(self.d_sae), k=self.k, d_models=self.d_models,
                                a_only=int(self.a_only), b_only=int(self.b_only), exclusive_k=float(self.exclusive_k),
                                loss_weights=self.loss_weights, **extra)

    def build_sae(self, d_in: int, metadata: SAEMetadata, *, seed: int, device) -> Crosscoder:
        """What the trainer calls instead of ``SAE(spec.sae_config(d_in), ...)``."""
        declared = (metadata.extra or {}).get("crosscoder", {}).get("d_models")
        if declared is not None and tuple(int(d) for d in declared) != tuple(self.d_models):
            raise ValueError(f"crosscoder {self.resolved_name!r} has d_models={list(self.d_models)} but the paired "
                             f"source holds widths {list(declared)}: build the spec from the same paired store")
        return Crosscoder(self.sae_config(d_in), metadata, seed=seed, device=device)

    @property
    def resolved_name(self) -> str:
        if self.name:
            return self.name
        base = "l1" if self.architecture == "relu" else "batchtopk"
        kind = "dfc" if (self.a_only or self.b_only) else "cc"
        sparsity = f"k{self.k:g}" if self.architecture == "batchtopk" else f"l1_{(self.l1_coefficient or 1.0):g}"
        return f"{kind}-{base}-{self.d_sae}-{sparsity}"

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 1e-3 if self.architecture == "relu" else 5e-4


def load_crosscoder(path: str | Path, device: str | torch.device = "cpu") -> Crosscoder:
    """Read a crosscoder the trainer saved (``<run>/sae``: SAELens-format cfg.json + safetensors)."""
    from workbench.sae.io import CFG_FILENAME, WEIGHTS_FILENAME, read_safetensors

    path = Path(path)
    try:
        cfg = json.loads((path / CFG_FILENAME).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} holds no readable {CFG_FILENAME}: point at a trained crosscoder's sae/ folder") \
            from err
    meta = cfg.get("metadata", {})
    wb = dict(meta.get("workbench", {}))
    if "crosscoder" not in wb or "d_models" not in wb.get("config", {}):
        raise ValueError(f"{path} holds an SAE, not a crosscoder: load it with workbench.sae.io.load_sae")
    config = CrosscoderConfig.from_dict(wb.pop("config"))
    for key in ("architecture", "input_scale"):
        wb.pop(key, None)
    metadata = SAEMetadata(meta.get("model_name"), meta.get("hook_name"), meta.get("context_size"),
                           bool(meta.get("prepend_bos", False)), wb)
    cc = Crosscoder(config, metadata, seed=None, device=device)
    load_parameters(cc, read_safetensors(path / WEIGHTS_FILENAME, device), str(path))
    return cc
