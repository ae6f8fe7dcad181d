"""What the feature pass produces: its settings (:class:`FeatureConfig`), the saved per-feature arrays
(:class:`FeatureResults`: ``features.safetensors`` + ``features.json`` + ``tokens.json``) and the views a dashboard
reads (:class:`FeatureReport` with its examples, buckets, histogram and logit effects). The pass itself is
:func:`workbench.analysis.features.compute_features`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench.core.errors import ConfigError
from workbench.core.config import known_fields_only
from workbench.core.persist import atomic_write_text, load_tensors, read_tagged_json, save_tensors, write_tagged_json
from workbench.data.token_text import REPLACEMENT, bytes_decoder, spell_tokens

__all__ = ["FORMAT", "FORMAT_VERSION", "ActivationBucket", "ActivationExample", "FeatureConfig", "FeatureReport",
           "FeatureResults", "Histogram", "LogitEffect", "analysis_tokens"]

FORMAT = "workbench-feature-results"
FORMAT_VERSION = 1
RESULTS_JSON = "features.json"
RESULTS_TENSORS = "features.safetensors"
TOKENS_JSON = "tokens.json"


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
        return cls(**known_fields_only(cls, data, "feature-pass setting(s)"))


# Settings that change the codes cache (the rest only change the reductions).
CODE_KEYS = ("threshold", "exclude_bos")
# Settings that do not change the results (tested for chunk_tokens).
NOT_SEMANTIC = ("progress", "device", "threads", "reduce_threads", "chunk_tokens")


def analysis_tokens(n_tokens: int) -> int:
    """How many of a store's first tokens the default analysis pass reads: three quarters. The contexts after them
    stay held out for scoring explanations (:func:`workbench.analysis.explain.heldout_contexts`); the standard
    studies and notebook 00 both split this way."""
    return int(n_tokens) * 3 // 4


def semantic_settings(config: dict) -> dict:
    """The entries of a FeatureConfig dict that change the results (everything but threads, device, progress...)."""
    return {k: v for k, v in config.items() if k not in NOT_SEMANTIC}


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
    """The output of :func:`workbench.analysis.features.compute_features`: per-feature arrays plus metadata; ``feature(i)`` gives a view.

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
        self.token_bytes: dict[int, bytes] = {}  # raw bytes of character fragments (spells examples, see _spell)
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

    def _repr_html_(self) -> str:
        from workbench.core.html_repr import repr_table

        alive = self.alive()
        dens = self.density[alive] if alive.numel() else torch.zeros(1, dtype=torch.float64)
        order: Tensor | list[int] = (torch.argsort(self.max_activation[alive], descending=True)[:5]
                                     if alive.numel() else [])
        rows = [[int(alive[j]), round(float(self.density[int(alive[j])]), 6),
                 round(float(self.max_activation[int(alive[j])]), 3)] for j in order]
        note = (f"{int(alive.numel())} of {self.d_sae} features alive over {self.n_tokens:,} tokens of "
                f"{self.meta.get('hook')}; median density {float(dens.median()):.2e}. The strongest by max activation "
                f"are above; .feature(i) gives one feature's top examples and logit effects.")
        return repr_table("FeatureResults", ["feature", "density", "max activation"], rows, note)

    def check_index(self, i: Any) -> int:
        """``i`` as an int; ValueError naming the valid range if it is not a feature of this SAE."""
        if isinstance(i, Tensor) and i.numel() == 1 and not i.is_floating_point() and i.dtype != torch.bool:
            i = int(i)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ConfigError(f"feature index must be an integer, got {i!r}", param="feature")
        i = int(i)
        if not 0 <= i < self.d_sae:
            raise ConfigError(f"feature index {i} out of range [0, {self.d_sae}) (this SAE has {self.d_sae} features)",
                              param="feature")
        return i

    # ----- per-feature views -----

    def token_str(self, token_id: int) -> str:
        return self.vocab.get(int(token_id), f"<{int(token_id)}>")

    def _spell(self, ids: list[int], tokens: list[str]) -> list[str]:
        """``tokens`` with byte-split characters spelled out from the saved bytes of the fragments
        (:mod:`workbench.data.token_text`); no tokenizer needed."""
        if not self.token_bytes or not any(REPLACEMENT in t for t in tokens):
            return tokens
        return spell_tokens(ids, None, tokens, decode=bytes_decoder(self.vocab, self.token_bytes))

    def _example(self, tok: int, val: float, win_ids: Tensor, win_acts: Tensor) -> ActivationExample:
        ctx_size, before = self.context_size, self.config.context_before
        c, p = divmod(int(tok), ctx_size)
        ids = win_ids.tolist()
        acts = win_acts.tolist()
        valid = [j for j, t in enumerate(ids) if t >= 0]
        lo, hi = (valid[0], valid[-1] + 1) if valid else (before, before + 1)
        ids, acts = ids[lo:hi], acts[lo:hi]
        return ActivationExample(context_idx=c, position=p, activation=float(val),
                                 tokens=self._spell(ids, [self.token_str(t) if t >= 0 else "" for t in ids]),
                                 token_ids=ids,
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
        tokens = {"ids": ids, "strings": [self.vocab[i] for i in ids]}
        if self.token_bytes:  # character fragments' raw bytes (hex), to spell byte-split characters after a load
            tokens["bytes"] = {str(i): b.hex() for i, b in sorted(self.token_bytes.items())}
        atomic_write_text(d / TOKENS_JSON, json.dumps(tokens))
        meta = {**{k: v for k, v in self.meta.items() if k not in ("format", "format_version")}, "d_sae": self.d_sae,
                "arrays": {k: list(v.shape) for k, v in self.arrays.items()}}
        write_tagged_json(d / RESULTS_JSON, meta, format=FORMAT, format_version=FORMAT_VERSION, indent=1)
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
        raw: dict[int, bytes] = {}
        tpath = d / TOKENS_JSON
        if tpath.is_file():
            try:
                tj = json.loads(tpath.read_text())
                vocab = {int(i): str(s) for i, s in zip(tj["ids"], tj["strings"], strict=True)}
                raw = {int(i): bytes.fromhex(h) for i, h in (tj.get("bytes") or {}).items()}
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{tpath} is corrupt ({type(err).__name__}: {err}): {fix}") from None
        try:
            results = cls(arrays, meta, vocab)
            results.token_bytes = raw
            return results
        except ValueError as err:
            raise ValueError(f"{d / RESULTS_TENSORS}: {err} ({fix})") from None
