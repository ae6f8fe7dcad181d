"""Text sources → documents → tokenised fixed-length contexts.

A :class:`CorpusSpec` names where the text comes from:

* ``"wiki"`` (the default): the embedded Wikipedia vital-article summaries in English, Spanish and
  French (see :mod:`workbench.data.assets`), so everything works offline;
* ``"hf:<dataset name>"``: a Hugging Face dataset, streamed with ``datasets.load_dataset(...,
  streaming=True)`` (needs the Hub, or a pre-populated HF cache with ``HF_HUB_OFFLINE=1``);
* a local path: a ``.txt``, ``.jsonl`` or ``.parquet`` file, or a directory of such files.

:func:`iter_documents` turns a spec into a deterministic stream of :class:`Document`;
:func:`pack_contexts` tokenises a document stream and cuts it into fixed-length contexts
(:class:`PackedBatch`); :func:`packed_contexts` does both for a token budget.

Document ids (``doc_id``)
-------------------------
* Embedded wiki: ``doc_id = WIKI_LANGUAGES.index(lang) * WIKI_ID_STRIDE + rank``, where ``rank`` is the
  article's position among *all* article keys of that language's JSON sorted by code point
  (``en`` = 0, ``es`` = 1, ``fr`` = 2; stride 1,000,000). So ``1_000_123`` is the 124th Spanish
  article. The assets are pinned by SHA-256, so the ids never change; :func:`wiki_doc_id` decodes one.
* Local files and HF datasets: the record's index in source order (files sorted by relative path,
  then line / paragraph / row order), counting every record, including skipped empty ones.

Train / held-out split
----------------------
By document, from a hash: an article is held out when ``hash(lang, title) < heldout_fraction`` (local /
HF: ``hash(doc_id)``). Membership does not depend on the seed or on which languages are selected, and
raising ``heldout_fraction`` only moves documents from train to held-out.

Order
-----
Wiki articles of all selected languages are interleaved by a seeded hash sort (so the first tokens mix
the languages; a different seed gives a different order). Local files and HF datasets are streamed in
source order (bounded memory); ``seed`` does not affect them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from workbench.core.persist import read_tagged_json, write_tagged_json
from workbench.data.corpus_sources import (iter_hf, iter_local, iter_wiki, wiki_language, wiki_document, wiki_article,
                                           wiki_doc_id)
from workbench.data.corpus_spec import (CORPUS_FORMAT_VERSION, CorpusSpec, Document, LOCAL_EXTENSIONS, PackedBatch,
                                        SPLITS, WIKI_ID_STRIDE, WIKI_LANGUAGES, is_heldout)

__all__ = [
    "CORPUS_FORMAT_VERSION",
    "SPLITS",
    "CorpusSpec",
    "Document",
    "PackedBatch",
    "WIKI_LANGUAGES",
    "WIKI_ID_STRIDE",
    "LOCAL_EXTENSIONS",
    "iter_documents",
    "document",
    "wiki_article",
    "wiki_doc_id",
    "is_heldout",
    "pack_contexts",
    "packed_contexts",
    "corpus_stats",
    "whole_corpus_tokens",
]


# -------------------------------------------------------------------------------------------- public
def iter_documents(spec: CorpusSpec | None = None) -> Iterator[Document]:
    """The spec's documents, in a deterministic order (see the module docstring).

    Source problems (missing path, unsupported extension, unknown dataset, unreachable Hub) raise a
    ``ValueError`` here, at call time; an empty corpus raises a ``ValueError`` when the stream turns out
    to have no documents (at once for the embedded wiki, at the end of the stream for files / HF).
    Empty texts are skipped.
    """
    spec = spec or CorpusSpec()
    if spec.kind == "wiki":
        return iter_wiki(spec)
    if spec.kind == "code":
        from workbench.data.code_corpus import iter_code

        return iter_code(spec)
    if spec.kind == "hf":
        return iter_hf(spec)
    return iter_local(spec)


def document(spec: CorpusSpec, doc_id: int) -> Document:
    """Look a ``doc_id`` back up in the spec's source (any split). Raises ``KeyError`` if unknown.

    Instant for the embedded wiki (the id encodes language and rank); a scan for files / HF datasets.
    """
    doc_id = int(doc_id)
    if spec.kind == "wiki":
        li, rank = divmod(doc_id, WIKI_ID_STRIDE)
        if doc_id >= 0 and li < len(WIKI_LANGUAGES) and rank < len(wiki_language(WIKI_LANGUAGES[li]).keys):
            return wiki_document(WIKI_LANGUAGES[li], rank)
        raise KeyError(f"doc_id {doc_id} is not an article of the embedded wiki corpus")
    if spec.kind == "code":
        from workbench.data.code_corpus import CODE_ID_BASE, HEADER_ID_BASE, code_document, code_files

        if doc_id < CODE_ID_BASE:
            return document(CorpusSpec.from_dict({**spec.to_dict(), "source": "wiki"}), doc_id)
        kind, base = ("c", HEADER_ID_BASE) if doc_id >= HEADER_ID_BASE else ("py", CODE_ID_BASE)
        if doc_id - base < len(code_files(kind)):
            return code_document(kind, doc_id - base)
        raise KeyError(f"doc_id {doc_id} is not a file of the {spec.describe()}")
    for doc in iter_documents(CorpusSpec.from_dict({**spec.to_dict(), "split": "all"})):
        if doc.doc_id == doc_id:
            return doc
        if doc.doc_id > doc_id:  # ids increase along the stream
            break
    raise KeyError(f"doc_id {doc_id} is not a (non-empty) document of the {spec.describe()}")


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    out = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)
    ids = out["input_ids"] if not isinstance(out, list) else out
    return [list(x) for x in ids]


def _groups(docs: Iterable[Document], max_docs: int, max_chars: int) -> Iterator[list[Document]]:
    group: list[Document] = []
    chars = 0
    for doc in docs:
        group.append(doc)
        chars += len(doc.text)
        if len(group) >= max_docs or chars >= max_chars:
            yield group
            group, chars = [], 0
    if group:
        yield group


def pack_contexts(
    tokenizer: Any,
    docs: Iterable[Document],
    context_size: int = 128,
    prepend_bos: bool = True,
    batch_contexts: int = 64,
    *,
    eos_between_docs: bool = True,
    docs_per_call: int = 64,
) -> Generator[PackedBatch, None, dict[str, int]]:
    """Tokenise ``docs`` (``add_special_tokens=False``), concatenate them in order and cut fixed contexts.

    Packing: each document's tokens are followed by the tokenizer's EOS token (when it has one and
    ``eos_between_docs``; the EOS counts as the document's last token: same doc_id, next position), and
    documents flow across context boundaries. With ``prepend_bos`` every context is
    ``[bos] + (context_size - 1)`` stream tokens. The final partial context is dropped. Yields
    :class:`PackedBatch` of ``batch_contexts`` contexts (the last one may be smaller). Streaming: only
    ``docs_per_call`` documents (or ~256k characters) are tokenised at a time.

    The generator's return value (``StopIteration.value``) is a dict of totals: documents, tokens
    (stream tokens, EOS included), contexts, dropped_tokens.
    """
    if context_size < (2 if prepend_bos else 1):
        raise ValueError(f"context_size={context_size} is too small (need >= {2 if prepend_bos else 1})")
    if batch_contexts < 1:
        raise ValueError(f"batch_contexts={batch_contexts} must be >= 1")
    if docs_per_call < 1:
        raise ValueError(f"docs_per_call={docs_per_call} must be >= 1")
    bos = None
    if prepend_bos:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise ValueError("prepend_bos=True but the tokenizer has no BOS token; pass prepend_bos=False")
    eos = getattr(tokenizer, "eos_token_id", None) if eos_between_docs else None
    return _pack(tokenizer, docs, context_size, bos, eos, batch_contexts, docs_per_call)


def _pack(
    tokenizer: Any, docs: Iterable[Document], context_size: int, bos: int | None, eos: int | None,
    batch_contexts: int, docs_per_call: int,
) -> Generator[PackedBatch, None, dict[str, int]]:
    prepend_bos = bos is not None
    body = context_size - (1 if prepend_bos else 0)
    per_batch = body * batch_contexts

    tok_parts: list[np.ndarray] = []
    doc_parts: list[np.ndarray] = []
    pos_parts: list[np.ndarray] = []
    buffered = n_docs = n_tokens = n_contexts = 0

    def make_batch(t: np.ndarray, d: np.ndarray, p: np.ndarray) -> PackedBatch:
        k = len(t) // body
        t, d, p = t.reshape(k, body), d.reshape(k, body), p.reshape(k, body)
        if prepend_bos:
            t = np.concatenate([np.full((k, 1), bos, np.int32), t], axis=1)
            d = np.concatenate([d[:, :1], d], axis=1)
            p = np.concatenate([np.full((k, 1), -1, np.int32), p], axis=1)
        return PackedBatch(np.ascontiguousarray(t), np.ascontiguousarray(d), np.ascontiguousarray(p))

    for group in _groups(docs, docs_per_call, 1 << 18):
        for doc, ids in zip(group, _tokenize(tokenizer, [d.text for d in group])):
            if not ids:
                continue
            if eos is not None:
                ids.append(eos)
            m = len(ids)
            tok_parts.append(np.asarray(ids, dtype=np.int32))
            doc_parts.append(np.full(m, doc.doc_id, dtype=np.int64))
            pos_parts.append(np.arange(m, dtype=np.int32))
            buffered += m
            n_docs += 1
            n_tokens += m
        if buffered >= per_batch:
            t, d, p = (np.concatenate(x) for x in (tok_parts, doc_parts, pos_parts))
            n_full = buffered // per_batch
            for b in range(n_full):
                s = slice(b * per_batch, (b + 1) * per_batch)
                n_contexts += batch_contexts
                yield make_batch(t[s], d[s], p[s])
            rest = n_full * per_batch
            tok_parts, doc_parts, pos_parts = [t[rest:].copy()], [d[rest:].copy()], [p[rest:].copy()]
            buffered -= rest
    k = buffered // body
    if k:
        t, d, p = (np.concatenate(x)[: k * body] for x in (tok_parts, doc_parts, pos_parts))
        n_contexts += k
        yield make_batch(t, d, p)
    return {"documents": n_docs, "tokens": n_tokens, "contexts": n_contexts, "dropped_tokens": buffered - k * body}


def packed_contexts(
    spec: CorpusSpec,
    tokenizer: Any,
    n_tokens: int,
    context_size: int = 128,
    prepend_bos: bool = True,
    batch_contexts: int = 64,
    **pack_kwargs: Any,
) -> Iterator[PackedBatch]:
    """Packed contexts of ``spec`` until ``ceil(n_tokens / context_size)`` contexts have been yielded.

    Raises ``ValueError`` for ``n_tokens <= 0`` (at call time), and, lazily, when the corpus runs out
    before enough contexts were produced (saying how many tokens it has).
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens={n_tokens} must be > 0")
    need = math.ceil(n_tokens / context_size)
    docs = iter_documents(spec)  # source and packing errors surface here, at call time
    gen = pack_contexts(tokenizer, docs, context_size, prepend_bos, batch_contexts, **pack_kwargs)
    return _take_contexts(spec, gen, n_tokens, need, context_size)


def _take_contexts(
    spec: CorpusSpec, gen: Generator[PackedBatch, None, dict[str, int]], n_tokens: int, need: int, context_size: int
) -> Iterator[PackedBatch]:
    got = 0
    while got < need:
        try:
            batch = next(gen)
        except StopIteration as stop:
            totals = stop.value or {}
            raise ValueError(
                f"The {spec.describe()} ran out after {got} contexts of {context_size} tokens "
                f"({got * context_size} tokens; {totals.get('tokens', '?')} tokens in "
                f"{totals.get('documents', '?')} documents in all), but n_tokens={n_tokens} needs {need} "
                f"contexts: ask for fewer tokens, or use more data (more languages, split='all', another source)"
            ) from None
        if got + len(batch) > need:
            keep = need - got
            batch = PackedBatch(batch.tokens[:keep], batch.doc_ids[:keep], batch.positions[:keep])
        got += len(batch)
        yield batch
    gen.close()


_COUNT_FORMAT = "workbench-corpus-token-count"


def whole_corpus_tokens(spec: CorpusSpec, tokenizer: Any, context_size: int = 128, prepend_bos: bool = True,
                        *, cache: str | os.PathLike | None = None) -> int:
    """The ``n_tokens`` that harvests all of ``spec``: its packed contexts (the final partial one dropped) times
    ``context_size``. Counting tokenises the whole corpus once (about 10 s for the embedded wiki); with ``cache``
    (a folder) the count is kept in a small JSON file keyed by the corpus fingerprint and the tokenizer."""
    key = {"corpus": spec.fingerprint(), "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
           "vocab": len(tokenizer) if hasattr(tokenizer, "__len__") else None, "context_size": int(context_size),
           "prepend_bos": bool(prepend_bos)}
    path = None
    if cache is not None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache) / f"whole-corpus-{digest}.json"
        try:
            saved = read_tagged_json(path, format=_COUNT_FORMAT, what="a corpus token count", fix="it is recounted")
            if all(saved.get(k) == v for k, v in key.items()):
                return int(saved["n_tokens"])
        except (ValueError, KeyError, TypeError):
            pass  # missing, unreadable or stale: count again and overwrite
    n_contexts = sum(len(b) for b in pack_contexts(tokenizer, iter_documents(spec), context_size, prepend_bos, 256))
    if n_contexts == 0:
        raise ValueError(f"the {spec.describe()} holds no complete context of {context_size} tokens")
    n_tokens = n_contexts * context_size
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tagged_json(path, {**key, "n_contexts": n_contexts, "n_tokens": n_tokens}, format=_COUNT_FORMAT,
                          format_version=1)
    return n_tokens


def corpus_stats(spec: CorpusSpec | None = None, tokenizer: Any = None) -> dict[str, Any]:
    """Documents and characters (and tokens, given a tokenizer) per language, plus totals.

    Returns ``{"source", "split", "fingerprint", "languages": {lang: {...}}, "total": {...}}``;
    documents without a language (local / HF) are counted under ``"unknown"``. Tokens are counted with
    ``add_special_tokens=False`` and no separators.
    """
    spec = spec or CorpusSpec()
    per: dict[str, dict[str, int]] = {}

    def add(group: list[Document]) -> None:
        counts = [len(x) for x in _tokenize(tokenizer, [d.text for d in group])] if tokenizer is not None else None
        for i, doc in enumerate(group):
            empty = {"documents": 0, "characters": 0} | ({"tokens": 0} if counts is not None else {})
            row = per.setdefault(doc.lang or "unknown", empty)
            row["documents"] += 1
            row["characters"] += len(doc.text)
            if counts is not None:
                row["tokens"] += counts[i]

    for group in _groups(iter_documents(spec), 256, 1 << 19):
        add(group)
    total: dict[str, int] = {}
    for row in per.values():
        for k, v in row.items():
            total[k] = total.get(k, 0) + v
    return {
        "source": spec.source,
        "split": spec.split,
        "fingerprint": spec.fingerprint(),
        "languages": dict(sorted(per.items())),
        "total": total,
    }
