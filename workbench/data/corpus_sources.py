"""The three document sources behind a :class:`~workbench.data.corpus_spec.CorpusSpec`: the embedded Wikipedia
summaries, local ``.txt``/``.jsonl``/``.parquet`` files, and streamed Hugging Face datasets (with a clear error when
the Hub cannot be reached)."""
from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from workbench.core.errors import InputError
from workbench.core.extras import require
from workbench.data.assets import asset_path
from workbench.data.corpus_spec import (CorpusSpec, Document, WIKI_ID_STRIDE, WIKI_LANGUAGES, in_split,
                                        local_files, relative_name, unit_hash, is_heldout)

# ---------------------------------------------------------------------------------------------- wiki
@dataclass(frozen=True)
class _WikiLang:
    keys: tuple[str, ...]  # sorted article keys; rank = index
    titles: tuple[str, ...]
    extracts: tuple[str, ...]
    topics: tuple[str, ...]  # the article's own ``topic`` label ("" where it has none)
    heldout_score: np.ndarray  # unit_hash("wiki", lang, key) per rank
    index: dict[str, int]  # key -> rank, plus title field -> rank where it does not clash


@lru_cache(maxsize=None)
def wiki_language(lang: str) -> _WikiLang:
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
    topics = tuple(str((data[k] or {}).get("topic") or "") for k in keys)
    scores = np.array([unit_hash("wiki", lang, k) for k in keys], dtype=np.float64)
    index = {t: i for i, t in enumerate(titles)}
    index.update({k: i for i, k in enumerate(keys)})  # the key wins over a clashing title
    return _WikiLang(keys, titles, extracts, topics, scores, index)


def _check_lang(lang: str) -> None:
    if lang not in WIKI_LANGUAGES:
        raise ValueError(f"Unknown language {lang!r}: the embedded corpus has {', '.join(WIKI_LANGUAGES)}")


def wiki_doc_id(lang: str, rank: int) -> int:
    """The doc_id of the article of rank ``rank`` (position in sorted key order) in language ``lang``."""
    _check_lang(lang)
    return WIKI_LANGUAGES.index(lang) * WIKI_ID_STRIDE + int(rank)


def wiki_document(lang: str, rank: int) -> Document:
    w = wiki_language(lang)
    return Document(doc_id=wiki_doc_id(lang, rank), text=w.extracts[rank], lang=lang, title=w.keys[rank])


def wiki_article(lang: str, title: str) -> Document | None:
    """The embedded article ``title`` in ``lang`` (by its JSON key, else its ``title`` field), or None.

    ``Document.title`` is the JSON key (e.g. ``"Puente Golden Gate"``); ``text`` is the summary.
    Returns None too when the article's summary is empty.
    """
    w = wiki_language(lang)
    rank = w.index.get(title)
    if rank is None or not w.extracts[rank].strip():
        return None
    return wiki_document(lang, rank)


def _wiki_order(spec: CorpusSpec) -> tuple[tuple[str, int], ...]:
    """The selected (lang, rank) pairs of the spec's split, interleaved by a seeded hash sort."""
    return _wiki_order_of(tuple(spec.languages), spec.split, float(spec.heldout_fraction), spec.seed)


@functools.lru_cache(maxsize=16)  # the embedded articles are pinned by hash: the order of a selection never changes
def _wiki_order_of(languages: tuple[str, ...], split: str, heldout_fraction: float,
                   seed: int) -> tuple[tuple[str, int], ...]:
    keyed = []
    for lang in languages:
        w = wiki_language(lang)
        held = w.heldout_score < heldout_fraction
        for rank, key in enumerate(w.keys):
            if not w.extracts[rank].strip() or not in_split(bool(held[rank]), split):
                continue
            order = hashlib.blake2b(f"{seed}\x1f{lang}\x1f{key}".encode(), digest_size=8).digest()
            keyed.append((order, lang, rank))
    keyed.sort()
    return tuple((lang, rank) for _, lang, rank in keyed)


def iter_wiki(spec: CorpusSpec) -> Iterator[Document]:
    order = _wiki_order(spec)
    if not order:
        raise ValueError(
            f"The {spec.describe()} has no documents: expected non-empty article summaries; with "
            f"heldout_fraction={spec.heldout_fraction} try split='all' or another heldout_fraction"
        )
    return (wiki_document(lang, rank) for lang, rank in order)


# --------------------------------------------------------------------------------------------- local

def _decode_utf8(data: bytes, path: Path, first_line: int = 1) -> str:
    """``data`` as UTF-8; a ValueError naming the file, the line and the fix otherwise (the corpus is never stored
    with U+FFFD replacement characters in place of text)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        raise InputError(
            f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}): convert it first, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}`, and point the corpus at the converted file"
        ) from None


def _iter_records(root: Path, files: list[Path], text_field: str) -> Iterator[tuple[str, str]]:
    """(text, title) per record, in order, including records with empty text."""
    single = root.is_file()
    for path in files:
        ext = path.suffix.lower()
        name = relative_name(path, root)
        if ext == ".txt":
            text = _decode_utf8(path.read_bytes(), path).replace("\r\n", "\n").replace("\r", "\n")  # as text mode
            if single:  # one document per blank-line-separated paragraph
                paragraphs = text.replace("\r\n", "\n").split("\n\n")
                for i, para in enumerate(paragraphs):
                    yield para.strip(), f"{name}#{i}"
            else:  # one document per file
                yield text.strip(), name
        elif ext == ".jsonl":
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    line = _decode_utf8(raw, path, lineno)
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
            pq = require("pyarrow.parquet", "hf", f"reading the .parquet corpus file {path}")

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
        if text and in_split(is_heldout(doc_id, spec.heldout_fraction), spec.split):
            kept += 1
            yield Document(doc_id=doc_id, text=text, lang=lang, title=title)
    if kept == 0:
        what = "text field" if spec.kind == "hf" else "text"
        raise ValueError(
            f"The {spec.describe()} has no documents: found {total} record(s) but none with non-empty "
            f"{what} in split {spec.split!r}; expected at least one non-empty document"
            + (f" (field {spec.text_field!r})" if spec.kind == "hf" else "")
        )


def iter_local(spec: CorpusSpec) -> Iterator[Document]:
    root, files = local_files(spec)
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


def iter_hf(spec: CorpusSpec) -> Iterator[Document]:
    datasets = require("datasets", "hf", f"CorpusSpec(source={spec.source!r})")
    DatasetNotFoundError = require("datasets.exceptions", "hf").DatasetNotFoundError
    network = _network_errors()
    try:
        ds = datasets.load_dataset(spec.hf_name, spec.hf_config, split=spec.hf_split, streaming=True,
                                   revision=spec.hf_revision)
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
