"""The streaming feature-analysis pass: one SAE over one activation store, everything a feature dashboard shows.

    from workbench.analysis.features import FeatureConfig, compute_features, FeatureResults
    results = compute_features(store, sae, out_dir="runs/l9-topk16k/features")   # resumable, cached
    results = FeatureResults.load("runs/l9-topk16k/features")                  # instant: one safetensors read
    f = results.feature(123)   # density, max, top examples, bucket samples, histogram, logit effects

Per feature it gives (docs/methods.md §5): firing count and density, max and mean activation; the top-K activating
contexts (at most one per context, the context's strongest token) with a window of tokens and the feature's
activation on every token of it; examples sampled uniformly within ``n_buckets`` activation buckets spread
linearly between 0 and the feature's max; a histogram of its non-zero activations between 0 and the max.

How it runs, and why it scales (16k features x 2M tokens in bounded memory):

1. **Encode** (the only expensive step). Store shard by shard, ``chunk_tokens`` rows at a time, the SAE's codes are
   computed *sparsely* (:class:`~workbench.analysis.feature_kernels.SparseEncoder`: the top-k of the pre-activations, or
   the entries above the threshold; no dense code matrix is materialised for TopK SAEs; where bf16 units exist the
   TopK candidates come from a bf16 matmul and their values are recomputed exactly) and written to a cache of
   sparse codes,
   ``<out_dir>/codes/NNNNN.safetensors`` (CSR: ``rowptr`` per token, ``feat``, ``val``; one file per store shard,
   written atomically). A rerun, or a run interrupted and restarted, re-encodes only the missing shards.
2. **Sweep A** over the cached codes: counts, sums and maxima by ``bincount``/``scatter_reduce`` on the non-zero
   entries, and a running per-feature top-K, merged per shard: only entries above their feature's current K-th value
   can enter (a gather and a compare drop the rest), these are reduced to one per
   (feature, context), sorted by (feature, activation) in one integer sort, ranked within each feature's segment,
   and the top-K candidates are merged with the running table by a sort over ``[d_sae, 2K]``. Only
   (activation, global token index) is kept.
3. **Sweep B**, now that every feature's max is known: exact linear histograms (``bincount`` over (feature, bin)
   pairs) and the bucket samples, a deterministic reservoir: every non-zero entry gets a hash key of (seed, feature,
   token), and each (feature, bucket) keeps the ``per_bucket`` entries with the smallest keys, i.e. a uniform
   sample without replacement of that bucket, independent of the order and chunking of the data. Entries whose key
   is above their full cell's m-th are dropped before sorting; the reservoir merges touched cells only.
4. **Windows** for just the winners: the tokens around each top and bucket example come from the store's token
   ids, and the feature's activation on each of them is looked up in the cached codes (``searchsorted`` on the
   sorted ``token * d_sae + feature`` keys). Nothing is re-encoded: with 16k features x (K + buckets) examples the
   winners' contexts cover the whole store, so re-encoding them would be a second full pass.

Results are a :class:`FeatureResults` (``features.safetensors`` + ``features.json`` + ``tokens.json``, the latter
holding the strings of every token id the results mention, so a dashboard needs no tokenizer).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike, SAELike, SAESource, StoreLike
from workbench.analysis.feature_codes import (CODES_DIR, CODES_FORMAT, CODES_VERSION, SparseCodes, shard_layout,
                                              use_fast_encoder, encode_sparse_codes)
from workbench.analysis.feature_results import (FORMAT, FORMAT_VERSION, CODE_KEYS, ActivationBucket,
                                                ActivationExample, FeatureConfig, FeatureReport, FeatureResults,
                                                Histogram, LogitEffect, analysis_tokens, semantic_settings)
from workbench.analysis.feature_kernels import BucketReservoir, bucket_index, hash_keys, merge_topk, shard_topk
from workbench.analysis.logits import logit_effects
from workbench.core.hardware import torch_threads
from workbench.core.signals import StopSignals
from workbench.data.models import load_tokenizer
from workbench.data.token_text import fragment_bytes
from workbench.sae.interop import as_sae

__all__ = [
    "analysis_tokens",
    "FORMAT",
    "FORMAT_VERSION",
    "ActivationBucket",
    "ActivationExample",
    "FeatureConfig",
    "FeatureReport",
    "FeatureResults",
    "Histogram",
    "LogitEffect",
    "SparseCodes",
    "compute_features",
    "encode_contexts",
    "encode_sparse_codes",
    "resolve_hook",
    "sae_fingerprint",
]


# ----------------------------------------------------------------------------------------------------------------
# Identity of an SAE and a store
# ----------------------------------------------------------------------------------------------------------------


def sae_fingerprint(sae: SAELike) -> str:
    """sha256 of the SAE's config and parameters (identifies the codes a cache holds)."""
    h = hashlib.sha256()
    cfg = sae.cfg.to_dict() if hasattr(sae.cfg, "to_dict") else dict(vars(sae.cfg))
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, tensor in sorted(sae.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _store_identity(store: StoreLike, hook: str) -> dict:
    return {
        "path": str(Path(store.path).resolve()),
        "created": store.manifest.get("created"),
        "model_name": store.model_name,
        "hook": hook,
        "n_contexts": int(store.n_contexts),
        "context_size": int(store.context_size),
    }


def resolve_hook(store: StoreLike, sae: SAELike, hook: str | None = None) -> str:
    """The store hook to analyse with ``sae``; checks that widths match (ValueError naming both and the fix)."""
    meta_hook = getattr(getattr(sae, "metadata", None), "hook_name", None)
    if hook is None:
        if meta_hook in store.hooks:
            hook = str(meta_hook)
        elif len(store.hooks) == 1:
            hook = store.hooks[0]
            if meta_hook and meta_hook not in ("synthetic", hook):
                warnings.warn(f"the SAE was trained on {meta_hook!r} but the store holds {hook!r}; analysing {hook!r}",
                              stacklevel=3)
        else:
            raise ValueError(f"the store at {store.path} holds several hooks {list(store.hooks)} and the SAE's "
                             f"metadata names none of them ({meta_hook!r}): pass hook=")
    elif hook not in store.hooks:
        raise ValueError(f"hook {hook!r} is not in the store at {store.path}; it holds {list(store.hooks)}")
    d_store = int(store.d_in(hook))
    if int(sae.cfg.d_in) != d_store:
        raise ValueError(f"d_model mismatch: the SAE takes d_in={sae.cfg.d_in} but the store's {hook!r} activations "
                         f"have d_model={d_store}. Use the SAE trained on this hook (or the store harvested for it).")
    return hook


def _resolve_device(device: str | None, sae: SAELike) -> torch.device:
    sae_device = sae.device if hasattr(sae, "device") else torch.device("cpu")
    if device is None:
        return sae_device
    wanted = torch.device(device)
    if wanted.type != sae_device.type:
        raise ValueError(f"device={str(wanted)!r} but the SAE's weights are on {sae_device}: move it first "
                         f"(sae.to({str(wanted)!r})) or leave device=None to use the SAE's device")
    return wanted

# ----------------------------------------------------------------------------------------------------------------
# The pass
# ----------------------------------------------------------------------------------------------------------------


def _sweep_a(codes: SparseCodes, layout, d_sae: int, cfg: FeatureConfig, device, ctx_size: int):
    count = torch.zeros(d_sae, dtype=torch.int64, device=device)
    total = torch.zeros(d_sae, dtype=torch.float64, device=device)
    mx = torch.zeros(d_sae, dtype=torch.float32, device=device)
    top_val = torch.full((d_sae, cfg.top_k), float("-inf"), dtype=torch.float32, device=device)
    top_tok = torch.full((d_sae, cfg.top_k), -1, dtype=torch.int64, device=device)
    for s, _, _ in tqdm(layout, desc="top-k", disable=not cfg.progress, dynamic_ncols=True, leave=False):
        tok, feat, val = codes.entries(s, device)
        if feat.numel() == 0:
            continue
        count += torch.bincount(feat, minlength=d_sae)
        total.index_add_(0, feat, val.to(torch.float64))
        mx.scatter_reduce_(0, feat, val, reduce="amax")
        # only entries above a feature's current K-th value can enter its top-K (ties go to earlier tokens)
        cand = val > top_val[:, -1][feat]
        sv, st = shard_topk(feat[cand], val[cand], tok[cand], d_sae, cfg.top_k,
                            ctx_size if cfg.distinct_contexts else None)
        top_val, top_tok = merge_topk(top_val, top_tok, sv, st)
    return count, total, mx, top_val, top_tok


def _sweep_b(codes: SparseCodes, layout, mx: Tensor, cfg: FeatureConfig, device):
    d_sae = mx.numel()
    nb, nh, m = cfg.n_buckets, cfg.n_hist_bins, cfg.per_bucket
    hist = torch.zeros(d_sae * nh, dtype=torch.int64, device=device)
    bucket_count = torch.zeros(d_sae * nb, dtype=torch.int64, device=device)
    res = BucketReservoir(d_sae * nb, m, device)
    for s, _, _ in tqdm(layout, desc="buckets", disable=not cfg.progress, dynamic_ncols=True, leave=False):
        tok, feat, val = codes.entries(s, device)
        if feat.numel() == 0:
            continue
        fmax = mx[feat]
        hist += torch.bincount(feat * nh + bucket_index(val, fmax, nh), minlength=d_sae * nh)
        cell = feat * nb + bucket_index(val, fmax, nb)
        bucket_count += torch.bincount(cell, minlength=d_sae * nb)
        res.update(cell, hash_keys(feat, tok, cfg.seed), tok, val)
    return (hist.view(d_sae, nh), bucket_count.view(d_sae, nb), res.tok.view(d_sae, nb, m),
            res.val.view(d_sae, nb, m))


def _windows(store: StoreLike, codes: SparseCodes, layout, ex_feat: Tensor, ex_tok: Tensor, cfg: FeatureConfig
             ) -> tuple[Tensor, Tensor]:
    """Token ids [E, W] (-1 outside the context or document) and the example's feature's activations [E, W]."""
    ctx_size, d_sae = codes.context_size, codes.d_sae
    before, W = cfg.context_before, cfg.window
    E = ex_tok.numel()
    out_ids = torch.full((E, W), -1, dtype=torch.int32)
    out_acts = torch.zeros((E, W), dtype=torch.float32)
    if E == 0:
        return out_ids, out_acts
    ex_feat, ex_tok = ex_feat.to("cpu", torch.int64), ex_tok.to("cpu", torch.int64)
    ex_ctx = torch.div(ex_tok, ctx_size, rounding_mode="floor")
    offs = torch.arange(W, dtype=torch.int64) - before
    for s, first, n in tqdm(layout, desc="windows", disable=not cfg.progress, dynamic_ncols=True, leave=False):
        sel = ((ex_ctx >= first) & (ex_ctx < first + n)).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        arrs = store.shard_arrays(s)
        tokens = torch.from_numpy(np.array(arrs["tokens"][:n], dtype=np.int64))
        docs = torch.from_numpy(np.array(arrs["doc_ids"][:n], dtype=np.int64))
        _, rowptr, feat, val = codes.read_shard(s)
        local_ctx = ex_ctx[sel] - first
        pos = ex_tok[sel] - ex_ctx[sel] * ctx_size
        wpos = pos[:, None] + offs[None, :]  # [e, W]
        inside = (wpos >= 0) & (wpos < ctx_size)
        wpos_c = wpos.clamp(0, ctx_size - 1)
        ids = tokens[local_ctx[:, None], wpos_c]
        if cfg.same_doc:
            inside &= docs[local_ctx[:, None], wpos_c] == docs[local_ctx, pos][:, None]
        # activation lookup in the sorted (token, feature) keys of the shard
        counts = rowptr[1:] - rowptr[:-1]
        row_of = torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int64), counts)
        keys = row_of * d_sae + feat
        q = (local_ctx[:, None] * ctx_size + wpos_c) * d_sae + ex_feat[sel][:, None]
        at = torch.searchsorted(keys, q.reshape(-1)).clamp_max(max(keys.numel() - 1, 0))
        if keys.numel():
            found = (keys[at] == q.reshape(-1)).view_as(q)
            acts = torch.where(found, val[at].view_as(q), torch.zeros((), dtype=torch.float32))
        else:
            acts = torch.zeros(q.shape, dtype=torch.float32)
        out_ids[sel] = torch.where(inside, ids, torch.full_like(ids, -1)).to(torch.int32)
        out_acts[sel] = torch.where(inside, acts, torch.zeros_like(acts))
    return out_ids, out_acts


def _present_ids(ids: Tensor) -> list[int]:
    """Sorted distinct non-negative ids (a presence mask: linear time, unlike a sort-based unique)."""
    ids = ids.reshape(-1).to(torch.int64)
    ids = ids[ids >= 0]
    if ids.numel() == 0:
        return []
    mask = torch.zeros(int(ids.max()) + 1, dtype=torch.bool)
    mask[ids] = True
    return mask.nonzero().squeeze(1).tolist()


def _decode_vocab(tokenizer, ids: Sequence[int]) -> dict[int, str]:
    ids = [int(i) for i in ids if int(i) >= 0]
    if not ids or tokenizer is None:
        return {}
    try:
        strings = tokenizer.batch_decode([[i] for i in ids])
    except Exception:  # a tokenizer without batch_decode
        strings = [tokenizer.decode([i]) for i in ids]
    return dict(zip(ids, strings))


def _load_tokenizer_quietly(model_name: str | None):
    if not model_name:
        return None
    try:

        return load_tokenizer(model_name)
    except Exception as err:  # offline hub model, missing cache...
        warnings.warn(f"no tokenizer for {model_name!r} ({err}); token strings will show as <id>", stacklevel=3)
        return None


def compute_features(store: StoreLike, sae: SAESource, out_dir: str | Path | None = None,
                     config: FeatureConfig | None = None, *,
                     hook: str | None = None, model: ModelLike | None = None, tokenizer=None, n_logits: int = 10,
                     overwrite: bool = False) -> FeatureResults:
    """Run the analysis pass of ``sae`` over ``store`` (see the module docstring) and return the results.

    With ``out_dir`` the sparse codes are cached in ``out_dir/codes`` (a rerun or a restart after a crash encodes
    only what is missing) and the results are saved there; results already saved for the same SAE, store and
    config are loaded instead of recomputed (``overwrite=True`` forces the reductions to rerun). Without it the
    codes live in a temporary folder deleted at the end. ``model`` (a HookedTransformer) adds logit effects;
    ``tokenizer`` (default: the model's, else the store's model's; ``False``: none, ids show as ``<id>``) names the
    tokens in ``tokens.json``.

    Raises ValueError when the SAE's d_in differs from the store's d_model, or the hook is ambiguous.
    """
    import tempfile

    cfg = config or FeatureConfig()
    sae = as_sae(sae, device=cfg.device, model=model)  # a sae_lens.SAE, a folder...; on the model's device
    hook = resolve_hook(store, sae, hook)
    device = _resolve_device(cfg.device, sae)
    d_sae, ctx_size = int(sae.cfg.d_sae), int(store.context_size)
    n_ctx = store.n_contexts if cfg.max_tokens is None else min(store.n_contexts, -(-cfg.max_tokens // ctx_size))
    layout = shard_layout(store, n_ctx)
    fingerprint = sae_fingerprint(sae)
    identity = _store_identity(store, hook)
    meta_key = {"sae_fingerprint": fingerprint, "store": identity, "config": cfg.to_dict(), "n_logits":
                int(n_logits) if model is not None else 0}

    if out_dir is not None and not overwrite:
        try:
            old = FeatureResults.load(out_dir)
            same_cfg = semantic_settings(old.meta.get("config", {})) == semantic_settings(cfg.to_dict())
            if (old.meta.get("sae_fingerprint") == fingerprint and old.meta.get("store") == identity and same_cfg
                    and old.meta.get("n_logits", 0) == meta_key["n_logits"]):
                return old
        except ValueError:
            pass

    tmp = None
    threads_before = torch.get_num_threads()
    if out_dir is None:
        tmp = tempfile.mkdtemp(prefix="workbench-codes-")
        codes_dir = Path(tmp)
    else:
        codes_dir = Path(out_dir) / CODES_DIR
    # SIGINT / SIGTERM stop at once: each encoded shard's codes are already saved atomically, so a rerun with the
    # same out_dir encodes only the missing ones
    stop = StopSignals(immediate=True, what=f"feature pass stopped; its encoded shards are kept in {codes_dir}"
                       if out_dir is not None else "feature pass stopped; nothing was kept (no out_dir)")
    stop.__enter__()
    try:
        codes = SparseCodes.open_or_reset(codes_dir, {
            "format": CODES_FORMAT, "format_version": CODES_VERSION, "sae_fingerprint": fingerprint, "store": identity,
            "d_sae": d_sae, "context_size": ctx_size, "fast_encode": use_fast_encoder(cfg, sae, device),
            **{k: getattr(cfg, k) for k in CODE_KEYS}})
        was_training = sae.training
        sae.eval()
        try:
            with torch_threads(cfg.threads):
                enc_info = encode_sparse_codes(store, sae, codes, layout, hook, cfg, device)
        finally:
            sae.train(was_training)

        if device.type == "cpu":
            torch.set_num_threads(cfg.reduce_threads)
        count, total, mx, top_val, top_tok = _sweep_a(codes, layout, d_sae, cfg, device, ctx_size)
        hist, bucket_count, b_tok, b_val = _sweep_b(codes, layout, mx, cfg, device)

        # windows for the winners only
        K, nb, m, W = cfg.top_k, cfg.n_buckets, cfg.per_bucket, cfg.window
        feats_top = torch.arange(d_sae, device=device)[:, None].expand(d_sae, K).reshape(-1)
        feats_b = torch.arange(d_sae, device=device)[:, None].expand(d_sae, nb * m).reshape(-1)
        ex_tok = torch.cat([top_tok.reshape(-1), b_tok.reshape(-1)])
        ex_feat = torch.cat([feats_top, feats_b])
        valid = (ex_tok >= 0).nonzero().squeeze(1)
        w_ids_v, w_acts_v = _windows(store, codes, layout, ex_feat[valid], ex_tok[valid], cfg)
        w_ids = torch.full((ex_tok.numel(), W), -1, dtype=torch.int32)
        w_acts = torch.zeros((ex_tok.numel(), W), dtype=torch.float32)
        w_ids[valid.cpu()] = w_ids_v
        w_acts[valid.cpu()] = w_acts_v
        n_top = d_sae * K
    finally:
        stop.__exit__(None, None, None)
        torch.set_num_threads(threads_before)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    per_ctx = ctx_size - (1 if (cfg.exclude_bos and store.prepend_bos) else 0)
    arrays = {
        "count": count.cpu(), "sum": total.cpu(), "max": mx.cpu(),
        "top_val": torch.where(top_tok >= 0, top_val, torch.zeros_like(top_val)).cpu(), "top_tok": top_tok.cpu(),
        "top_win_ids": w_ids[:n_top].view(d_sae, K, W), "top_win_acts": w_acts[:n_top].view(d_sae, K, W),
        "bucket_val": b_val.cpu(), "bucket_tok": b_tok.cpu(),
        "bucket_win_ids": w_ids[n_top:].view(d_sae, nb, m, W), "bucket_win_acts": w_acts[n_top:].view(d_sae, nb, m, W),
        "bucket_count": bucket_count.cpu(), "hist": hist.cpu(),
    }
    sae_meta = getattr(sae, "metadata", None)
    meta = {**meta_key, "hook": hook, "model_name": store.model_name, "context_size": ctx_size,
            "n_contexts": n_ctx, "n_tokens": n_ctx * per_ctx, "d_sae": d_sae, "d_in": int(sae.cfg.d_in),
            "architecture": getattr(sae.cfg, "architecture", None),
            "sae_metadata": {"model_name": getattr(sae_meta, "model_name", None),
                             "hook_name": getattr(sae_meta, "hook_name", None)},
            "encode": enc_info}
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None) or _load_tokenizer_quietly(store.model_name)
    elif tokenizer is False:
        tokenizer = None
    results = FeatureResults(arrays, meta)
    if model is not None:

        eff = logit_effects(model, sae.W_dec.detach(), k=n_logits, progress=cfg.progress)
        results.set_logit_effects(eff.top_ids, eff.top_values, eff.bottom_ids, eff.bottom_values)
    used = torch.cat([t.reshape(-1) for k, t in arrays.items() if k.endswith("win_ids")] +
                     [results.arrays[k].reshape(-1) for k in ("logit_top_ids", "logit_bottom_ids")
                      if k in results.arrays])
    results.vocab = _decode_vocab(tokenizer, _present_ids(used))
    results.token_bytes = fragment_bytes(tokenizer, list(results.vocab), results.vocab)  # spells byte-split chars
    if out_dir is not None:
        results.save(out_dir)
    return results

# ----------------------------------------------------------------------------------------------------------------
# Dense encoding of a few contexts (for search, explanation scoring, held-out data)
# ----------------------------------------------------------------------------------------------------------------


def encode_contexts(store: StoreLike, sae: SAESource, contexts: Sequence[int] | range, *,
                    features: Sequence[int] | Tensor | None = None,
                    hook: str | None = None, batch_contexts: int = 32, device: str | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Token ids [n, ctx] and feature activations [n, ctx, n_features] of the given store contexts.

    ``features`` selects columns (default: all, which costs n * ctx * d_sae * 4 bytes). BOS positions get 0.
    """
    sae = as_sae(sae, device=device)
    hook = resolve_hook(store, sae, hook)
    dev = _resolve_device(device, sae)
    contexts = [int(c) for c in contexts]
    feats = None if features is None else torch.as_tensor(features, dtype=torch.int64, device=dev)
    if feats is not None and feats.numel() and (int(feats.min()) < 0 or int(feats.max()) >= sae.cfg.d_sae):
        raise ValueError(f"feature index out of range [0, {sae.cfg.d_sae}): got {feats.min()}..{feats.max()}")
    ids, acts = [], []
    for i in range(0, len(contexts), batch_contexts):
        part = contexts[i:i + batch_contexts]
        x = torch.stack([store.activations(c, hook) for c in part]).to(dev)
        n, c, d = x.shape
        with torch.no_grad():
            f = sae.encode(x.reshape(n * c, d))
            if feats is not None:
                f = f[:, feats]
            f = f.reshape(n, c, -1).to(torch.float32)
        if store.prepend_bos:
            f[:, 0] = 0
        acts.append(f.cpu())
        ids.append(torch.stack([torch.from_numpy(store.context(cidx)["tokens"].astype(np.int64)) for cidx in part]))
    if not acts:
        width = sae.cfg.d_sae if feats is None else feats.numel()
        return torch.zeros(0, store.context_size, dtype=torch.int64), torch.zeros(0, store.context_size, width)
    return torch.cat(ids), torch.cat(acts)
