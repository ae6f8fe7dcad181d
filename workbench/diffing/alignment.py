"""Pairing two tokenizations of the same text by character offsets (docs/methods.md §13).

Two models with different tokenizers see the same text as different token sequences. A position is comparable
across the two when both tokenizations *end a token at the same character*: up to that character both models have
read exactly the same text, so their residual streams there summarise the same prefix. :func:`align_offsets` keeps
those positions and nothing else; with the same tokenizer on both sides every token is kept.

Rules (pure functions on ``(start, end)`` character offsets, as HF fast tokenizers return them):

- a token's *end* is its end offset; empty tokens (``start == end``, e.g. special tokens added by the tokenizer)
  end nothing;
- several tokens may report the same end (byte-fallback pieces of one accented character, ``"é"`` as two byte
  tokens): the *last* of them is the one that completes the character, so it represents that end;
- only tokens whose end lies inside one of the ``keep_spans`` count (chat-template text, the role headers and the
  special tokens around messages, are left out this way), and token indices in ``skip_a`` / ``skip_b`` never count.

:func:`alignment_stats` counts, per model and language, the fraction of that model's tokens kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

__all__ = ["AlignmentStats", "Offsets", "align_offsets", "alignment_stats", "special_positions", "token_ends",
           "tokenize_with_offsets"]

Offsets = Sequence[tuple[int, int]]


def _inside(pos: int, spans: Sequence[tuple[int, int]] | None) -> bool:
    if spans is None:
        return True
    return any(lo < pos <= hi for lo, hi in spans)


def token_ends(offsets: Offsets, *, keep_spans: Sequence[tuple[int, int]] | None = None,
               skip: Iterable[int] = ()) -> dict[int, int]:
    """``{end character: token index}`` of the tokens that may be paired (see the module docstring).

    A token whose end lies in a span ``(lo, hi]`` of ``keep_spans`` (``None``: the whole text) counts; the last
    token with a given end represents it; tokens in ``skip`` and empty tokens are left out."""
    skipped = set(int(i) for i in skip)
    out: dict[int, int] = {}
    for i, (start, end) in enumerate(offsets):
        start, end = int(start), int(end)
        if end < start:
            raise ValueError(f"token {i} has offsets ({start}, {end}) with end < start: pass the tokenizer's "
                             f"offset_mapping (character offsets)")
        if i in skipped or end == start or not _inside(end, keep_spans):
            continue
        out[end] = i  # a later token with the same end overrides: it completes the character
    return out


def align_offsets(offsets_a: Offsets, offsets_b: Offsets, *, keep_spans: Sequence[tuple[int, int]] | None = None,
                  skip_a: Iterable[int] = (), skip_b: Iterable[int] = ()) -> tuple[list[int], list[int]]:
    """Token indices ``(idx_a, idx_b)``, in text order, of the positions where both tokenizations end a token at
    the same character. ``idx_a[n]`` and ``idx_b[n]`` have read the same text ``text[:end_n]``."""
    ends_a = token_ends(offsets_a, keep_spans=keep_spans, skip=skip_a)
    ends_b = token_ends(offsets_b, keep_spans=keep_spans, skip=skip_b)
    shared = sorted(set(ends_a) & set(ends_b))
    return [ends_a[e] for e in shared], [ends_b[e] for e in shared]


def tokenize_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of ``text`` with no special tokens added (the caller adds BOS).

    Special tokens written in the text (a chat template's ``<|im_start|>``) are parsed as such; their indices are
    what :func:`special_positions` returns for ``skip_a`` / ``skip_b``."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer and gives no character offsets: load "
                         f"the model's fast tokenizer (transformers' AutoTokenizer with use_fast=True)")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [(int(o[0]), int(o[1])) for o in enc["offset_mapping"]]


def special_positions(tokenizer, ids: Sequence[int]) -> list[int]:
    """Indices of ``ids`` that are the tokenizer's special tokens (BOS, EOS, chat-template markers)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return [i for i, t in enumerate(ids) if int(t) in special]


@dataclass
class AlignmentStats:
    """Tokens seen and kept, per model and language (a language ``None`` is counted as ``"?"``)."""

    seen: dict[str, dict[str, int]] = field(default_factory=lambda: {"a": {}, "b": {}})
    kept: dict[str, dict[str, int]] = field(default_factory=lambda: {"a": {}, "b": {}})

    def add(self, language: str | None, n_a: int, n_b: int, n_kept: int) -> None:
        lang = language or "?"
        for side, n in (("a", n_a), ("b", n_b)):
            self.seen[side][lang] = self.seen[side].get(lang, 0) + int(n)
            self.kept[side][lang] = self.kept[side].get(lang, 0) + int(n_kept)

    def fractions(self) -> dict[str, dict[str, float]]:
        """``{"a": {language: kept / seen, ..., "all": ...}, "b": {...}}``."""
        out: dict[str, dict[str, float]] = {}
        for side in ("a", "b"):
            seen, kept = self.seen[side], self.kept[side]
            row = {lang: kept[lang] / seen[lang] for lang in sorted(seen) if seen[lang]}
            total = sum(seen.values())
            row["all"] = sum(kept.values()) / total if total else float("nan")
            out[side] = row
        return out

    def to_dict(self) -> dict:
        return {"seen": self.seen, "kept": self.kept, "fractions": self.fractions()}

    @classmethod
    def from_dict(cls, data: dict) -> "AlignmentStats":
        return cls(seen={k: dict(v) for k, v in data["seen"].items()},
                   kept={k: dict(v) for k, v in data["kept"].items()})


def alignment_stats(pairs: Iterable[tuple[str | None, int, int, int]]) -> AlignmentStats:
    """Aggregate ``(language, n_tokens_a, n_tokens_b, n_kept)`` records into an :class:`AlignmentStats`."""
    stats = AlignmentStats()
    for lang, n_a, n_b, n_kept in pairs:
        stats.add(lang, n_a, n_b, n_kept)
    return stats
