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
import operator
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.assets import ASSETS, asset_path

__all__ = [
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
]

WIKI_LANGUAGES: tuple[str, ...] = ("en", "es", "fr")
WIKI_ID_STRIDE = 1_000_000
LOCAL_EXTENSIONS: tuple[str, ...] = (".txt", ".jsonl", ".parquet")
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
# Bump when the document stream for an unchanged spec changes (ids, order, splitting, packing inputs):
# it is part of the fingerprint, so caches keyed by it are invalidated.
CORPUS_FORMAT_VERSION = 1

_SOURCE_HELP = (
    "source must be 'wiki' (the embedded Wikipedia summaries), 'hf:<dataset name>' (a Hugging Face "
    "dataset) or a path to a .txt / .jsonl / .parquet file or a directory of such files"
)


# ----------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class CorpusSpec:
    """Where the text comes from and which part of it to use.

    ``languages`` only applies to ``source="wiki"``; ``text_field`` to .jsonl / .parquet / HF sources;
    ``hf_config`` / ``hf_split`` to HF sources. ``split`` is ``"train"``, ``"heldout"`` or ``"all"``.
    """

    source: str = "wiki"
    languages: tuple[str, ...] = WIKI_LANGUAGES
    split: str = "train"
    heldout_fraction: float = 0.05
    seed: int = 0
    text_field: str = "text"
    hf_config: str | None = None
    hf_split: str = "train"

    def __post_init__(self) -> None:
        source = os.fspath(self.source) if isinstance(self.source, os.PathLike) else self.source
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"CorpusSpec.source={self.source!r} is empty or not a string: {_SOURCE_HELP}")
        object.__setattr__(self, "source", source)
        langs = (self.languages,) if isinstance(self.languages, str) else tuple(self.languages)
        if not langs:
            raise ValueError(f"CorpusSpec.languages is empty: pick one or more of {', '.join(WIKI_LANGUAGES)}")
        unknown = [lang for lang in langs if lang not in WIKI_LANGUAGES]
        if unknown:
            raise ValueError(
                f"Unknown language(s) {', '.join(map(repr, unknown))}: the embedded corpus has "
                f"{', '.join(WIKI_LANGUAGES)}; use e.g. languages=('en', 'es')"
            )
        object.__setattr__(self, "languages", tuple(dict.fromkeys(langs)))  # de-duplicated, order kept
        if self.split not in SPLITS:
            raise ValueError(f"CorpusSpec.split={self.split!r} is not one of {', '.join(map(repr, SPLITS))}")
        if not (0.0 <= float(self.heldout_fraction) <= 1.0):
            raise ValueError(f"CorpusSpec.heldout_fraction={self.heldout_fraction} must be between 0 and 1")
        object.__setattr__(self, "heldout_fraction", float(self.heldout_fraction))
        try:
            if isinstance(self.seed, bool):
                raise TypeError
            object.__setattr__(self, "seed", operator.index(self.seed))
        except TypeError:
            raise ValueError(f"CorpusSpec.seed={self.seed!r} must be an int") from None
        if self.kind == "hf" and not self.hf_name:
            raise ValueError(f"CorpusSpec.source={source!r} names no dataset: write 'hf:<dataset name>'")

    @property
    def kind(self) -> str:
        """``"wiki"``, ``"hf"`` or ``"local"``."""
        if self.source == "wiki":
            return "wiki"
        if self.source.startswith("hf:"):
            return "hf"
        return "local"

    @property
    def hf_name(self) -> str:
        """The dataset name of an ``hf:`` source (empty otherwise)."""
        return self.source[3:].strip() if self.kind == "hf" else ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``languages`` as a list); :meth:`from_dict` reverses it."""
        d = asdict(self)
        d["languages"] = list(self.languages)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusSpec:
        """Rebuild a spec from :meth:`to_dict` output (missing keys take their defaults)."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"Unknown CorpusSpec field(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")
        d = dict(d)
        if "languages" in d and not isinstance(d["languages"], str):
            d["languages"] = tuple(d["languages"])
        return cls(**d)

    def fingerprint(self) -> str:
        """A short, stable SHA-256 hex (16 chars) of everything that determines the document stream.

        Covers the fields that matter for this kind of source, the pinned asset hashes (wiki) or each
        file's relative path, size and mtime (local), and :data:`CORPUS_FORMAT_VERSION`. Deterministic
        across processes; used to key caches of harvested activations. HF sources are keyed by name,
        config and split only (a dataset revised on the Hub keeps its fingerprint).
        """
        key: dict[str, Any] = {"version": CORPUS_FORMAT_VERSION, "kind": self.kind, "split": self.split}
        if self.split != "all":
            key["heldout_fraction"] = self.heldout_fraction
        if self.kind == "wiki":
            langs = sorted(self.languages)  # the interleaved order does not depend on the listing order
            key.update(languages=langs, seed=self.seed, assets={lang: ASSETS[f"wiki-{lang}"].sha256 for lang in langs})
        elif self.kind == "hf":
            key.update(name=self.hf_name, config=self.hf_config, hf_split=self.hf_split, text_field=self.text_field)
        else:
            root, files = _local_files(self)
            key.update(
                path=str(root),
                text_field=self.text_field,
                files=[[_rel(f, root), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
            )
        blob = json.dumps(key, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def describe(self) -> str:
        """A one-line human description, used in error messages."""
        if self.kind == "wiki":
            return f"embedded wiki corpus ({'+'.join(self.languages)}, split={self.split!r})"
        if self.kind == "hf":
            return f"HF dataset {self.hf_name!r} (config={self.hf_config!r}, split={self.hf_split!r}/{self.split!r})"
        return f"local source {self.source!r} (split={self.split!r})"


@dataclass
class Document:
    """One document of a corpus. ``doc_id`` is stable (see the module docstring for the scheme)."""

    doc_id: int
    text: str
    lang: str | None = None
    title: str | None = None


@dataclass
class PackedBatch:
    """A batch of packed contexts, all arrays of shape ``[n, context_size]``.

    ``tokens`` (int32) are token ids; ``doc_ids`` (int64) the document each token came from;
    ``positions`` (int32) the token's index within its document (the EOS closing a document gets the
    next index). A prepended BOS gets the ``doc_id`` of the token after it and position ``-1``.
    """

    tokens: np.ndarray
    doc_ids: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def context_size(self) -> int:
        return int(self.tokens.shape[1])


# ------------------------------------------------------------------------------------------- hashing
def _unit_hash(*parts: str) -> float:
    """A deterministic hash of ``parts`` mapped to [0, 1)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_heldout(key: str | int, heldout_fraction: float, lang: str | None = None) -> bool:
    """Whether a document is in the held-out split.

    ``key`` is the article title (dict key of the wiki JSON) with its ``lang`` for the embedded wiki,
    or the ``doc_id`` for local / HF sources.
    """
    if lang is not None:
        return _unit_hash("wiki", lang, str(key)) < heldout_fraction
    return _unit_hash("doc", str(int(key))) < heldout_fraction


def _in_split(heldout: bool, split: str) -> bool:
    return split == "all" or heldout == (split == "heldout")


# ---------------------------------------------------------------------------------------------- wiki
@dataclass(frozen=True)
class _WikiLang:
    keys: tuple[str, ...]  # sorted article keys; rank = index
    titles: tuple[str, ...]
    extracts: tuple[str, ...]
    heldout_score: np.ndarray  # _unit_hash("wiki", lang, key) per rank
    index: dict[str, int]  # key -> rank, plus title field -> rank where it does not clash


@lru_cache(maxsize=None)
def _wiki(lang: str) -> _WikiLang:
    _check_lang(lang)
    path = asset_path(f"wiki-{lang}")  # AssetError (a ValueError) with the install hint if missing
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    keys = tuple(sorted(data))
    titles = tuple(str((data[k] or {}).get("title") or k) for k in keys)
    extracts = tuple(str((data[k] or {}).get("extract") or "") for k in keys)
    scores = np.array([_unit_hash("wiki", lang, k) for k in keys], dtype=np.float64)
    index = {t: i for i, t in enumerate(titles)}
    index.update({k: i for i, k in enumerate(keys)})  # the key wins over a clashing title
    return _WikiLang(keys, titles, extracts, scores, index)


def _check_lang(lang: str) -> None:
    if lang not in WIKI_LANGUAGES:
        raise ValueError(f"Unknown language {lang!r}: the embedded corpus has {', '.join(WIKI_LANGUAGES)}")


def wiki_doc_id(lang: str, rank: int) -> int:
    """The doc_id of the article of rank ``rank`` (position in sorted key order) in language ``lang``."""
    _check_lang(lang)
    return WIKI_LANGUAGES.index(lang) * WIKI_ID_STRIDE + int(rank)


def _wiki_document(lang: str, rank: int) -> Document:
    w = _wiki(lang)
    return Document(doc_id=wiki_doc_id(lang, rank), text=w.extracts[rank], lang=lang, title=w.keys[rank])


def wiki_article(lang: str, title: str) -> Document | None:
    """The embedded article ``title`` in ``lang`` (by its JSON key, else its ``title`` field), or None.

    ``Document.title`` is the JSON key (e.g. ``"Puente Golden Gate"``); ``text`` is the summary.
    Returns None too when the article's summary is empty.
    """
    w = _wiki(lang)
    rank = w.index.get(title)
    if rank is None or not w.extracts[rank].strip():
        return None
    return _wiki_document(lang, rank)


def _wiki_order(spec: CorpusSpec) -> list[tuple[str, int]]:
    """The selected (lang, rank) pairs of the spec's split, interleaved by a seeded hash sort."""
    keyed = []
    for lang in spec.languages:
        w = _wiki(lang)
        held = w.heldout_score < spec.heldout_fraction
        for rank, key in enumerate(w.keys):
            if not w.extracts[rank].strip() or not _in_split(bool(held[rank]), spec.split):
                continue
            order = hashlib.blake2b(f"{spec.seed}\x1f{lang}\x1f{key}".encode(), digest_size=8).digest()
            keyed.append((order, lang, rank))
    keyed.sort()
    return [(lang, rank) for _, lang, rank in keyed]


def _iter_wiki(spec: CorpusSpec) -> Iterator[Document]:
    order = _wiki_order(spec)
    if not order:
        raise ValueError(
            f"The {spec.describe()} has no documents: expected non-empty article summaries; with "
            f"heldout_fraction={spec.heldout_fraction} try split='all' or another heldout_fraction"
        )
    return (_wiki_document(lang, rank) for lang, rank in order)


# --------------------------------------------------------------------------------------------- local
def _rel(path: Path, root: Path) -> str:
    return path.name if root.is_file() else path.relative_to(root).as_posix()


def _local_files(spec: CorpusSpec) -> tuple[Path, list[Path]]:
    """The resolved root and its data files (sorted), or a ValueError naming the problem and the fix."""
    root = Path(spec.source).expanduser()
    if not root.exists():
        raise ValueError(f"Corpus source {spec.source!r}: no such file or directory. {_SOURCE_HELP}")
    root = root.resolve()
    if root.is_file():
        if root.suffix.lower() not in LOCAL_EXTENSIONS:
            raise ValueError(
                f"Corpus source {spec.source!r}: unsupported extension {root.suffix or '(none)'!r}; "
                f"expected one of {', '.join(LOCAL_EXTENSIONS)} (convert the file, or {_SOURCE_HELP})"
            )
        return root, [root]
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_EXTENSIONS
         and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(
            f"Corpus source {spec.source!r} is a directory with no {' / '.join(LOCAL_EXTENSIONS)} files: "
            f"expected at least one document file in it"
        )
    return root, files


def _iter_records(root: Path, files: list[Path], text_field: str) -> Iterator[tuple[str, str]]:
    """(text, title) per record, in order, including records with empty text."""
    single = root.is_file()
    for path in files:
        ext = path.suffix.lower()
        name = _rel(path, root)
        if ext == ".txt":
            text = path.read_text(encoding="utf-8", errors="replace")
            if single:  # one document per blank-line-separated paragraph
                paragraphs = text.replace("\r\n", "\n").split("\n\n")
                for i, para in enumerate(paragraphs):
                    yield para.strip(), f"{name}#{i}"
            else:  # one document per file
                yield text.strip(), name
        elif ext == ".jsonl":
            with open(path, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}, line {lineno}: invalid JSON ({err.msg}, column {err.colno})") from err
                    if not isinstance(obj, dict) or text_field not in obj:
                        found = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
                        raise ValueError(
                            f"{path}, line {lineno}: expected a JSON object with a {text_field!r} field, "
                            f"found {found or 'no fields'}; set CorpusSpec(text_field=...)"
                        )
                    value = obj[text_field]
                    if value is not None and not isinstance(value, str):
                        raise ValueError(f"{path}, line {lineno}: field {text_field!r} is not a string")
                    yield (value or "").strip(), f"{name}:{lineno}"
        elif ext == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            columns = pf.schema_arrow.names
            if text_field not in columns:
                raise ValueError(
                    f"{path}: no column {text_field!r} (columns: {', '.join(columns)}); set CorpusSpec(text_field=...)"
                )
            row = 0
            for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
                for value in batch.column(0).to_pylist():
                    yield (value if isinstance(value, str) else "").strip(), f"{name}@{row}"
                    row += 1


def _iter_split(records: Iterable[tuple[str, str]], spec: CorpusSpec, lang: str | None = None) -> Iterator[Document]:
    """Number records, keep the spec's split and non-empty texts; ValueError if nothing is left."""
    total = kept = 0
    for doc_id, (text, title) in enumerate(records):
        total += 1
        if text and _in_split(is_heldout(doc_id, spec.heldout_fraction), spec.split):
            kept += 1
            yield Document(doc_id=doc_id, text=text, lang=lang, title=title)
    if kept == 0:
        what = "text field" if spec.kind == "hf" else "text"
        raise ValueError(
            f"The {spec.describe()} has no documents: found {total} record(s) but none with non-empty "
            f"{what} in split {spec.split!r}; expected at least one non-empty document"
            + (f" (field {spec.text_field!r})" if spec.kind == "hf" else "")
        )


def _iter_local(spec: CorpusSpec) -> Iterator[Document]:
    root, files = _local_files(spec)
    return _iter_split(_iter_records(root, files, spec.text_field), spec)


# ------------------------------------------------------------------------------------------------ hf
def _network_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import socket

        errs.append(socket.gaierror)
    except ImportError:  # pragma: no cover
        pass
    try:
        import requests

        errs += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:  # pragma: no cover
        pass
    try:
        import httpx

        errs.append(httpx.TransportError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        errs += [OfflineModeIsEnabled, LocalEntryNotFoundError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def _hub_error(spec: CorpusSpec, err: BaseException) -> ValueError:
    return ValueError(
        f"Cannot load HF dataset {spec.hf_name!r}: the Hugging Face Hub is unreachable "
        f"({type(err).__name__}: {err}). The workbench works offline on the embedded corpus: use "
        f"CorpusSpec(source='wiki'). To use this dataset, download it where the Hub can be reached, e.g. "
        f"datasets.load_dataset({spec.hf_name!r}, split={spec.hf_split!r}).to_parquet('data.parquet'), "
        f"and pass the file: CorpusSpec(source='data.parquet', text_field={spec.text_field!r}); or "
        f"pre-populate the HF datasets cache and set HF_HUB_OFFLINE=1."
    )


def _iter_hf(spec: CorpusSpec) -> Iterator[Document]:
    try:
        import datasets
        from datasets.exceptions import DatasetNotFoundError
    except ImportError as err:  # pragma: no cover
        raise ValueError(f"source={spec.source!r} needs the 'datasets' package: pip install datasets") from err
    network = _network_errors()
    try:
        ds = datasets.load_dataset(spec.hf_name, spec.hf_config, split=spec.hf_split, streaming=True)
    except DatasetNotFoundError as err:
        raise ValueError(
            f"HF dataset {spec.hf_name!r} was not found on the Hub (or needs authentication): {err}. "
            f"Check the name, or use the embedded corpus: CorpusSpec(source='wiki')"
        ) from err
    except network as err:
        raise _hub_error(spec, err) from err

    def records() -> Iterator[tuple[str, str]]:
        it = iter(ds)
        row = 0
        while True:
            try:
                example = next(it)
            except StopIteration:
                return
            except network as err:
                raise _hub_error(spec, err) from err
            if spec.text_field not in example:
                raise ValueError(
                    f"HF dataset {spec.hf_name!r} has no field {spec.text_field!r} (fields: "
                    f"{', '.join(example)}); set CorpusSpec(text_field=...)"
                )
            value = example[spec.text_field]
            yield (value if isinstance(value, str) else "").strip(), f"{spec.hf_name}@{row}"
            row += 1

    return _iter_split(records(), spec)


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
        return _iter_wiki(spec)
    if spec.kind == "hf":
        return _iter_hf(spec)
    return _iter_local(spec)


def document(spec: CorpusSpec, doc_id: int) -> Document:
    """Look a ``doc_id`` back up in the spec's source (any split). Raises ``KeyError`` if unknown.

    Instant for the embedded wiki (the id encodes language and rank); a scan for files / HF datasets.
    """
    doc_id = int(doc_id)
    if spec.kind == "wiki":
        li, rank = divmod(doc_id, WIKI_ID_STRIDE)
        if doc_id >= 0 and li < len(WIKI_LANGUAGES) and rank < len(_wiki(WIKI_LANGUAGES[li]).keys):
            return _wiki_document(WIKI_LANGUAGES[li], rank)
        raise KeyError(f"doc_id {doc_id} is not an article of the embedded wiki corpus")
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
) -> Iterator[PackedBatch]:
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
) -> Iterator[PackedBatch]:
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
    spec: CorpusSpec, gen: Iterator[PackedBatch], n_tokens: int, need: int, context_size: int
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
