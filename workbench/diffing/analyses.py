"""Reading a trained crosscoder: per-model quality, relative decoder norms, latent kinds, language shares of top
activations, ranking of exclusive latents, per-side feature cards and the steering check (docs/methods.md §13).

All functions take a *saved* (folded) crosscoder, which reads raw concatenated activations
(``paired.load(scaled=False)``), except where stated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from workbench.core.protocols import ModelLike
from workbench.diffing.dfc import KIND_NAMES

__all__ = ["confirmed_kinds", "exclusive_ranking", "kind_language_shares", "language_base_rate", "language_shares",
           "latent_kinds", "latent_rows",
           "norm_histogram", "pair_metrics", "relative_norms", "side_features", "steering_check", "top_rows"]


@torch.no_grad()
def pair_metrics(cc, x: Tensor, *, batch_size: int = 4096) -> dict:
    """Per-model FVU, the L0 and the dead fraction (latents that never fire on ``x``) of crosscoder ``cc``."""
    d_a, d_b = cc.cfg.d_models
    err = torch.zeros(2, dtype=torch.float64)
    sum_x = [torch.zeros(d, dtype=torch.float64) for d in (d_a, d_b)]
    sum_sq = torch.zeros(2, dtype=torch.float64)
    fired = torch.zeros(cc.cfg.d_sae, dtype=torch.bool)
    l0, n = 0.0, 0
    for chunk in x.split(batch_size):
        chunk = chunk.to(cc.device, cc.dtype)
        codes = cc.encode(chunk)
        recon = cc.decode(codes)
        for m, sl in enumerate((slice(0, d_a), slice(d_a, d_a + d_b))):
            xm = chunk[:, sl].double()
            err[m] += (recon[:, sl].double() - xm).pow(2).sum().cpu()
            sum_x[m] += xm.sum(0).cpu()
            sum_sq[m] += xm.pow(2).sum().cpu()
        fired |= (codes > 0).any(0).cpu()
        l0 += float((codes > 0).sum())
        n += chunk.shape[0]
    if n == 0:
        raise ValueError("no activations to evaluate: x is empty")
    out = {}
    for m, side in enumerate("ab"):
        var = float(sum_sq[m] - sum_x[m].pow(2).sum() / n)
        out[f"fvu_{side}"] = float(err[m]) / var if var > 0 else float("nan")
    out.update({"l0": l0 / n, "dead_fraction": float((~fired).float().mean()), "n_tokens": n})
    return out


def relative_norms(cc) -> Tensor:
    """``r = ||d_B|| / (||d_A|| + ||d_B||)`` per latent (0: only in A, 1: only in B; nan for a zero latent)."""
    norms = cc.decoder_norms()
    return norms[:, 1] / (norms.sum(1))


def norm_histogram(r: Tensor, bins: int = 40) -> dict:
    """Counts of the relative norms in ``bins`` equal bins over [0, 1] (data for the histogram)."""
    r = r[torch.isfinite(r)].clamp(0, 1)
    counts = torch.histc(r.float(), bins=bins, min=0.0, max=1.0)
    edges = torch.linspace(0, 1, bins + 1)
    return {"edges": edges.tolist(), "counts": counts.long().tolist()}


def latent_kinds(cc, r: Tensor | None = None, *, exclusive: float = 0.1, shared: tuple[float, float] = (0.3, 0.7)
                 ) -> np.ndarray:
    """The kind of every latent: a DFC's partition, else by relative norm (``r < exclusive``: a_only, ``r > 1 -
    exclusive``: b_only, inside ``shared``: shared, otherwise "mixed")."""
    part = getattr(cc, "partition", None)
    if part is not None and part.is_dedicated:
        return np.array([KIND_NAMES[int(k)] for k in part.kinds()])
    r = relative_norms(cc) if r is None else r
    out = np.full(r.numel(), "mixed", dtype=object)
    rn = r.numpy()
    out[rn < exclusive] = "a_only"
    out[rn > 1 - exclusive] = "b_only"
    out[(rn > shared[0]) & (rn < shared[1])] = "shared"
    return out.astype(str)


@torch.no_grad()
def top_rows(cc, x: Tensor, k: int = 20, *, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
    """``(values, rows)`` [d_sae, k]: every latent's ``k`` largest activations over ``x`` and their row indices."""
    n_lat = cc.cfg.d_sae
    best_v = torch.full((n_lat, k), -1.0)
    best_i = torch.full((n_lat, k), -1, dtype=torch.long)
    start = 0
    for chunk in x.split(batch_size):
        codes = cc.encode(chunk.to(cc.device, cc.dtype)).float().cpu().T  # [d_sae, n]
        kk = min(k, codes.shape[1])
        v, i = codes.topk(kk, dim=1)
        cat_v = torch.cat([best_v, v], 1)
        cat_i = torch.cat([best_i, i + start], 1)
        top = cat_v.topk(k, dim=1)
        best_v, best_i = top.values, cat_i.gather(1, top.indices)
        start += chunk.shape[0]
    return best_v, best_i


def language_shares(values: Tensor, rows: Tensor, languages: np.ndarray, wanted: Sequence[str] = ("es", "fr")
                    ) -> Tensor:
    """Per latent, the share of its top activations (those > 0) on rows whose language is in ``wanted``; nan for a
    latent that never fires."""
    lang = np.asarray(languages)
    hit = torch.from_numpy(np.isin(lang, list(wanted)))
    on = values > 0
    in_lang = hit[rows.clamp_min(0)] & on
    n_on = on.sum(1).float()
    return torch.where(n_on > 0, in_lang.sum(1).float() / n_on.clamp_min(1), torch.full_like(n_on, float("nan")))


def language_base_rate(languages: np.ndarray, wanted: Sequence[str] = ("es", "fr")) -> float:
    """The share of all rows whose language is in ``wanted``: what a latent blind to language scores in
    :func:`language_shares` (its top rows are then a random draw of the rows)."""
    lang = np.asarray(languages)
    if lang.size == 0:
        raise ValueError("no rows: the language base rate needs a non-empty store")
    return float(np.isin(lang, list(wanted)).mean())


def kind_language_shares(shares: Tensor, kinds: np.ndarray, base_rate: float | None = None) -> dict:
    """Mean share per latent kind, over the latents of that kind that fire: ``{kind: {"share", "n"}}``, plus
    ``"enrichment"`` (share / ``base_rate``) when the base rate is given."""
    out = {}
    for kind in ("a_only", "shared", "b_only", "mixed"):
        sel = torch.from_numpy(np.asarray(kinds) == kind) & torch.isfinite(shares)
        if bool(sel.any()):
            out[kind] = {"share": float(shares[sel].mean()), "n": int(sel.sum())}
            if base_rate:
                out[kind]["enrichment"] = out[kind]["share"] / base_rate
    return out


def confirmed_kinds(kinds: np.ndarray, scaling, *, below: float = 0.5, min_active: int = 5) -> np.ndarray:
    """``kinds`` with the exclusive latents that Latent Scaling does not confirm relabelled ``"unconfirmed"``: an
    ``a_only`` / ``b_only`` latent stays exclusive only when its specificity ratio (how much of the *other* model's
    activations it explains relative to its own, :attr:`LatentScaling.specificity`) is below ``below`` and it is
    active on at least ``min_active`` rows. ``scaling`` must cover every latent (``latent_scaling(cc, batches)``)."""
    out = np.asarray(kinds).astype(object).copy()
    if scaling.latents.numel() != out.size:
        raise ValueError(f"scaling covers {scaling.latents.numel()} latents, kinds {out.size}: run latent_scaling "
                         "over all latents")
    spec = scaling.specificity.numpy()
    order = scaling.latents.numpy()
    ok = np.zeros(out.size, dtype=bool)
    ok[order] = np.isfinite(spec) & (spec < below) & (scaling.active_tokens.numpy() >= min_active)
    excl = np.isin(out, ["a_only", "b_only"])
    out[excl & ~ok] = "unconfirmed"
    return out.astype(str)


def exclusive_ranking(kinds: np.ndarray, side: str, *, scaling=None, frequency: Tensor | None = None,
                      top: int = 20, min_active: int = 5, max_frequency: float | None = None) -> list[int]:
    """The ``top`` latents exclusive to ``side`` ("a" or "b"), most model-specific first: by the Latent Scaling
    ratio (:attr:`LatentScaling.specificity`, ascending) when given, then by firing frequency (descending).
    Latents active on fewer than ``min_active`` tokens (outlier catchers) are left out when ``scaling`` is given,
    and latents firing on more than ``max_frequency`` of the tokens (dense directions rather than features, e.g. the
    exclusive latents a block-wise DFC must fill its reserved slots with) when ``frequency`` and it are given."""
    idx = np.nonzero(np.asarray(kinds) == f"{side}_only")[0]
    ratio: dict[int, float] = {}
    active: dict[int, int] = {}
    if scaling is not None:
        spec = scaling.specificity
        for pos, j in enumerate(scaling.latents.tolist()):
            ratio[int(j)] = float(spec[pos]) if bool(torch.isfinite(spec[pos])) else float("inf")
            active[int(j)] = int(scaling.active_tokens[pos])
    keys = []
    for j in idx.tolist():
        if scaling is not None and active.get(j, 0) < min_active:
            continue
        freq = float(frequency[j]) if frequency is not None else 0.0
        if max_frequency is not None and freq > max_frequency:
            continue
        keys.append((ratio.get(j, float("inf")), -freq, j))
    keys.sort()
    return [j for _, _, j in keys[:top]]


# ----------------------------------------------------------------------------------------------------------------
# Per-side feature pass (top examples, histograms, logit effects) and the steering check
# ----------------------------------------------------------------------------------------------------------------


def _side_view_store(paired, side: str, out: Path):
    """A derived activation store whose rows are the concatenated activations (what the crosscoder reads) and
    whose tokens are ``side``'s own; written once next to the paired store."""
    from workbench.data.store_reader import ActivationStore
    from workbench.data.store_writer import StoreWriter

    store = paired.a if side == "a" else paired.b
    hook = "crosscoder_input"
    if (out / "manifest.json").is_file():
        try:
            return ActivationStore.open(out)
        except ValueError:
            pass
    writer = StoreWriter(out, model_name=store.model_name, hooks=[hook], d_model=sum(paired.d_models),
                         context_size=store.context_size, dtype="bfloat16", shard_contexts=store.shard_contexts,
                         prepend_bos=False, extra={"view_of": str(paired.path), "side": side})
    rows = store.context_size * store.shard_contexts
    with writer:
        for shard in range(writer.n_complete_shards, store.n_shards):
            arr = store.shard_arrays(shard)
            n = arr["tokens"].size
            parts = [next(s.iter_batches(n, shuffle=False, exclude_bos=False, start_tokens=shard * rows, max_tokens=n))
                     for s in (paired.a, paired.b)]
            writer.write_shard(shard, arr["tokens"], arr["doc_ids"], arr["positions"], {hook: torch.cat(parts, 1)})
        return writer.finalize()


def side_features(paired, cc, side: str, model: ModelLike, out_dir: str | Path, *, config=None, n_logits: int = 10):
    """The feature pass (:func:`workbench.analysis.features.compute_features`) of crosscoder ``cc`` with
    ``side``'s tokens in the examples, and the logit effects of ``side``'s decoder through ``model``: FeatureResults
    that :class:`~workbench.report.card.StaticFeatureCard` shows as they are."""
    from workbench.analysis.features import FeatureConfig, compute_features
    from workbench.analysis.logits import logit_effects

    if side not in ("a", "b"):
        raise ValueError(f"side must be 'a' or 'b', got {side!r}")
    if cc.cfg.architecture == "batchtopk" and not cc.cfg.threshold_per_latent:
        raise ValueError("side_features needs the saved (folded) crosscoder: load it with load_crosscoder")
    out_dir = Path(out_dir)
    view = _side_view_store(paired, side, out_dir / "view")
    results = compute_features(view, cc, out_dir / "features", config or FeatureConfig(progress=False),
                               hook="crosscoder_input", tokenizer=model.tokenizer)
    d_a = cc.cfg.d_models[0]
    w = cc.W_dec.detach()
    directions = w[:, :d_a] if side == "a" else w[:, d_a:]
    eff = logit_effects(model, directions, k=n_logits)
    ids = sorted(set(eff.top_ids.reshape(-1).tolist()) | set(eff.bottom_ids.reshape(-1).tolist()))
    vocab = {int(i): model.tokenizer.decode([int(i)]) for i in ids}
    results.set_logit_effects(eff.top_ids, eff.top_values, eff.bottom_ids, eff.bottom_values, vocab)
    return results


def steering_check(model: ModelLike, hook: str, direction: Tensor, prompts: Sequence[str], *, coefficient: float,
                   config=None) -> list[dict]:
    """Screen-and-verify: generations from ``prompts`` without and with ``coefficient * direction`` added at
    ``hook`` (a latent's decoder row in its own model, raw units; ``coefficient`` ~ a few times the latent's
    max activation). One ``{"prompt", "plain", "steered"}`` per prompt, same seed for both."""
    from workbench.intervene.generation import GenerationConfig
    from workbench.intervene.steering import AddVector, steered_generate

    cfg = config or GenerationConfig(max_new_tokens=24, n_samples=1, temperature=0.0)
    vec = direction.detach().float() * float(coefficient)
    steer = AddVector(hook=hook, vector=vec)
    out = []
    for p in prompts:
        plain = steered_generate(model, p, None, cfg).texts[0]
        steered = steered_generate(model, p, steer, cfg).texts[0]
        out.append({"prompt": p, "plain": plain, "steered": steered})
    return out


def latent_rows(results, latents: Sequence[int], scaling=None, *, n_tokens: int = 6) -> list[dict]:
    """One row per latent for a table: density, max activation, the Latent Scaling ratio, the tokens of its top
    examples and its top logit effects (its "explanation" to read)."""
    ratio = {}
    if scaling is not None:
        ratio = {int(j): float(v) for j, v in zip(scaling.latents, scaling.specificity)}
    rows = []
    for j in latents:
        rep = results.feature(int(j))
        tokens = [ex.tokens[ex.index] for ex in rep.top[:n_tokens] if 0 <= ex.index < len(ex.tokens)]
        logits = rep.logits.top_tokens[:n_tokens] if rep.logits is not None else []
        rows.append({"latent": int(j), "density": rep.density, "max": rep.max_activation,
                     "scaling_ratio": ratio.get(int(j), float("nan")), "top_tokens": " | ".join(tokens),
                     "top_logits": " | ".join(logits)})
    return rows
