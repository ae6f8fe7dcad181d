"""What a corpus is: :class:`CorpusSpec` (where the text comes from, which languages and split, its fingerprint),
the :class:`Document` and :class:`PackedBatch` types, and the hash that splits documents into train and held-out.
The document-id scheme and the split rule are described in :mod:`workbench.data.corpus`."""
from __future__ import annotations

import hashlib
import json
import operator
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.core.errors import ConfigError
from workbench.core.config import known_fields_only
from workbench.data.assets import ASSETS

WIKI_LANGUAGES: tuple[str, ...] = ("en", "es", "fr")
WIKI_ID_STRIDE = 1_000_000
LOCAL_EXTENSIONS: tuple[str, ...] = (".txt", ".jsonl", ".parquet")
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
# Bump when the document stream for an unchanged spec changes (ids, order, splitting, packing inputs):
# it is part of the fingerprint, so caches keyed by it are invalidated.
CORPUS_FORMAT_VERSION = 1
# Code sources (workbench.data.code_corpus): the interpreter's stdlib, the system's C headers, and wiki + stdlib mixed.
CODE_SOURCES: tuple[str, ...] = ("stdlib", "headers", "wiki+stdlib")

SOURCE_HELP = (
    "source must be 'wiki' (the embedded Wikipedia summaries), 'hf:<dataset name>' (a Hugging Face "
    "dataset) or a path to a .txt / .jsonl / .parquet file or a directory of such files"
)


# ----------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class CorpusSpec:
    """Where the text comes from and which part of it to use.

    ``languages`` only applies to ``source="wiki"``; ``text_field`` to .jsonl / .parquet / HF sources;
    ``hf_config`` / ``hf_split`` / ``hf_revision`` to HF sources. ``split`` is ``"train"``, ``"heldout"`` or
    ``"all"``. ``hf_revision`` pins the dataset to a Hub revision (a commit sha, tag or branch), passed to
    ``datasets.load_dataset(revision=...)`` and part of the fingerprint; None follows the default branch, so the
    fingerprint cannot see the dataset change on the Hub.
    """

    source: str = "wiki"
    languages: tuple[str, ...] = WIKI_LANGUAGES
    split: str = "train"
    heldout_fraction: float = 0.05
    seed: int = 0
    text_field: str = "text"
    hf_config: str | None = None
    hf_split: str = "train"
    hf_revision: str | None = None

    def __post_init__(self) -> None:
        source = os.fspath(self.source) if isinstance(self.source, os.PathLike) else self.source
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"CorpusSpec.source={self.source!r} is empty or not a string: {SOURCE_HELP}")
        object.__setattr__(self, "source", source)
        langs = (self.languages,) if isinstance(self.languages, str) else tuple(self.languages)
        if not langs:
            raise ConfigError(f"CorpusSpec.languages is empty: pick one or more of {', '.join(WIKI_LANGUAGES)}")
        unknown = [lang for lang in langs if lang not in WIKI_LANGUAGES]
        if unknown:
            raise ConfigError(
                f"Unknown language(s) {', '.join(map(repr, unknown))}: the embedded corpus has "
                f"{', '.join(WIKI_LANGUAGES)}; use e.g. languages=('en', 'es')"
            )
        object.__setattr__(self, "languages", tuple(dict.fromkeys(langs)))  # de-duplicated, order kept
        if self.split not in SPLITS:
            raise ConfigError(f"CorpusSpec.split={self.split!r} is not one of {', '.join(map(repr, SPLITS))}")
        if not (0.0 <= float(self.heldout_fraction) <= 1.0):
            raise ConfigError(f"CorpusSpec.heldout_fraction={self.heldout_fraction} must be between 0 and 1")
        object.__setattr__(self, "heldout_fraction", float(self.heldout_fraction))
        try:
            if isinstance(self.seed, bool):
                raise TypeError
            object.__setattr__(self, "seed", operator.index(self.seed))
        except TypeError:
            raise ConfigError(f"CorpusSpec.seed={self.seed!r} must be an int") from None
        if self.hf_revision is not None and (not isinstance(self.hf_revision, str) or not self.hf_revision.strip()):
            raise ConfigError(f"CorpusSpec.hf_revision={self.hf_revision!r} must be a non-empty string (a commit sha, "
                              f"tag or branch of the dataset's Hub repository) or None", param="hf_revision")
        if self.kind == "hf" and not self.hf_name:
            raise ConfigError(f"CorpusSpec.source={source!r} names no dataset: write 'hf:<dataset name>'")

    @property
    def kind(self) -> str:
        """``"wiki"``, ``"code"`` (one of :data:`CODE_SOURCES`), ``"hf"`` or ``"local"``."""
        if self.source == "wiki":
            return "wiki"
        if self.source in CODE_SOURCES:
            return "code"
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
        if d["hf_revision"] is None:  # absent unless set, so specs saved before the field existed compare equal
            del d["hf_revision"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusSpec:
        """Rebuild a spec from :meth:`to_dict` output (missing keys take their defaults)."""
        d = known_fields_only(cls, d, "CorpusSpec field(s)")
        if "languages" in d and not isinstance(d["languages"], str):
            d["languages"] = tuple(d["languages"])
        return cls(**d)

    def fingerprint(self) -> str:
        """A short, stable SHA-256 hex (16 chars) of everything that determines the document stream.

        Covers the fields that matter for this kind of source, the pinned asset hashes (wiki) or each
        file's relative path, size and mtime (local), and :data:`CORPUS_FORMAT_VERSION`. Deterministic
        across processes; used to key caches of harvested activations. HF sources are keyed by name,
        config and split, and ``hf_revision`` when set (without one, a dataset revised on the Hub keeps its
        fingerprint).
        """
        key: dict[str, Any] = {"version": CORPUS_FORMAT_VERSION, "kind": self.kind, "split": self.split}
        if self.split != "all":
            key["heldout_fraction"] = self.heldout_fraction
        if self.kind == "wiki":
            langs = sorted(self.languages)  # the interleaved order does not depend on the listing order
            key.update(languages=langs, seed=self.seed, assets={lang: ASSETS[f"wiki-{lang}"].sha256 for lang in langs})
        elif self.kind == "code":
            from workbench.data.code_files import code_fingerprint_key

            key.update(source=self.source, code=code_fingerprint_key(self.source, self.seed))
            if self.source == "wiki+stdlib":
                langs = sorted(self.languages)
                key.update(languages=langs, assets={lang: ASSETS[f"wiki-{lang}"].sha256 for lang in langs})
        elif self.kind == "hf":
            key.update(name=self.hf_name, config=self.hf_config, hf_split=self.hf_split, text_field=self.text_field)
            if self.hf_revision is not None:  # only when set: unpinned specs keep the fingerprints they had
                key["revision"] = self.hf_revision
        else:
            root, files = local_files(self)
            key.update(
                path=str(root),
                text_field=self.text_field,
                files=[[relative_name(f, root), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
            )
        blob = json.dumps(key, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def describe(self) -> str:
        """A one-line human description, used in error messages."""
        if self.kind == "wiki":
            return f"embedded wiki corpus ({'+'.join(self.languages)}, split={self.split!r})"
        if self.kind == "code":
            return f"code corpus {self.source!r} (split={self.split!r})"
        if self.kind == "hf":
            rev = f", revision={self.hf_revision!r}" if self.hf_revision else ""
            return (f"HF dataset {self.hf_name!r} (config={self.hf_config!r}, split={self.hf_split!r}/{self.split!r}"
                    f"{rev})")
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
def unit_hash(*parts: str) -> float:
    """A deterministic hash of ``parts`` mapped to [0, 1)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_heldout(key: str | int, heldout_fraction: float, lang: str | None = None) -> bool:
    """Whether a document is in the held-out split.

    ``key`` is the article title (dict key of the wiki JSON) with its ``lang`` for the embedded wiki,
    or the ``doc_id`` for local / HF sources.
    """
    if lang is not None:
        return unit_hash("wiki", lang, str(key)) < heldout_fraction
    return unit_hash("doc", str(int(key))) < heldout_fraction


def in_split(heldout: bool, split: str) -> bool:
    return split == "all" or heldout == (split == "heldout")


# ------------------------------------------------------------------------------------- local files
def relative_name(path: Path, root: Path) -> str:
    return path.name if root.is_file() else path.relative_to(root).as_posix()


def local_files(spec: CorpusSpec) -> tuple[Path, list[Path]]:
    """The resolved root and its data files (sorted), or a ValueError naming the problem and the fix."""
    root = Path(spec.source).expanduser()
    if not root.exists():
        raise ConfigError(f"Corpus source {spec.source!r}: no such file or directory. {SOURCE_HELP}")
    root = root.resolve()
    if root.is_file():
        if root.suffix.lower() not in LOCAL_EXTENSIONS:
            raise ConfigError(
                f"Corpus source {spec.source!r}: unsupported extension {root.suffix or '(none)'!r}; "
                f"expected one of {', '.join(LOCAL_EXTENSIONS)} (convert the file, or {SOURCE_HELP})"
            )
        return root, [root]
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_EXTENSIONS
         and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ConfigError(
            f"Corpus source {spec.source!r} is a directory with no {' / '.join(LOCAL_EXTENSIONS)} files: "
            f"expected at least one document file in it"
        )
    return root, files
