"""Which files make up the code corpus (:mod:`workbench.data.code_corpus`): the running interpreter's
standard-library ``.py`` files and the system's C headers, sorted by relative name, and the key that fingerprints
them. Kept apart from the document stream so that :class:`workbench.data.corpus_spec.CorpusSpec` can fingerprint a
code source without importing the stream."""
from __future__ import annotations

import functools
import hashlib
import sys
import sysconfig
from pathlib import Path

__all__ = ["CODE_ID_BASE", "CODE_LICENCE", "HEADER_ID_BASE", "MAX_DOC_CHARS", "code_files", "code_fingerprint_key",
           "header_roots", "stdlib_root"]

WIKI_ID_SPAN = 3 * 1_000_000  # the embedded wiki's ids: 3 languages x WIKI_ID_STRIDE (checked in code_corpus)
CODE_LICENCE = "PSF License Agreement (Python standard library sources); C headers: their own licences"
CODE_ID_BASE = WIKI_ID_SPAN                                 # 3,000,000
HEADER_ID_BASE = CODE_ID_BASE + 1_000_000                   # 4,000,000
MAX_DOC_CHARS = 6000
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "encodings"}  # encodings: tables


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def header_roots() -> list[Path]:
    """Folders searched for C headers (those that exist): ``/usr/include`` and Python's include folder."""
    roots = [Path("/usr/include"), Path(sysconfig.get_paths()["include"])]
    return [r for r in roots if r.is_dir()]


@functools.lru_cache(maxsize=4)
def code_files(kind: str) -> tuple[tuple[str, Path], ...]:
    """``(relative name, path)`` of every file of ``kind`` (``"py"`` or ``"c"``), sorted by name."""
    if kind == "py":
        root = stdlib_root()
        if not root.is_dir():
            raise ValueError(f"the interpreter's standard library {root} is not a folder: this Python ships no "
                             f"sources; use another interpreter or CorpusSpec(source='wiki')")
        found = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")
                 if not (set(p.relative_to(root).parts[:-1]) & _SKIP_DIRS) and not p.name.startswith("test_")]
    elif kind == "c":
        found = []
        for root in header_roots():
            found += [(f"{root.name}/{p.name}", p) for p in sorted(root.glob("*.h"))]
        if not found:
            raise ValueError("no C headers on this system (/usr/include/*.h and Python's include folder are empty or "
                             "missing): install them (e.g. `apt-get install libc6-dev python3-dev`) or use "
                             "CorpusSpec(source='stdlib')")
    else:
        raise ValueError(f"unknown code kind {kind!r}: 'py' or 'c'")
    return tuple(sorted(dict(found).items()))



def code_fingerprint_key(source: str, seed: int) -> dict:
    """What identifies a code source's document stream: the interpreter version, every file's name and size."""
    kind = "c" if source == "headers" else "py"
    files = code_files(kind)
    digest = hashlib.sha256("\n".join(f"{n}\t{p.stat().st_size}" for n, p in files).encode()).hexdigest()[:16]
    return {"python": sys.version.split()[0], "files": digest, "n_files": len(files), "seed": seed,
            "max_chars": MAX_DOC_CHARS}
