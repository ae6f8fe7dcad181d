"""Latent Scaling (Minder et al. 2025): how much of each model's activations a latent really explains
(docs/methods.md §13).

For latent ``j`` with codes ``f_n`` and a direction ``u`` in model ``m``'s space, the scalar ``beta`` minimising
``sum_n ||T_n - beta f_n u||^2`` over the tokens where ``j`` is active is, in closed form,
``beta = sum_n f_n <u, T_n> / (||u||^2 sum_n f_n^2)``. Two targets per model (``x_hat^{-j}`` is the crosscoder's
reconstruction without latent ``j``):

- error: ``T = x_m - x_hat_m^{-j}``, what the other latents leave unexplained;
- reconstruction: ``T = x_hat_m^{-j}``, what they do explain.

A latent that looks exclusive to model B (small decoder norm in A) is *truly* B-specific only when its direction
also explains little of A's error: the ratio ``nu = beta_A / beta_B`` is near 0. A ratio near 1 flags an
artefact of the L1 penalty (the concept is in A too, its A-decoder was merely shrunk), a high reconstruction ratio
a concept split into latents. This needs ``u`` in both models' spaces: with equal widths (a model and its
fine-tune) ``u`` is the latent's decoder direction in the model it belongs to (the larger norm). Across
architectures the spaces differ, so the same question is asked with a free direction per model: the least-squares
decoder vector ``w = sum f T / sum f^2`` and the fraction of ``sum ||T||^2`` it explains (``explained_*``); its
ratio between the models plays the role of ``nu``.

Everything is accumulated batch by batch (:class:`ScalingAccumulator`), so it runs over a whole paired store.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LatentScaling", "ScalingAccumulator", "closed_form_beta", "latent_scaling"]


def closed_form_beta(f: Tensor, direction: Tensor, target: Tensor) -> tuple[float, float]:
    """``(beta, relative error)`` of one latent: ``f`` [n] codes, ``direction`` [d], ``target`` [n, d]; the error
    is ``||T - beta f u||^2 / ||T||^2`` over the tokens where ``f > 0``. The reference the accumulator is tested
    against."""
    f, target, direction = f.detach(), target.detach(), direction.detach()
    on = f > 0
    f, target = f[on].double(), target[on].double()
    u = direction.double()
    den = float((f * f).sum() * (u @ u))
    if den == 0:
        return float("nan"), float("nan")
    beta = float((f * (target @ u)).sum()) / den
    resid = target - beta * f[:, None] * u[None]
    total = float(target.pow(2).sum())
    return beta, float(resid.pow(2).sum()) / total if total > 0 else float("nan")


@dataclass
class LatentScaling:
    """Per-latent results (arrays over the ``latents`` analysed). ``own`` is 0 when the latent's decoder is larger
    in model A, 1 in model B; ``nu_*`` are other-model / own-model ratios (nan without equal widths)."""

    latents: Tensor
    own: Tensor
    beta_error: Tensor  # [n, 2]: model A, model B
    beta_recon: Tensor  # [n, 2]
    explained_error: Tensor  # [n, 2]: fraction of the error target a free least-squares direction explains
    explained_recon: Tensor  # [n, 2]
    active_tokens: Tensor  # [n]

    def _ratio(self, t: Tensor) -> Tensor:
        own = t.gather(1, self.own[:, None]).squeeze(1)
        other = t.gather(1, (1 - self.own)[:, None]).squeeze(1)
        return other / own

    @property
    def nu_error(self) -> Tensor:
        return self._ratio(self.beta_error)

    @property
    def nu_recon(self) -> Tensor:
        return self._ratio(self.beta_recon)

    @property
    def explained_ratio(self) -> Tensor:
        """Other-model / own-model fraction of the error target explained by the latent (any widths)."""
        return self._ratio(self.explained_error)

    @property
    def specificity(self) -> Tensor:
        """The ratio that ranks exclusive latents (low = truly model-specific): ``|nu_error|`` where the widths are
        equal (Minder et al.'s ratio, the latent's own direction fitted in both models), else ``explained_ratio``."""
        nu = self.nu_error.abs()
        return torch.where(torch.isfinite(nu), nu, self.explained_ratio)

    def to_dict(self) -> dict:
        return {"latents": self.latents.tolist(), "own": self.own.tolist(), "beta_error": self.beta_error.tolist(),
                "beta_recon": self.beta_recon.tolist(), "explained_error": self.explained_error.tolist(),
                "explained_recon": self.explained_recon.tolist(), "nu_error": self.nu_error.tolist(),
                "nu_recon": self.nu_recon.tolist(), "explained_ratio": self.explained_ratio.tolist(),
                "active_tokens": self.active_tokens.tolist()}


class ScalingAccumulator:
    """Sums over batches for :class:`LatentScaling` of ``latents`` of a crosscoder (which takes the batches as
    given: raw activations for a saved crosscoder)."""

    def __init__(self, crosscoder, latents: Tensor | None = None):
        self.cc = crosscoder
        n = crosscoder.cfg.d_sae
        self.latents = torch.arange(n) if latents is None else torch.as_tensor(latents).long()
        self.d_models = tuple(crosscoder.cfg.d_models)
        L = self.latents.numel()
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.s_ff, self.n_on = z(L), z(L)
        self.s_fy = [z(L, d) for d in self.d_models]  # sum f * error
        self.s_fr = [z(L, d) for d in self.d_models]  # sum f * full reconstruction
        self.s_yy = [z(L) for _ in self.d_models]  # sum over active tokens of ||error||^2
        self.s_rr = [z(L) for _ in self.d_models]
        self.s_ry = [z(L) for _ in self.d_models]  # sum over active tokens of <recon, error>

    @torch.no_grad()
    def add(self, x: Tensor) -> None:
        cc = self.cc
        x = x.to(cc.device, cc.dtype)
        codes = cc.encode(x)
        recon = cc.decode(codes)
        f = codes[:, self.latents.to(codes.device)].double().cpu()
        on = (f > 0).double()
        self.s_ff += (f * f).sum(0)
        self.n_on += on.sum(0)
        lo = 0
        for m, d in enumerate(self.d_models):
            err = (x[:, lo:lo + d] - recon[:, lo:lo + d]).double().cpu()
            rec = recon[:, lo:lo + d].double().cpu()
            self.s_fy[m] += f.T @ err
            self.s_fr[m] += f.T @ rec
            self.s_yy[m] += on.T @ err.pow(2).sum(1)
            self.s_rr[m] += on.T @ rec.pow(2).sum(1)
            self.s_ry[m] += on.T @ (rec * err).sum(1)
            lo += d

    def result(self) -> LatentScaling:
        cc = self.cc
        w = cc.W_dec.detach().double().cpu()[self.latents]
        dirs, lo = [], 0
        for d in self.d_models:
            dirs.append(w[:, lo:lo + d])
            lo += d
        norms = torch.stack([dd.norm(dim=1) for dd in dirs], 1)
        own = (norms[:, 1] > norms[:, 0]).long()
        same = self.d_models[0] == self.d_models[1]
        s_ff = self.s_ff.clamp_min(1e-30)
        n = self.latents.numel()
        beta_e = torch.full((n, 2), float("nan"), dtype=torch.float64)
        beta_r = beta_e.clone()
        expl_e, expl_r = beta_e.clone(), beta_e.clone()
        for m in range(2):
            dm = dirs[m]  # this model's decoder vectors of the latents
            # error target T = err + f d_m; reconstruction target T = recon - f d_m
            sum_fT_e = self.s_fy[m] + self.s_ff[:, None] * dm
            sum_fT_r = self.s_fr[m] - self.s_ff[:, None] * dm
            dd = (dm * dm).sum(1)
            tt_e = self.s_yy[m] + 2 * (self.s_fy[m] * dm).sum(1) + self.s_ff * dd
            tt_r = self.s_rr[m] - 2 * (self.s_fr[m] * dm).sum(1) + self.s_ff * dd
            expl_e[:, m] = sum_fT_e.pow(2).sum(1) / s_ff / tt_e.clamp_min(1e-30)
            expl_r[:, m] = sum_fT_r.pow(2).sum(1) / s_ff / tt_r.clamp_min(1e-30)
            if same:
                u = torch.where(own[:, None] == 1, dirs[1], dirs[0])
                uu = (u * u).sum(1).clamp_min(1e-30)
                beta_e[:, m] = (sum_fT_e * u).sum(1) / (s_ff * uu)
                beta_r[:, m] = (sum_fT_r * u).sum(1) / (s_ff * uu)
        never = self.n_on == 0
        for t in (beta_e, beta_r, expl_e, expl_r):
            t[never] = float("nan")
        return LatentScaling(self.latents, own, beta_e.float(), beta_r.float(), expl_e.float(), expl_r.float(),
                             self.n_on.long())


def latent_scaling(crosscoder, batches, latents: Tensor | None = None) -> LatentScaling:
    """Latent Scaling of ``latents`` (default: all) over an iterable of activation batches."""
    acc = ScalingAccumulator(crosscoder, latents)
    for batch in batches:
        acc.add(batch)
    return acc.result()
