"""Cheap traits of features read from the feature pass's top examples: whether a feature is a special-token or
whitespace detector (:func:`special_token_features`, which the scorecard counts and the F1 ranking
:func:`~workbench.report.page.rank_features` skips), and which languages its
top examples come from (:func:`feature_languages`; the embedded wiki encodes the language in each document id) and
which documents (:func:`top_example_documents`). The finer detector kinds (position, punctuation, one token...) are
in :mod:`workbench.analysis.detectors`."""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from workbench.core.protocols import StoreLike
from workbench.analysis.features import FeatureResults
from workbench.data.corpus import WIKI_ID_STRIDE, WIKI_LANGUAGES

__all__ = ["SPECIAL_TOKEN_STRINGS", "feature_languages", "special_token_features", "special_token_ids",
           "token_languages", "top_example_documents"]


# Special tokens of the tokenizers workbench ships or meets, by their decoded string (used when no tokenizer is
# at hand: FeatureResults keep the strings of the token ids they mention).
SPECIAL_TOKEN_STRINGS = frozenset({
    "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
})
_SPECIAL_RE = re.compile(r"^<(unused\d+|\|[^|<>\s]+\||(start|end)_of_\w+)>$")


# ----------------------------------------------------------------------------------------------------------------
# Special tokens and languages (cheap, from the feature pass's top examples)
# ----------------------------------------------------------------------------------------------------------------


def special_token_ids(vocab: Mapping[int, str], tokenizer: Any = None) -> set[int]:
    """Ids of ``vocab`` (id -> decoded string) that are special tokens (BOS, EOS, padding, ...) or whitespace only,
    plus the tokenizer's ``all_special_ids`` when one is given."""
    out = {int(i) for i, s in vocab.items()
           if not s.strip() or s in SPECIAL_TOKEN_STRINGS or _SPECIAL_RE.match(s)}
    if tokenizer is not None:
        out |= {int(i) for i in getattr(tokenizer, "all_special_ids", None) or ()}
    return out


def _top_example_tokens(results: FeatureResults) -> tuple[Tensor, Tensor]:
    """Per feature and top example: the token id where it fired, and whether the example exists ([d_sae, K])."""
    before = results.config.context_before
    ids = results.arrays["top_win_ids"][:, :, before].to(torch.int64)
    return ids, results.arrays["top_tok"] >= 0


def special_token_features(results: FeatureResults, *, tokenizer: Any = None, majority: float = 0.5,
                           special_ids: set[int] | None = None) -> Tensor:
    """Bool [d_sae]: alive features whose top examples are mostly (a fraction > ``majority``) special or
    whitespace tokens (see :func:`special_token_ids`; default from ``results.vocab`` and ``tokenizer``)."""
    special = special_token_ids(results.vocab, tokenizer) if special_ids is None else set(special_ids)
    ids, valid = _top_example_tokens(results)
    if not special:
        return torch.zeros(results.d_sae, dtype=torch.bool)
    hit = torch.isin(ids, torch.tensor(sorted(special), dtype=torch.int64)) & valid
    n = valid.sum(1)
    return (n > 0) & (hit.sum(1).to(torch.float64) > majority * n.to(torch.float64))


def token_languages(store: StoreLike) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """The language of every token of ``store`` as an index into the returned names ([n_contexts, ctx] int8, -1
    where unknown), or None when the store's corpus records no language (only the embedded wiki does: its
    ``doc_id`` encodes the language, see :mod:`workbench.data.corpus`)."""
    corpus = store.manifest.get("corpus") or {}
    if corpus.get("source") != "wiki":
        return None
    docs = np.asarray(store.doc_ids(), dtype=np.int64)
    lang = docs // WIKI_ID_STRIDE
    lang = np.where((docs >= 0) & (lang < len(WIKI_LANGUAGES)), lang, -1).astype(np.int8)
    return lang, tuple(WIKI_LANGUAGES)


def feature_languages(results: FeatureResults, store: StoreLike) -> tuple[Tensor, tuple[str, ...]] | None:
    """Per feature, how many of its top examples come from each language ([d_sae, n_languages] int64), or None
    when the store records no language. ``store`` is the one the feature pass read."""
    langs = token_languages(store)
    if langs is None:
        return None
    lang, names = langs
    tok = results.arrays["top_tok"].to(torch.int64)
    valid = tok >= 0
    flat = torch.from_numpy(lang.reshape(-1).astype(np.int64))
    if tok.numel() and int(tok.max()) >= flat.numel():
        raise ValueError(f"the feature results point past the store's {flat.numel()} tokens: pass the store the "
                         f"feature pass read")
    li = torch.where(valid, flat[tok.clamp_min(0)], torch.full_like(tok, -1))
    counts = torch.zeros(results.d_sae, len(names), dtype=torch.int64)
    for j in range(len(names)):
        counts[:, j] = (li == j).sum(1)
    return counts, names


def top_example_documents(results: FeatureResults, store: StoreLike) -> Tensor:
    """The document id of every top example ([d_sae, K] int64, -1 where there is no example), read from
    ``store.doc_ids()``; ``store`` is the one the feature pass read."""
    tok = results.arrays["top_tok"].to(torch.int64)
    flat = np.asarray(store.doc_ids()).reshape(-1)
    if tok.numel() and int(tok.max()) >= flat.size:
        raise ValueError(f"the feature results point past the store's {flat.size} tokens: pass the store the "
                         f"feature pass read")
    docs = torch.from_numpy(flat[tok.clamp_min(0).numpy()].astype(np.int64))
    return torch.where(tok >= 0, docs, torch.full_like(tok, -1))
