"""Which features are single-token-type detectors, and of what kind (docs/methods.md §22).

A feature whose top examples all sit on the same kind of token says little about concepts, however well a token
explainer predicts it. :func:`classify_detectors` reads the feature pass's top examples (and, with a smaller weight,
its activation-bucket examples) and gives every alive feature one kind, or none:

* ``special``: the firing token is BOS/EOS/padding/another special token;
* ``position``: it fires at the first token(s) of a context (right after BOS) or of a document, whatever the token;
* ``whitespace``, ``punctuation`` (brackets, hyphens, quotes, commas, symbols), ``number`` (digits, possibly with
  punctuation): the firing tokens are mostly of that character class;
* ``token``: one token string, up to case and surrounding spaces (``" The"``, ``"the"``), is a large majority.

The first rule that holds wins, in that order. A share is weighted: ``(1 - bucket_weight) * share among the top
examples + bucket_weight * share among the bucket examples`` (just the top share when a feature has no bucket
examples). ``special``, ``whitespace``, ``punctuation`` and ``number`` pool: when their summed share exceeds
``majority`` the feature is a detector of whichever of them has the largest share. Everything is computed on the
tensors of :class:`~workbench.analysis.features.FeatureResults`; no model or store is needed.

    det = classify_detectors(results, tokenizer=model.tokenizer)
    det.counts            # {"special": 3, "position": 12, "whitespace": 40, ...}
    det.kind(123), det.dominant[123]
"""
from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor

from workbench.analysis.feature_traits import SPECIAL_TOKEN_STRINGS, _SPECIAL_RE
from workbench.analysis.features import FeatureResults
from workbench.data.token_text import REPLACEMENT

__all__ = ["CATEGORIES", "DETECTOR_KINDS", "DetectorConfig", "Detectors", "classify_detectors", "example_tokens",
           "normalise_token", "token_category", "token_groups"]

# Character classes of a token string; "word" is everything else.
CATEGORIES = ("special", "whitespace", "punctuation", "number", "word")
_NON_WORD = CATEGORIES[:4]
DETECTOR_KINDS = ("special", "position", "whitespace", "punctuation", "number", "token")


@dataclass
class DetectorConfig:
    """Thresholds of :func:`classify_detectors` (shares in [0, 1]).

    ``majority``: a feature is a special/whitespace/punctuation/number detector when those tokens' summed share
    exceeds it, and a position detector when the share of its examples at early positions does. ``position_max``:
    "early" means context positions 1..position_max (0 too, for stores without BOS) or the first position_max
    tokens of a document. ``token_majority``: the share of one normalised token string that makes a ``token``
    detector. ``bucket_weight``: the bucket examples' weight in every share. ``min_examples``: features with fewer
    top examples are never called detectors (too little to judge)."""

    majority: float = 0.5
    token_majority: float = 0.6
    position_max: int = 1
    bucket_weight: float = 0.3
    min_examples: int = 3

    def __post_init__(self) -> None:
        for name in ("majority", "token_majority", "bucket_weight"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"DetectorConfig.{name} is a share: give a value in [0, 1], got {v!r}")
        for name in ("position_max", "min_examples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"DetectorConfig.{name} must be a non-negative integer, got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------------
# Token strings
# ----------------------------------------------------------------------------------------------------------------


def normalise_token(s: str) -> str:
    """A token string up to case and surrounding whitespace (SentencePiece's ``▁`` counts as a space)."""
    return s.replace("\u2581", " ").strip().casefold()


def token_category(s: str, special: bool = False) -> str:
    """One of :data:`CATEGORIES` for a decoded token string (``special``: the tokenizer says it is one)."""
    if special or s in SPECIAL_TOKEN_STRINGS or _SPECIAL_RE.match(s):
        return "special"
    t = s.replace("\u2581", " ").strip()
    if not t:
        return "whitespace"
    if REPLACEMENT in t:
        return "word"  # a byte fragment of a character: its class is unknown
    chars = [c for c in t if not c.isspace()]
    cats = [unicodedata.category(c) for c in chars]
    if any(c.isdigit() for c in chars):
        return "number" if all(c[0] in "NPS" for c in cats) else "word"
    if all(c[0] in "PS" for c in cats):
        return "punctuation"
    return "word"


def token_groups(vocab: Mapping[int, str], ids: Tensor, *, drop_blank: bool = False) -> Tensor:
    """``ids`` (any shape, -1 = none) mapped to an integer per normalised string (-1 stays -1): equal groups mean
    the same token up to case and spaces. Ids missing from ``vocab`` form groups of their own; ``drop_blank``:
    whitespace-only tokens map to -1 too."""
    flat = ids.reshape(-1).to(torch.int64)
    uniq, inv = torch.unique(flat, return_inverse=True)
    names: dict[str, int] = {}
    out = []
    for u in uniq.tolist():
        name = normalise_token(vocab.get(int(u), f"<{int(u)}>")) if u >= 0 else ""
        out.append(-1 if u < 0 or (drop_blank and not name) else names.setdefault(name, len(names)))
    return torch.tensor(out, dtype=torch.int64)[inv].reshape(ids.shape)


def _categories(vocab: Mapping[int, str], ids: Tensor, special_ids: set[int]) -> Tensor:
    flat = ids.reshape(-1).to(torch.int64)
    uniq, inv = torch.unique(flat, return_inverse=True)
    c = torch.tensor([-1 if int(u) < 0 else CATEGORIES.index(token_category(vocab.get(int(u), f"<{int(u)}>"),
                                                                            int(u) in special_ids))
                      for u in uniq.tolist()], dtype=torch.int64)
    return c[inv].reshape(ids.shape)


# ----------------------------------------------------------------------------------------------------------------
# The examples
# ----------------------------------------------------------------------------------------------------------------


def example_tokens(results: FeatureResults, which: str = "top") -> tuple[Tensor, Tensor, Tensor]:
    """Per feature and example of the ``top`` examples (or the ``bucket`` examples, flattened): the firing token
    id, its context position and its position in its document as far as the window shows (``context_before`` when
    the document started before the window), each [d_sae, E]; -1 where the example does not exist."""
    a, cfg = results.arrays, results.config
    if which == "top":
        tok, win = a["top_tok"], a["top_win_ids"]
    elif which == "bucket":
        tok = a["bucket_tok"].reshape(results.d_sae, -1)
        win = a["bucket_win_ids"].reshape(results.d_sae, tok.shape[1], -1)
    else:
        raise ValueError(f"which must be 'top' or 'bucket', got {which!r}")
    tok = tok.to(torch.int64)
    valid = tok >= 0
    before = cfg.context_before
    ids = torch.where(valid, win[..., before].to(torch.int64), torch.full_like(tok, -1))
    ctx_pos = torch.where(valid, tok.clamp_min(0) % max(1, results.context_size), torch.full_like(tok, -1))
    seen = (win[..., :before] >= 0).sum(-1).to(torch.int64)  # window tokens before it in the same document
    # fewer than the context shows: the document starts inside the window, so its position is that count
    doc_pos = torch.where(seen < torch.clamp(ctx_pos, max=before), seen, ctx_pos.clamp(max=before))
    doc_pos = torch.where(valid, doc_pos, torch.full_like(tok, -1))
    return ids, ctx_pos, doc_pos


@dataclass
class Detectors:
    """What :func:`classify_detectors` found. ``kinds``: per feature one of :data:`DETECTOR_KINDS`, or "" (not a
    detector, or dead); ``share``: the weighted share of examples behind that kind (0 where none); ``dominant``:
    the most frequent firing token string among the top examples ("" for dead features); ``n_types``: distinct
    normalised firing-token strings among the top examples; ``counts``: alive features per kind."""

    kinds: list[str]
    share: Tensor
    dominant: list[str]
    n_types: Tensor
    counts: dict[str, int]
    n_alive: int
    config: DetectorConfig = field(default_factory=DetectorConfig)

    @property
    def mask(self) -> Tensor:
        """Bool [d_sae]: the feature is a detector of some kind."""
        return torch.tensor([bool(k) for k in self.kinds], dtype=torch.bool)

    def kind(self, i: int) -> str:
        return self.kinds[int(i)]

    def features(self, kind: str | None = None) -> list[int]:
        """Detectors of ``kind`` (any kind when None), by index."""
        if kind is not None and kind not in DETECTOR_KINDS:
            raise ValueError(f"unknown detector kind {kind!r}: choose one of {DETECTOR_KINDS}")
        return [i for i, k in enumerate(self.kinds) if k and (kind is None or k == kind)]

    def summary(self) -> dict:
        n = sum(self.counts.values())
        return {"n_alive": self.n_alive, "n_detectors": n, "fraction_alive": n / max(1, self.n_alive),
                "counts": dict(self.counts), "config": self.config.to_dict()}


_ROWS = 256  # rows per chunk of the [rows, E, E] comparisons


def _row_mode(groups: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the weight of the heaviest group and the column of one of its members ([R] each)."""
    best, col = [], []
    for s in range(0, groups.shape[0], _ROWS):
        g, w = groups[s:s + _ROWS], weight[s:s + _ROWS]
        same = (g[:, :, None] == g[:, None, :]) & (g[:, :, None] >= 0)
        mass = (same.to(w.dtype) * w[:, None, :]).sum(-1)  # [R, E]: the weight of each example's group
        b, c = mass.max(1)
        best.append(b)
        col.append(c)
    return torch.cat(best), torch.cat(col)


def _distinct(groups: Tensor) -> Tensor:
    """Per row, the number of distinct non-negative values ([R] int64)."""
    out = []
    for s in range(0, groups.shape[0], _ROWS):
        g = groups[s:s + _ROWS]
        valid = g >= 0
        same = (g[:, :, None] == g[:, None, :]) & valid[:, :, None] & valid[:, None, :]
        per = same.sum(-1).clamp_min(1).to(torch.float64)
        out.append(torch.where(valid, 1.0 / per, torch.zeros_like(per)).sum(1).round().to(torch.int64))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def classify_detectors(results: FeatureResults, config: DetectorConfig | None = None, *, tokenizer: Any = None,
                       special_ids: set[int] | None = None) -> Detectors:
    """The detector kind of every feature of ``results`` (see the module docstring for the rules).

    ``tokenizer``: adds its ``all_special_ids`` to the special tokens recognised by their strings;
    ``special_ids`` replaces that set."""
    cfg = config or DetectorConfig()
    if special_ids is None:
        special_ids = {int(i) for i in getattr(tokenizer, "all_special_ids", None) or ()}
    vocab = results.vocab
    d = results.d_sae
    parts = []
    for which in ("top", "bucket"):
        ids, ctx_pos, doc_pos = example_tokens(results, which)
        parts.append((ids, ctx_pos, doc_pos))
    n_top = (parts[0][0] >= 0).sum(1)
    n_bucket = (parts[1][0] >= 0).sum(1)
    # per-example weights: each set's share is its mean, mixed (1 - bw) : bw (only the top set when no buckets)
    bw = torch.where(n_bucket > 0, torch.full((d,), float(cfg.bucket_weight), dtype=torch.float64),
                     torch.zeros(d, dtype=torch.float64))
    w_top = torch.where(parts[0][0] >= 0, ((1 - bw) / n_top.clamp_min(1))[:, None], torch.zeros(()).double())
    w_bucket = torch.where(parts[1][0] >= 0, (bw / n_bucket.clamp_min(1))[:, None], torch.zeros(()).double())
    ids = torch.cat([parts[0][0], parts[1][0]], 1)
    ctx_pos = torch.cat([parts[0][1], parts[1][1]], 1)
    doc_pos = torch.cat([parts[0][2], parts[1][2]], 1)
    weight = torch.cat([w_top, w_bucket], 1)

    cats = _categories(vocab, ids, special_ids)
    cat_share = torch.stack([(weight * (cats == j)).sum(1) for j in range(len(CATEGORIES))], 1)  # [d, C]
    early = (ids >= 0) & ((ctx_pos <= cfg.position_max) | (doc_pos < cfg.position_max))
    early_share = (weight * early).sum(1)
    groups = token_groups(vocab, ids)
    tok_share, _ = _row_mode(groups, weight)

    top_ids = parts[0][0]
    top_groups = groups[:, : top_ids.shape[1]]
    n_types = _distinct(top_groups)
    _, dom_col = _row_mode(torch.where(top_ids >= 0, top_ids, -1), (top_ids >= 0).double())

    alive = results.count > 0
    kinds, share = [""] * d, torch.zeros(d, dtype=torch.float64)
    non_word = cat_share[:, : len(_NON_WORD)]
    nw_total = non_word.sum(1)
    nw_best = non_word.argmax(1)
    for i in range(d):
        if not bool(alive[i]) or int(n_top[i]) < cfg.min_examples:
            continue
        if float(cat_share[i, 0]) > cfg.majority:
            kinds[i], share[i] = "special", cat_share[i, 0]
        elif float(early_share[i]) > cfg.majority:
            kinds[i], share[i] = "position", early_share[i]
        elif float(nw_total[i]) > cfg.majority:
            kinds[i], share[i] = _NON_WORD[int(nw_best[i])], nw_total[i]
        elif float(tok_share[i]) > cfg.token_majority:
            kinds[i], share[i] = "token", tok_share[i]
    dominant = [results.token_str(int(top_ids[i, dom_col[i]])) if int(n_top[i]) else "" for i in range(d)]
    counts = {k: sum(1 for x in kinds if x == k) for k in DETECTOR_KINDS}
    return Detectors(kinds, share, dominant, n_types, counts, int(alive.sum()), cfg)
