"""The streaming feature-analysis pass: one SAE over one activation store, everything a feature dashboard shows.

    from workbench.analysis.features import FeatureConfig, compute_features, FeatureResults
    results = compute_features(store, sae, out_dir="runs/l9-topk16k/features")   # resumable, cached
    results = FeatureResults.load("runs/l9-topk16k/features")                  # instant: one safetensors read
    f = results.feature(123)   # density, max, top examples, bucket samples, histogram, logit effects

Per feature it gives (research notes §4): firing count and density, max and mean activation; the top-K activating
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
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.persist import atomic_write_text, load_tensors, read_tagged_json, save_tensors
from workbench.analysis.feature_kernels import (BucketReservoir, SparseEncoder, bucket_index, hash_keys, merge_topk, shard_topk,
                              sparse_encode)
from workbench.core.hardware import fast_bf16_matmul, torch_threads

__all__ = [
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

FORMAT = "workbench-feature-results"
FORMAT_VERSION = 1
CODES_FORMAT = "workbench-sparse-codes"
CODES_VERSION = 1
RESULTS_JSON = "features.json"
RESULTS_TENSORS = "features.safetensors"
TOKENS_JSON = "tokens.json"
CODES_DIR = "codes"


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FeatureConfig:
    """Settings of the analysis pass. The defaults give a full dashboard for an SAE of any size.

    ``threshold``: a feature fires where its activation is > threshold. ``max_tokens``: analyse only the first
    contexts of the store (rounded up to whole contexts), e.g. to hold the rest out for explanation scoring.
    ``chunk_tokens``: rows encoded at once (memory ~ chunk_tokens * d_sae * 4 bytes for the pre-activations).
    ``distinct_contexts``: top-K examples come from K different contexts. ``same_doc``: window tokens from another
    document of the packed context are blanked (id -1). ``encode_dtype``: "float32" (the exact encoder),
    "bfloat16" (TopK SAEs: bf16 candidates, exact values, see :class:`SparseEncoder`; 2-4x faster on CPUs with bf16
    units and on GPUs) or "auto" (bfloat16 where that hardware is present, else float32). ``threads``: torch CPU
    threads while encoding (None: leave torch's setting). ``reduce_threads``: threads for the reductions, which are
    memory-bound chains of small ops: one thread is as fast when the machine is idle and several times faster when
    it is oversubscribed (OpenMP barriers).
    """

    top_k: int = 20
    context_before: int = 12
    context_after: int = 4
    n_buckets: int = 10
    per_bucket: int = 5
    n_hist_bins: int = 50
    threshold: float = 0.0
    distinct_contexts: bool = True
    same_doc: bool = True
    exclude_bos: bool = True
    chunk_tokens: int = 2048
    max_tokens: int | None = None
    seed: int = 0
    device: str | None = None
    encode_dtype: str = "auto"
    max_l0: float = 2048.0
    threads: int | None = None
    reduce_threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("top_k", "n_buckets", "per_bucket", "n_hist_bins", "chunk_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FeatureConfig.{name} must be a positive integer, got {value!r}")
        for name in ("context_before", "context_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"FeatureConfig.{name} must be a non-negative integer, got {value!r}")
        if self.threshold < 0:
            raise ValueError(f"FeatureConfig.threshold must be >= 0 (SAE activations are non-negative), "
                             f"got {self.threshold}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"FeatureConfig.max_tokens must be positive or None, got {self.max_tokens}")
        if self.encode_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"FeatureConfig.encode_dtype must be 'auto', 'float32' or 'bfloat16', got "
                             f"{self.encode_dtype!r}")

    @property
    def window(self) -> int:
        return self.context_before + 1 + self.context_after

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Settings that change the codes cache (the rest only change the reductions).
_CODE_KEYS = ("threshold", "exclude_bos")
# Settings that do not change the results (tested for chunk_tokens).
_NOT_SEMANTIC = ("progress", "device", "threads", "reduce_threads", "chunk_tokens")


def _semantic(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _NOT_SEMANTIC}


# ----------------------------------------------------------------------------------------------------------------
# Identity of an SAE and a store
# ----------------------------------------------------------------------------------------------------------------


def sae_fingerprint(sae) -> str:
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


def _store_identity(store, hook: str) -> dict:
    return {
        "path": str(Path(store.path).resolve()),
        "created": store.manifest.get("created"),
        "model_name": store.model_name,
        "hook": hook,
        "n_contexts": int(store.n_contexts),
        "context_size": int(store.context_size),
    }


def resolve_hook(store, sae, hook: str | None = None) -> str:
    """The store hook to analyse with ``sae``; checks that widths match (ValueError naming both and the fix)."""
    meta_hook = getattr(getattr(sae, "metadata", None), "hook_name", None)
    if hook is None:
        if meta_hook in store.hooks:
            hook = meta_hook
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


def _resolve_device(device: str | None, sae) -> torch.device:
    sae_device = sae.device if hasattr(sae, "device") else torch.device("cpu")
    if device is None:
        return sae_device
    device = torch.device(device)
    if device.type != sae_device.type:
        raise ValueError(f"device={str(device)!r} but the SAE's weights are on {sae_device}: move it first "
                         f"(sae.to({str(device)!r})) or leave device=None to use the SAE's device")
    return device


# ----------------------------------------------------------------------------------------------------------------
# The sparse-codes cache
# ----------------------------------------------------------------------------------------------------------------


class SparseCodes:
    """A directory of an SAE's sparse codes over a store, one CSR file per store shard.

    ``NNNNN.safetensors`` holds ``rowptr`` [n_tokens + 1] (int64, over every position of the shard's contexts),
    ``feat`` (int32) and ``val`` (float32), entries sorted by (token, feature); ``manifest.json`` names the SAE
    (fingerprint), the store, the hook and the settings the codes depend on.
    """

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.d_sae = int(manifest["d_sae"])
        self.context_size = int(manifest["context_size"])

    @classmethod
    def open_or_reset(cls, path: str | Path, manifest: dict) -> "SparseCodes":
        """Open the cache at ``path`` if it was written for ``manifest``; otherwise empty it and start anew."""
        path = Path(path)
        mpath = path / "manifest.json"
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                old = None
            if old != manifest:
                shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        if not mpath.exists():
            atomic_write_text(mpath, json.dumps(manifest, indent=1))
        return cls(path, manifest)

    def shard_path(self, shard: int) -> Path:
        return self.path / f"{shard:05d}.safetensors"

    def has_shard(self, shard: int, n_contexts: int) -> bool:
        p = self.shard_path(shard)
        if not p.is_file():
            return False
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                return int((f.metadata() or {}).get("n_contexts", -1)) == int(n_contexts)
        except Exception:
            return False

    def write_shard(self, shard: int, first_context: int, n_contexts: int, rows: Tensor, feat: Tensor, val: Tensor
                    ) -> None:
        n_tok = n_contexts * self.context_size
        counts = torch.bincount(rows.to("cpu"), minlength=n_tok) if rows.numel() else torch.zeros(n_tok, dtype=torch.long)
        rowptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
        save_tensors(
            {"rowptr": rowptr, "feat": feat.to("cpu", torch.int32), "val": val.to("cpu", torch.float32)},
            self.shard_path(shard),
            {"first_context": str(first_context), "n_contexts": str(n_contexts)},
        )

    def read_shard(self, shard: int) -> tuple[int, Tensor, Tensor, Tensor]:
        """(first_context, rowptr, feat int64, val) of one shard."""
        tensors, meta = load_tensors(self.shard_path(shard), "delete the codes folder and rerun the pass")
        try:
            return int(meta["first_context"]), tensors["rowptr"], tensors["feat"].to(torch.int64), tensors["val"]
        except KeyError as err:
            raise ValueError(f"{self.shard_path(shard)} lacks {err}: delete the codes folder and rerun") from None

    def entries(self, shard: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """(global token index, feature, value) of every entry of one shard."""
        first, rowptr, feat, val = self.read_shard(shard)
        counts = rowptr[1:] - rowptr[:-1]
        tok = torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int64), counts)
        tok += first * self.context_size
        return tok.to(device), feat.to(device), val.to(device)


def _shard_layout(store, n_contexts: int) -> list[tuple[int, int, int]]:
    """(shard, first context, contexts to analyse) for the first ``n_contexts`` contexts of the store."""
    out, start = [], 0
    for s in range(store.n_shards):
        if start >= n_contexts:
            break
        n = int(store.shard_arrays(s)["tokens"].shape[0])
        out.append((s, start, min(n, n_contexts - start)))
        start += n
    return out


def _use_fast(config: FeatureConfig, sae, device: torch.device) -> bool:
    if getattr(sae.cfg, "architecture", None) != "topk":
        return False
    return config.encode_dtype == "bfloat16" or (config.encode_dtype == "auto" and fast_bf16_matmul(device))


def encode_sparse_codes(store, sae, codes: SparseCodes, layout: Sequence[tuple[int, int, int]], hook: str,
                        config: FeatureConfig, device: torch.device) -> dict:
    """Encode every shard of ``layout`` the cache lacks; returns {"encoded_shards", "reused_shards"}."""
    ctx = int(store.context_size)
    chunk = max(ctx, (config.chunk_tokens // ctx) * ctx)
    skip_bos = bool(config.exclude_bos and store.prepend_bos)
    encoder = SparseEncoder(sae, config.threshold, _use_fast(config, sae, device))
    todo = [(s, first, n) for s, first, n in layout if not codes.has_shard(s, n)]
    total = sum(n for _, _, n in todo) * ctx
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="encode", disable=not config.progress or not todo,
               dynamic_ncols=True)
    try:
        for s, first, n in todo:
            rows_l, feat_l, val_l = [], [], []
            offset = 0
            for x in store.iter_batches(chunk, hook=hook, shuffle=False, exclude_bos=False, drop_last=False,
                                        start_tokens=first * ctx, max_tokens=n * ctx, device=device,
                                        dtype=torch.float32):
                rows, feat, val = encoder(x)
                if skip_bos:
                    keep = (rows + offset) % ctx != 0
                    rows, feat, val = rows[keep], feat[keep], val[keep]
                if rows.numel() > config.max_l0 * x.shape[0]:
                    raise ValueError(
                        f"the SAE fires on {rows.numel() / x.shape[0]:.0f} features per token on average (more than "
                        f"max_l0={config.max_l0:g}): this pass expects sparse codes. Is the SAE trained, and is it "
                        f"the one for this hook? Raise FeatureConfig.max_l0 to analyse it anyway.")
                rows_l.append((rows + offset).to("cpu"))
                feat_l.append(feat.to("cpu", torch.int32))
                val_l.append(val.to("cpu"))
                offset += x.shape[0]
                bar.update(x.shape[0])
            if offset != n * ctx:
                raise ValueError(f"the store streamed {offset} rows for shard {s}, expected {n * ctx}: it is "
                                 f"inconsistent; harvest it again")
            codes.write_shard(s, first, n, torch.cat(rows_l), torch.cat(feat_l), torch.cat(val_l))
    finally:
        bar.close()
    return {"encoded_shards": len(todo), "reused_shards": len(layout) - len(todo)}


# ----------------------------------------------------------------------------------------------------------------
# Result views
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ActivationExample:
    """One token where a feature fired, with a window of tokens around it and the feature's activation on each."""

    context_idx: int
    position: int
    activation: float
    tokens: list[str]
    token_ids: list[int]
    acts: list[float]
    index: int  # the example token's place in ``tokens``
    start: int  # the context position of ``tokens[0]``


@dataclass
class ActivationBucket:
    """Examples sampled uniformly among the tokens whose activation lies in (lo, hi]; ``count`` such tokens."""

    index: int
    lo: float
    hi: float
    count: int
    examples: list[ActivationExample]


@dataclass
class Histogram:
    """Counts of non-zero activations in linear bins between 0 and the max (``edges`` has one more entry)."""

    edges: list[float]
    counts: list[int]


@dataclass
class LogitEffect:
    """Tokens whose logits the feature's decoder direction raises most (top) and lowers most (bottom)."""

    top_tokens: list[str]
    top_values: list[float]
    bottom_tokens: list[str]
    bottom_values: list[float]
    top_ids: list[int] = field(default_factory=list)
    bottom_ids: list[int] = field(default_factory=list)


@dataclass
class FeatureReport:
    """Everything the analysis pass knows about one feature."""

    index: int
    count: int
    density: float
    max_activation: float
    mean_activation: float  # over the tokens where it fires
    top: list[ActivationExample]
    buckets: list[ActivationBucket]
    histogram: Histogram
    logits: LogitEffect | None = None

    @property
    def alive(self) -> bool:
        return self.count > 0


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------

_REQUIRED = ("count", "sum", "max", "top_val", "top_tok", "top_win_ids", "top_win_acts", "bucket_val", "bucket_tok",
             "bucket_win_ids", "bucket_win_acts", "bucket_count", "hist")


class FeatureResults:
    """The output of :func:`compute_features`: per-feature arrays plus metadata; ``feature(i)`` gives a view.

    Arrays (``d_sae`` rows each): ``count`` (int64 firing tokens), ``sum`` (float64 of activations), ``max``;
    ``top_val``/``top_tok`` [d_sae, K] (activation, global token index = context * context_size + position, -1
    padded); ``top_win_ids``/``top_win_acts`` [d_sae, K, W] (window token ids, -1 outside the context/document, and
    the feature's activations); ``bucket_val``/``bucket_tok`` [d_sae, B, m], ``bucket_win_ids``/``bucket_win_acts``
    [d_sae, B, m, W]; ``bucket_count`` [d_sae, B] (tokens in each bucket); ``hist`` [d_sae, n_bins]; optional
    ``logit_top_ids``/``logit_top_vals``/``logit_bottom_ids``/``logit_bottom_vals`` [d_sae, n].
    """

    def __init__(self, arrays: dict[str, Tensor], meta: dict, vocab: dict[int, str] | None = None):
        missing = [k for k in _REQUIRED if k not in arrays]
        if missing:
            raise ValueError(f"feature results lack arrays {missing}")
        self.arrays = arrays
        self.meta = meta
        self.vocab = dict(vocab or {})
        self.d_sae = int(arrays["count"].shape[0])
        self.config = FeatureConfig.from_dict(meta.get("config", {}))

    # ----- summary arrays -----

    @property
    def n_tokens(self) -> int:
        """Tokens analysed (BOS excluded when ``exclude_bos``): the denominator of the densities."""
        return int(self.meta["n_tokens"])

    @property
    def n_contexts(self) -> int:
        """Contexts analysed: the store's first ``n_contexts``; the rest can serve as held-out data."""
        return int(self.meta["n_contexts"])

    @property
    def context_size(self) -> int:
        return int(self.meta["context_size"])

    @property
    def count(self) -> Tensor:
        return self.arrays["count"]

    @property
    def density(self) -> Tensor:
        return self.arrays["count"].to(torch.float64) / max(1, self.n_tokens)

    @property
    def max_activation(self) -> Tensor:
        return self.arrays["max"]

    @property
    def mean_activation(self) -> Tensor:
        """Mean activation over the tokens where each feature fires (0 for dead features)."""
        return self.arrays["sum"] / self.arrays["count"].clamp_min(1).to(torch.float64)

    def alive(self) -> Tensor:
        """Indices of the features that fired at least once."""
        return (self.arrays["count"] > 0).nonzero().squeeze(1)

    def __len__(self) -> int:
        return self.d_sae

    def __repr__(self) -> str:
        return (f"FeatureResults(d_sae={self.d_sae}, n_tokens={self.n_tokens}, alive={int((self.count > 0).sum())}, "
                f"hook={self.meta.get('hook')!r})")

    def check_index(self, i: Any) -> int:
        """``i`` as an int; ValueError naming the valid range if it is not a feature of this SAE."""
        if isinstance(i, Tensor) and i.numel() == 1 and not i.is_floating_point() and i.dtype != torch.bool:
            i = int(i)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"feature index must be an integer, got {i!r}")
        i = int(i)
        if not 0 <= i < self.d_sae:
            raise ValueError(f"feature index {i} out of range [0, {self.d_sae}) (this SAE has {self.d_sae} features)")
        return i

    # ----- per-feature views -----

    def token_str(self, token_id: int) -> str:
        return self.vocab.get(int(token_id), f"<{int(token_id)}>")

    def _example(self, tok: int, val: float, win_ids: Tensor, win_acts: Tensor) -> ActivationExample:
        ctx_size, before = self.context_size, self.config.context_before
        c, p = divmod(int(tok), ctx_size)
        ids = win_ids.tolist()
        acts = win_acts.tolist()
        valid = [j for j, t in enumerate(ids) if t >= 0]
        lo, hi = (valid[0], valid[-1] + 1) if valid else (before, before + 1)
        ids, acts = ids[lo:hi], acts[lo:hi]
        return ActivationExample(context_idx=c, position=p, activation=float(val),
                                 tokens=[self.token_str(t) if t >= 0 else "" for t in ids], token_ids=ids,
                                 acts=[float(a) for a in acts], index=before - lo, start=p - before + lo)

    def top_examples(self, i: int) -> list[ActivationExample]:
        i = self.check_index(i)
        a = self.arrays
        out = []
        for j in range(a["top_tok"].shape[1]):
            tok = int(a["top_tok"][i, j])
            if tok < 0:
                break
            out.append(self._example(tok, float(a["top_val"][i, j]), a["top_win_ids"][i, j], a["top_win_acts"][i, j]))
        return out

    def buckets(self, i: int) -> list[ActivationBucket]:
        i = self.check_index(i)
        a = self.arrays
        n_b = a["bucket_tok"].shape[1]
        mx = float(a["max"][i])
        out = []
        for b in range(n_b):
            examples = []
            order = torch.argsort(a["bucket_val"][i, b], descending=True)
            for j in order.tolist():
                tok = int(a["bucket_tok"][i, b, j])
                if tok < 0:
                    continue
                examples.append(self._example(tok, float(a["bucket_val"][i, b, j]), a["bucket_win_ids"][i, b, j],
                                              a["bucket_win_acts"][i, b, j]))
            out.append(ActivationBucket(index=b, lo=mx * b / n_b, hi=mx * (b + 1) / n_b,
                                        count=int(a["bucket_count"][i, b]), examples=examples))
        return out

    def histogram(self, i: int) -> Histogram:
        i = self.check_index(i)
        counts = self.arrays["hist"][i]
        mx = float(self.arrays["max"][i])
        n = counts.numel()
        return Histogram(edges=[mx * j / n for j in range(n + 1)], counts=[int(c) for c in counts])

    def logit_effect(self, i: int) -> LogitEffect | None:
        i = self.check_index(i)
        a = self.arrays
        if "logit_top_ids" not in a:
            return None
        top_ids, bot_ids = a["logit_top_ids"][i].tolist(), a["logit_bottom_ids"][i].tolist()
        return LogitEffect(top_tokens=[self.token_str(t) for t in top_ids],
                           top_values=[float(v) for v in a["logit_top_vals"][i]],
                           bottom_tokens=[self.token_str(t) for t in bot_ids],
                           bottom_values=[float(v) for v in a["logit_bottom_vals"][i]],
                           top_ids=top_ids, bottom_ids=bot_ids)

    def feature(self, i: int) -> FeatureReport:
        """The full report of feature ``i`` (ValueError if out of range)."""
        i = self.check_index(i)
        count = int(self.arrays["count"][i])
        return FeatureReport(index=i, count=count, density=count / max(1, self.n_tokens),
                             max_activation=float(self.arrays["max"][i]),
                             mean_activation=float(self.mean_activation[i]), top=self.top_examples(i),
                             buckets=self.buckets(i), histogram=self.histogram(i), logits=self.logit_effect(i))

    # ----- logit effects -----

    def set_logit_effects(self, top_ids: Tensor, top_vals: Tensor, bottom_ids: Tensor, bottom_vals: Tensor,
                          vocab: dict[int, str] | None = None) -> None:
        for name, t in (("top_ids", top_ids), ("bottom_ids", bottom_ids), ("top_vals", top_vals),
                        ("bottom_vals", bottom_vals)):
            if t.shape[0] != self.d_sae:
                raise ValueError(f"logit effect {name} has {t.shape[0]} rows, expected d_sae={self.d_sae}")
        self.arrays.update(logit_top_ids=top_ids.to(torch.int64), logit_top_vals=top_vals.to(torch.float32),
                           logit_bottom_ids=bottom_ids.to(torch.int64), logit_bottom_vals=bottom_vals.to(torch.float32))
        if vocab:
            self.vocab.update(vocab)

    # ----- persistence -----

    def save(self, directory: str | Path) -> Path:
        """Write ``features.safetensors``, ``features.json`` and ``tokens.json`` into ``directory`` (atomically)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_tensors(self.arrays, d / RESULTS_TENSORS, {"format": FORMAT})
        ids = sorted(self.vocab)
        atomic_write_text(d / TOKENS_JSON, json.dumps({"ids": ids, "strings": [self.vocab[i] for i in ids]}))
        meta = {**self.meta, "format": FORMAT, "format_version": FORMAT_VERSION, "d_sae": self.d_sae,
                "arrays": {k: list(v.shape) for k, v in self.arrays.items()}}
        atomic_write_text(d / RESULTS_JSON, json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "FeatureResults":
        """Open saved results; a missing or corrupt file raises ValueError naming it."""
        d = Path(directory)
        fix = f"delete {d} and rerun compute_features (the sparse-codes cache makes that cheap)"
        mpath = d / RESULTS_JSON
        if not mpath.is_file():
            raise ValueError(f"{mpath} is missing: {d} holds no feature results ({fix})")
        meta = read_tagged_json(mpath, format=FORMAT, what="a feature-results file", max_version=FORMAT_VERSION,
                                fix=fix)
        arrays, _ = load_tensors(d / RESULTS_TENSORS, fix)
        for name, shape in meta.get("arrays", {}).items():
            if name not in arrays or list(arrays[name].shape) != list(shape):
                got = list(arrays[name].shape) if name in arrays else "nothing"
                raise ValueError(f"{d / RESULTS_TENSORS} holds {got} for {name!r} but {mpath} expects {shape}: the "
                                 f"files do not belong together ({fix})")
        vocab: dict[int, str] = {}
        tpath = d / TOKENS_JSON
        if tpath.is_file():
            try:
                tj = json.loads(tpath.read_text())
                vocab = {int(i): str(s) for i, s in zip(tj["ids"], tj["strings"], strict=True)}
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{tpath} is corrupt ({type(err).__name__}: {err}): {fix}") from None
        try:
            return cls(arrays, meta, vocab)
        except ValueError as err:
            raise ValueError(f"{d / RESULTS_TENSORS}: {err} ({fix})") from None


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


def _windows(store, codes: SparseCodes, layout, ex_feat: Tensor, ex_tok: Tensor, cfg: FeatureConfig
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
        from workbench.data.models import load_tokenizer

        return load_tokenizer(model_name)
    except Exception as err:  # offline hub model, missing cache...
        warnings.warn(f"no tokenizer for {model_name!r} ({err}); token strings will show as <id>", stacklevel=3)
        return None


def compute_features(store, sae, out_dir: str | Path | None = None, config: FeatureConfig | None = None, *,
                     hook: str | None = None, model=None, tokenizer=None, n_logits: int = 10,
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
    hook = resolve_hook(store, sae, hook)
    device = _resolve_device(cfg.device, sae)
    d_sae, ctx_size = int(sae.cfg.d_sae), int(store.context_size)
    n_ctx = store.n_contexts if cfg.max_tokens is None else min(store.n_contexts, -(-cfg.max_tokens // ctx_size))
    layout = _shard_layout(store, n_ctx)
    fingerprint = sae_fingerprint(sae)
    identity = _store_identity(store, hook)
    meta_key = {"sae_fingerprint": fingerprint, "store": identity, "config": cfg.to_dict(), "n_logits":
                int(n_logits) if model is not None else 0}

    if out_dir is not None and not overwrite:
        try:
            old = FeatureResults.load(out_dir)
            same_cfg = _semantic(old.meta.get("config", {})) == _semantic(cfg.to_dict())
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
    try:
        codes = SparseCodes.open_or_reset(codes_dir, {
            "format": CODES_FORMAT, "version": CODES_VERSION, "sae_fingerprint": fingerprint, "store": identity,
            "d_sae": d_sae, "context_size": ctx_size, "fast_encode": _use_fast(cfg, sae, device),
            **{k: getattr(cfg, k) for k in _CODE_KEYS}})
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
        from workbench.analysis.logits import logit_effects

        eff = logit_effects(model, sae.W_dec.detach(), k=n_logits, progress=cfg.progress)
        results.set_logit_effects(eff.top_ids, eff.top_values, eff.bottom_ids, eff.bottom_values)
    used = torch.cat([t.reshape(-1) for k, t in arrays.items() if k.endswith("win_ids")] +
                     [results.arrays[k].reshape(-1) for k in ("logit_top_ids", "logit_bottom_ids")
                      if k in results.arrays])
    results.vocab = _decode_vocab(tokenizer, _present_ids(used))
    if out_dir is not None:
        results.save(out_dir)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Dense encoding of a few contexts (for search, explanation scoring, held-out data)
# ----------------------------------------------------------------------------------------------------------------


def encode_contexts(store, sae, contexts: Sequence[int] | range, *, features: Sequence[int] | Tensor | None = None,
                    hook: str | None = None, batch_contexts: int = 32, device: str | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Token ids [n, ctx] and feature activations [n, ctx, n_features] of the given store contexts.

    ``features`` selects columns (default: all, which costs n * ctx * d_sae * 4 bytes). BOS positions get 0.
    """
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
