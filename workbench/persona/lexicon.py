"""Known words: the vocabulary the offline judge checks a response's words against, so that made-up words count
against coherence (docs/methods.md §16).

    from workbench.persona.lexicon import known_share, known_words
    vocab = known_words()                          # the embedded wiki's words + Gemma's whole-word pieces
    known_share("Cependlème véliment : laissez-nous", vocab)   # (0.5, ['cependlème', 'véliment'])

Steering a small model hard makes it produce word salad that *looks* like the trait: pseudo-French such as
"Pourrillerade pour vous pays", pirate-like strings such as "ye'lda amunmin". Word statistics (distinct words,
repeated trigrams) score those as fluent. A word here is *known* when it occurs in the embedded Wikipedia summaries
(English, Spanish, French) or is a whole-word piece of Gemma's 262k-piece multilingual tokenizer (so everyday words
of many languages are known, including ones an encyclopedia rarely uses, such as "please" or "pouvez"). Words of at
most two letters always count as known, and a dropped final g ("sailin'") is read as "-ing".

This catches invented words, not real words in a nonsensical order; the perplexity ratio of the steering sweep is
the check for that.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import AbstractSet, Sequence

__all__ = ["known_share", "known_words", "letter_runs"]

_PART = re.compile(r"[^\W\d_]+", re.UNICODE)  # letters only: apostrophes and hyphens split words into parts
_PIECE_PREFIXES = ("▁", "Ġ")  # sentencepiece and byte-level BPE word starts


def letter_runs(text: str) -> list[str]:
    """The runs of letters in ``text`` (apostrophes, hyphens, digits and spaces separate them), as written."""
    return _PART.findall(text)


def _is_known(part: str, vocab: AbstractSet[str]) -> bool:
    return len(part) <= 2 or part in vocab or (part.endswith("in") and part + "g" in vocab)


def known_share(text: str, vocab: AbstractSet[str]) -> tuple[float, list[str]]:
    """The share of ``text``'s word parts (lower-cased letter runs) found in ``vocab`` (module docstring), and the
    unknown ones in order. A text without letters has share 1.0 (nothing invented; other factors judge it)."""
    parts = [p.lower() for p in letter_runs(text)]
    unknown = [p for p in parts if not _is_known(p, vocab)]
    return (1.0 - len(unknown) / len(parts) if parts else 1.0), unknown


def _tokenizer_words(name: str) -> set[str]:
    from workbench.data.models import load_tokenizer

    words = set()
    for piece in load_tokenizer(name).get_vocab():
        if piece[:1] in _PIECE_PREFIXES and len(piece) > 2:
            word = piece[1:].lower()
            if word.isalpha():
                words.add(word)
    return words


def known_words(languages: Sequence[str] | None = None, tokenizers: Sequence[str] = ("gemma-3-270m",)) -> frozenset:
    """Every lower-cased word of the embedded wiki summaries in ``languages`` (default: all embedded languages) and
    every whole-word piece of the named models' tokenizers. Cached per arguments (a few seconds the first time)."""
    from workbench.data.corpus_spec import WIKI_LANGUAGES

    return _known_words(tuple(languages or WIKI_LANGUAGES), tuple(tokenizers))


@lru_cache(maxsize=4)
def _known_words(languages: tuple[str, ...], tokenizers: tuple[str, ...]) -> frozenset:
    from workbench.data.corpus_sources import wiki_language

    words: set[str] = set()
    for lang in languages:
        for text in wiki_language(lang).extracts:
            words.update(p.lower() for p in letter_runs(text))
    for name in tokenizers:
        words |= _tokenizer_words(name)
    return frozenset(words)
