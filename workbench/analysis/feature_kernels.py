"""The tensor kernels of the feature pass (:mod:`workbench.analysis.features`), pure functions on tensors.

- :class:`SparseEncoder` / :func:`sparse_encode`: an SAE's codes as (token, feature, value) entries, without a
  dense code matrix for TopK SAEs (bf16 candidates, exact values, where bf16 matmuls are fast).
- :func:`hash_keys`: a deterministic 32-bit key per (seed, feature, token), for order-independent sampling.
- :func:`bucket_index`: the linear activation bucket of each entry.
- :func:`shard_topk` / :func:`merge_topk`: a per-feature top-K (one example per context) within a shard, and the
  merge of two top-K tables.
- :class:`BucketReservoir`: per (feature, bucket) the entries with the smallest hash keys, i.e. a uniform sample
  without replacement that does not depend on the order or chunking of the data.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from typing import TYPE_CHECKING

from workbench.sae.architectures import find_architecture

if TYPE_CHECKING:
    from workbench.sae.model import SAE  # the kernels read its encoder and pre-activations

__all__ = ["BucketReservoir", "SparseEncoder", "bucket_index", "hash_keys", "merge_topk", "shard_topk",
           "sparse_encode"]

_M32 = 0xFFFFFFFF
_EMPTY_KEY = 1 << 62  # larger than any hash key (< 2**32)


class SparseEncoder:
    """Sparse codes of one SAE, batch after batch (weights converted once).

    ``fast`` (TopK SAEs only): the pre-activations are computed with a bf16 matmul, the top ``k + margin`` become
    candidates, their exact pre-activations are recomputed in the SAE's dtype (a sampled dense-dense product) and the
    exact top-k of the candidates is kept. Values are then exact; the selection differs from the exact one only if
    a true top-k entry ranks below ``k + margin`` in bf16 (bf16 error ~0.4% of |x||w|; never seen in the tests).
    """

    def __init__(self, sae: SAE, threshold: float = 0.0, fast: bool = False, margin: int | None = None):
        self.sae = sae
        self.threshold = float(threshold)
        # the registered architecture says how its codes come from the pre-activations (None: encode densely)
        self.arch = find_architecture(getattr(sae.cfg, "architecture", None))
        self.d_sae = int(sae.cfg.d_sae)
        self.k = (self.arch.per_token_k(sae.cfg) or 0) if self.arch is not None else 0
        self.fast = bool(fast) and self.k > 0
        self.m = min(self.d_sae, self.k + (max(16, self.k // 2) if margin is None else int(margin)))
        if self.fast:
            with torch.no_grad():
                self.w_lo = sae.W_enc.detach().to(torch.bfloat16)
                self.b_lo = sae.b_enc.detach().to(torch.bfloat16)

    def _input(self, x: Tensor) -> Tensor:
        sae = self.sae
        x = x.to(sae.dtype)
        return x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x

    def _fast_topk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        sae, n = self.sae, x.shape[0]
        xin = self._input(x)
        lo = torch.addmm(self.b_lo, xin.to(torch.bfloat16), self.w_lo)
        cand = lo.topk(self.m, dim=-1, sorted=False).indices  # [n, m]
        del lo
        crow = torch.arange(0, n * self.m + 1, self.m, device=x.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            pattern = torch.sparse_csr_tensor(crow, cand.reshape(-1), torch.zeros(n * self.m, dtype=xin.dtype,
                                              device=x.device), (n, self.d_sae), check_invariants=False)
            exact = torch.sparse.sampled_addmm(pattern, xin, sae.W_enc.detach(), beta=0.0).values().view(n, self.m)
        exact = exact + sae.b_enc.detach()[cand]
        vals, j = exact.topk(self.k, dim=-1, sorted=False)
        return vals, cand.gather(1, j)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(rows, features, values) of the entries > threshold, sorted by (row, feature)."""
        if x.dim() != 2:
            raise ValueError(f"sparse_encode expects a [n, d_in] matrix, got shape {tuple(x.shape)}")
        sae, arch, thr, n = self.sae, self.arch, self.threshold, x.shape[0]
        with torch.no_grad():
            cut = None if arch is None or self.k else arch.code_cut(sae, thr)
            if self.k or cut is not None:
                sae._check_input(x)
                if self.k:  # each token's top-k pre-activations
                    if self.fast:
                        vals, idx = self._fast_topk(x)
                    else:
                        vals, idx = sae.pre_activations(x.to(sae.dtype)).topk(self.k, dim=-1, sorted=False)
                    keep = vals > thr
                    rows = torch.arange(n, device=x.device)[:, None].expand(n, self.k)[keep]
                    feats, vals = idx[keep], vals[keep]
                else:
                    assert cut is not None  # (no k: the architecture's cut)
                    pre = sae.pre_activations(x.to(sae.dtype))
                    nz = (pre > cut).nonzero()
                    rows, feats = nz[:, 0], nz[:, 1]
                    vals = pre[rows, feats]
            else:  # codes that are not pre-activations above a cut (gated), or an unknown architecture: dense
                codes = sae.encode(x)
                nz = (codes > thr).nonzero()
                rows, feats = nz[:, 0], nz[:, 1]
                vals = codes[rows, feats]
            order = torch.argsort(rows * self.d_sae + feats)
            return rows[order], feats[order], vals[order].to(torch.float32)


def sparse_encode(sae: SAE, x: Tensor, threshold: float = 0.0, fast: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The non-zero codes of ``sae`` on ``x`` [n, d_in] as (rows, features, values), sorted by (row, feature).

    Equals ``sae.encode(x)`` restricted to entries > ``threshold`` (tested for every architecture), without the
    dense [n, d_sae] code matrix for TopK SAEs (top-k of the pre-activations) and with one compare-and-nonzero
    for the threshold architectures. Unknown architectures fall back to the dense ``encode``. ``fast``: see
    :class:`SparseEncoder`.
    """
    return SparseEncoder(sae, threshold, fast)(x)


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer mixer on int64 tensors holding values in [0, 2**32); no product exceeds 2**63."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


def hash_keys(features: Tensor, tokens: Tensor, seed: int = 0) -> Tensor:
    """Deterministic pseudo-random keys in [0, 2**32) for (feature, global token) pairs: the sampling order.

    A multiplicative combination of the feature, the token's low and high 32 bits and the seed, then two rounds of
    a 32-bit mixer; every intermediate stays below 2**63."""
    f = features.to(torch.int64) & _M32
    t = tokens.to(torch.int64)
    s = (int(seed) * 0x2545F491 + 0x3C6EF372) & _M32
    x = ((t & _M32) * 0x3B9ACA07 + ((t >> 32) & _M32) * 0x1B873593 + f * 0x2C1B3C6D + s) & _M32
    return _mix32(_mix32(x))


def bucket_index(values: Tensor, max_values: Tensor, n: int) -> Tensor:
    """The linear bucket/bin of each value among ``n`` equal parts of (0, max]; the max falls in the last one."""
    scaled = values.to(torch.float32) / max_values.to(torch.float32).clamp_min(1e-30) * n
    return scaled.floor().to(torch.int64).clamp_(0, n - 1)


def _segment_rank(sorted_ids: Tensor, n_ids: int) -> Tensor:
    """Rank of each element within its run of equal ids (``sorted_ids`` ascending)."""
    if sorted_ids.numel() == 0:
        return sorted_ids.new_zeros(0)
    counts = torch.bincount(sorted_ids, minlength=n_ids)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(sorted_ids.numel(), device=sorted_ids.device) - starts[sorted_ids]


def _desc_bits(val: Tensor) -> Tensor:
    """int64 keys that sort positive float32 values in descending order."""
    return 0x7FFFFFFF - val.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)


def shard_topk(feat: Tensor, val: Tensor, tok: Tensor, d_sae: int, k: int, context_size: int | None = None
               ) -> tuple[Tensor, Tensor]:
    """Per-feature top-k of one batch of entries: ([d_sae, k] values, -inf padded; [d_sae, k] tokens, -1 padded).

    With ``context_size`` the entries are first reduced to one per (feature, context): the strongest, earliest.
    Ties go to the earlier token.
    """
    device = feat.device
    feat = feat.to(torch.int64)
    if context_size is not None and feat.numel():
        ctx = torch.div(tok, context_size, rounding_mode="floor")
        order = torch.argsort(-val, stable=True)
        c0 = int(ctx.min())
        group = feat[order] * (int(ctx.max()) - c0 + 1) + (ctx[order] - c0)
        o2 = torch.argsort(group, stable=True)
        g = group[o2]
        first = torch.ones_like(g, dtype=torch.bool)
        first[1:] = g[1:] != g[:-1]
        keep = order[o2][first]
        keep = keep.sort().values  # back to token order, so ties below still favour earlier tokens
        feat, val, tok = feat[keep], val[keep], tok[keep]
    out_val = torch.full((d_sae, k), float("-inf"), dtype=torch.float32, device=device)
    out_tok = torch.full((d_sae, k), -1, dtype=torch.int64, device=device)
    if feat.numel() == 0:
        return out_val, out_tok
    o = torch.argsort((feat << 31) | _desc_bits(val), stable=True)
    fs = feat[o]
    rank = _segment_rank(fs, d_sae)
    m = rank < k
    out_val[fs[m], rank[m]] = val[o][m].to(torch.float32)
    out_tok[fs[m], rank[m]] = tok[o][m]
    return out_val, out_tok


def merge_topk(val_a: Tensor, tok_a: Tensor, val_b: Tensor, tok_b: Tensor) -> tuple[Tensor, Tensor]:
    """Merge two [d_sae, k] top-k tables; on equal values the entry of ``a`` (earlier data) wins."""
    k = val_a.shape[1]
    vals = torch.cat([val_a, val_b], dim=1)
    toks = torch.cat([tok_a, tok_b], dim=1)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals[:, :k].contiguous(), torch.gather(toks, 1, order[:, :k]).contiguous()


class BucketReservoir:
    """Per (feature, bucket) cell, the ``m`` entries with the smallest hash keys seen so far (a mergeable,
    order-independent uniform sample without replacement of each cell)."""

    def __init__(self, n_cells: int, m: int, device: torch.device | str = "cpu"):
        self.n_cells, self.m = n_cells, m
        self.key = torch.full((n_cells, m), _EMPTY_KEY, dtype=torch.int64, device=device)
        self.tok = torch.full((n_cells, m), -1, dtype=torch.int64, device=device)
        self.val = torch.zeros((n_cells, m), dtype=torch.float32, device=device)

    def update(self, cell: Tensor, key: Tensor, tok: Tensor, val: Tensor) -> None:
        m = self.m
        # a full cell only accepts keys below its current m-th smallest
        cand = key < self.key[cell, m - 1]
        cell, key, tok, val = cell[cand], key[cand], tok[cand], val[cand]
        if cell.numel() == 0:
            return
        # 1. within the batch: the m smallest keys of each cell
        o = torch.argsort((cell << 32) | key)
        cs = cell[o]
        r = _segment_rank(cs, self.n_cells)
        keep = o[r < m]
        cell, key, tok, val = cell[keep], key[keep], tok[keep], val[keep]
        # 2. merge with what the touched cells already hold
        touched = torch.unique_consecutive(cell)  # cell is sorted here
        old_key = self.key[touched]
        filled = old_key < _EMPTY_KEY
        old_cell = touched[:, None].expand(-1, m)[filled]
        all_cell = torch.cat([old_cell, cell])
        all_key = torch.cat([old_key[filled], key])
        all_tok = torch.cat([self.tok[touched][filled], tok])
        all_val = torch.cat([self.val[touched][filled], val])
        o = torch.argsort((all_cell << 32) | all_key)
        cs = all_cell[o]
        r = _segment_rank(cs, self.n_cells)
        sel = r < m
        self.key[touched] = _EMPTY_KEY
        self.tok[touched] = -1
        self.val[touched] = 0.0
        c, rr, oo = cs[sel], r[sel], o[sel]
        self.key[c, rr] = all_key[oo]
        self.tok[c, rr] = all_tok[oo]
        self.val[c, rr] = all_val[oo]
