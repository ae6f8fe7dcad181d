"""A code corpus that every machine already has: the running interpreter's own standard-library sources (licence:
PSF License Agreement), and optionally the system's C headers (``/usr/include/*.h`` and Python's include folder).

Sources (``CorpusSpec(source=...)``):

* ``"stdlib"``: one document per ``.py`` file under ``sysconfig.get_paths()['stdlib']`` (test folders,
  ``site-packages``, ``__pycache__`` and IDLE's tests skipped), its first :data:`MAX_DOC_CHARS` characters;
* ``"headers"``: one document per C header, or a ValueError saying the system has none (install e.g. ``libc6-dev``);
* ``"wiki+stdlib"``: the embedded wiki (``languages``) and the stdlib interleaved so that each holds about half of
  the characters streamed so far.

Held-out split **by file**: a file is held out when ``unit_hash("code", kind, relative path) < heldout_fraction``, so
no part of a held-out file is ever trained on. Document ids: ``CODE_ID_BASE + index`` (stdlib) and
``HEADER_ID_BASE + index`` (headers), the index into the sorted file list; they never collide with wiki ids.
``Document.lang`` is ``"py"`` or ``"c"``; ``Document.title`` the relative path.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from workbench.data.code_files import (CODE_ID_BASE, CODE_LICENCE, HEADER_ID_BASE, MAX_DOC_CHARS, code_files,
                                       code_fingerprint_key, header_roots, stdlib_root)
from workbench.data.corpus_spec import CorpusSpec, Document, WIKI_ID_STRIDE, WIKI_LANGUAGES, in_split, unit_hash

__all__ = ["CODE_ID_BASE", "CODE_LICENCE", "HEADER_ID_BASE", "MAX_DOC_CHARS", "code_document", "code_files",
           "code_fingerprint_key", "header_roots", "is_heldout_file", "iter_code", "stdlib_root"]

def is_heldout_file(kind: str, name: str, heldout_fraction: float) -> bool:
    """Whether file ``name`` (relative) of ``kind`` is held out: a hash of the name, never of its contents."""
    return unit_hash("code", kind, name) < heldout_fraction


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")[:MAX_DOC_CHARS].strip()
    except (UnicodeDecodeError, OSError):
        return ""  # a few stdlib files are latin-1 test fixtures: skipped


def code_document(kind: str, index: int) -> Document:
    """The document of file ``index`` (sorted order) of ``kind``."""
    name, path = code_files(kind)[index]
    base = CODE_ID_BASE if kind == "py" else HEADER_ID_BASE
    return Document(doc_id=base + index, text=_read(path), lang=kind, title=name)


def _iter_kind(kind: str, spec: CorpusSpec) -> Iterator[Document]:
    files = code_files(kind)
    keyed = sorted((hashlib.blake2b(f"{spec.seed}\x1f{name}".encode(), digest_size=8).digest(), i)
                   for i, (name, _) in enumerate(files)
                   if in_split(is_heldout_file(kind, name, spec.heldout_fraction), spec.split))
    for _, i in keyed:
        doc = code_document(kind, i)
        if doc.text:
            yield doc


def _interleave(a: Iterator[Document], b: Iterator[Document]) -> Iterator[Document]:
    """Documents of ``a`` and ``b``, each next one from the stream that has given fewer characters so far."""
    chars = [0, 0]
    streams = [a, b]
    live = [True, True]
    while any(live):
        i = 0 if (live[0] and (not live[1] or chars[0] <= chars[1])) else 1
        try:
            doc = next(streams[i])
        except StopIteration:
            live[i] = False
            continue
        chars[i] += len(doc.text)
        yield doc


def iter_code(spec: CorpusSpec) -> Iterator[Document]:
    """The documents of a code source (see the module docstring)."""
    if spec.source == "stdlib":
        return _iter_kind("py", spec)
    if spec.source == "headers":
        code_files("c")  # the clear error now, not at the first next()
        return _iter_kind("c", spec)
    if spec.source == "wiki+stdlib":
        from workbench.data.corpus_sources import iter_wiki

        return _interleave(iter_wiki(CorpusSpec.from_dict({**spec.to_dict(), "source": "wiki"})),
                           _iter_kind("py", spec))
    raise ValueError(f"unknown code source {spec.source!r}: 'stdlib', 'headers' or 'wiki+stdlib'")


assert CODE_ID_BASE == len(WIKI_LANGUAGES) * WIKI_ID_STRIDE, "code ids must start after the wiki's"
