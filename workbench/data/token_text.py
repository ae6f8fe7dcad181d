"""Token strings as a reader sees them: byte-split characters spelled out.

A byte-level tokenizer splits a rare character (an accented letter, a CJK character, an emoji) into several tokens,
each holding a fragment of its UTF-8 bytes; decoded alone, each fragment is the replacement character "�". Decoding
the run of fragments together gives the character back. :func:`spell_tokens` keeps one string per token (so
activations and positions still line up) and puts the run's text on the run's first token, "" on the rest.

    spell_tokens(ids, tokenizer)   # e.g. ["Les", " esp", "è", "", "ces"] instead of [..., "�", "�", ...]

Saved results carry no tokenizer: :func:`fragment_bytes` records the raw bytes of the fragment tokens once (at
analysis time), and :func:`bytes_decoder` spells runs from those bytes later.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

__all__ = ["REPLACEMENT", "bytes_decoder", "fragment_bytes", "spell_tokens"]

REPLACEMENT = "\ufffd"
MAX_RUN = 8  # tokens: a UTF-8 character has at most 4 bytes; a token may hold part of one and part of the next


def spell_tokens(ids: Sequence[int], tokenizer=None, strings: Sequence[str] | None = None, *,
                 decode: Callable[[list[int]], str] | None = None) -> list[str]:
    """One string per id of ``ids``, byte-split characters merged (see the module docstring).

    ``tokenizer``: anything with ``decode(list[int]) -> str`` (or pass ``decode``); ``strings``: the per-token strings
    already decoded one by one (computed when omitted). Ids < 0 (padding) keep their string and end a run.
    """
    if decode is None:
        if tokenizer is None:
            raise ValueError("spell_tokens needs a tokenizer (or decode=) to decode runs of byte tokens")
        decode = tokenizer.decode
    ids = [int(i) for i in ids]
    out = list(strings) if strings is not None else [decode([i]) if i >= 0 else "" for i in ids]
    if len(out) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(out)} strings: pass one string per id")
    j, n = 0, len(ids)
    while j < n:
        if REPLACEMENT not in out[j] or ids[j] < 0:
            j += 1
            continue
        for e in range(j + 2, min(n, j + MAX_RUN) + 1):
            if ids[e - 1] < 0:
                break
            text = decode(ids[j:e])
            if REPLACEMENT not in text:
                out[j:e] = [text] + [""] * (e - j - 1)
                j = e
                break
        else:  # never completes within MAX_RUN tokens: leave it as it is
            j += 1
    return out


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2 style: each byte shown as one printable character), inverted."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def fragment_bytes(tokenizer, ids: Sequence[int], strings: Mapping[int, str] | None = None) -> dict[int, bytes]:
    """The raw UTF-8 bytes of every id in ``ids`` that decodes alone to text with "�" (a fragment of a character),
    read from the tokenizer's vocabulary: a byte-fallback piece ``<0xE2>``, or a byte-level BPE token (each byte shown
    as one character). Ids whose bytes cannot be read this way are left out. ``strings``: id -> decoded string, when
    already known."""
    if tokenizer is None or not hasattr(tokenizer, "convert_ids_to_tokens"):
        return {}
    frag = [int(i) for i in ids if REPLACEMENT in (strings[int(i)] if strings and int(i) in strings
                                                   else tokenizer.decode([int(i)]))]
    if not frag:
        return {}
    alphabet = None
    out: dict[int, bytes] = {}
    for i, piece in zip(frag, tokenizer.convert_ids_to_tokens(frag)):
        piece = str(piece)
        m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
        if m:
            out[i] = bytes([int(m.group(1), 16)])
            continue
        if alphabet is None:
            alphabet = _byte_level_alphabet()
        if piece and all(c in alphabet for c in piece):
            out[i] = bytes(alphabet[c] for c in piece)
    return out


def bytes_decoder(strings: Mapping[int, str], raw: Mapping[int, bytes]) -> Callable[[list[int]], str]:
    """A ``decode`` for :func:`spell_tokens` without a tokenizer: fragments by their bytes (:func:`fragment_bytes`),
    other ids by their string."""
    def decode(seq: list[int]) -> str:
        data = b"".join(raw[i] if i in raw else strings.get(i, "").encode("utf-8") for i in seq)
        return data.decode("utf-8", errors="replace")

    return decode
