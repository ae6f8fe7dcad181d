"""The activation store's on-disk layout, shared by its writer (:mod:`workbench.data.store_writer`) and reader
(:mod:`workbench.data.store`): format tags, file names per shard and hook, the shard record of the journal,
and the size and checksum checks. See :mod:`workbench.data.store` for the layout itself.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from workbench.core.persist import atomic_write_bytes
from workbench.core.errors import InputError

FORMAT = "workbench-activation-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.jsonl"
LOCK = ".writer.lock"
SHARD_DIR = "shards"

_DTYPES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
_TORCH_DTYPE = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_NP_STORAGE = {"float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}
_FP16_MAX = 65504.0
_CHUNK = 1 << 22

_VERIFIED: set[tuple] = set()  # per-process cache of (path, size, mtime_ns, sha256) already hashed OK


class StoreError(InputError):
    """A store is missing, corrupt, truncated, incomplete or incompatible; the message names the file and the fix."""


class StoreWriteError(StoreError, OSError):
    """Writing a store failed (a full disk, no permission): the message names the file, the space needed and says
    the store resumes once the cause is fixed. Both a :class:`StoreError` and an ``OSError``; the command line
    exits with 1 (not 2: it is not a usage mistake)."""

    exit_code = 1


def _human(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit in ("B", "kB") else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} TB"


def write_error(err: OSError, path: Path, needed: int, store: Path, n_complete: int) -> StoreWriteError:
    """The :class:`StoreWriteError` for ``err`` raised while writing ``path`` (``needed`` bytes for the shard)."""
    import errno
    import shutil

    try:
        free = shutil.disk_usage(store).free
    except OSError:
        free = None
    room = f", {_human(free)} free there" if free is not None else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = f"no space left on device writing {path}: the shard needs {_human(needed)}{room}"
    else:
        cause = f"cannot write {path} ({err.strerror or err}; the shard needs {_human(needed)}{room})"
    return StoreWriteError(f"{cause}. Its temporary files were removed and the store keeps its {n_complete} complete "
                           f"shard(s): free space (or pick another --out) and rerun the same harvest to resume")


# ----------------------------------------------------------------------------------------------------------
# helpers


def _normalise_dtype(dtype: Any) -> str:
    if isinstance(dtype, torch.dtype):
        for name, td in _TORCH_DTYPE.items():
            if td == dtype:
                return name
    elif isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be 'float16' or 'bfloat16', got {dtype!r}")


def hook_file_name(hook: str) -> str:
    """File-name-safe TransformerLens hook name: ``blocks.6.hook_resid_post`` -> ``blocks-6-hook_resid_post``."""
    safe = re.sub(r"[^A-Za-z0-9_]+", "-", hook).strip("-")
    if not safe:
        raise ValueError(f"hook name {hook!r} has no usable characters")
    return safe


def _hook_files(hooks: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for i, hook in enumerate(hooks):
        name = hook_file_name(hook)
        if name in used:  # two hooks that differ only in punctuation: disambiguate by position
            name = f"{name}--{i}"
        used.add(name)
        out[hook] = name
    return out


def _shard_prefix(index: int) -> str:
    return f"{index:05d}"


def _shard_files(index: int, hook_files: Mapping[str, str]) -> dict[str, str]:
    """Role -> relative file name for one shard. Roles: tokens, doc_ids, positions, acts:<hook>."""
    p = _shard_prefix(index)
    files = {
        "tokens": f"{SHARD_DIR}/{p}.tokens.npy",
        "doc_ids": f"{SHARD_DIR}/{p}.doc_ids.npy",
        "positions": f"{SHARD_DIR}/{p}.positions.npy",
    }
    for hook, safe in hook_files.items():
        files[f"acts:{hook}"] = f"{SHARD_DIR}/{p}.acts.{safe}.npy"
    return files


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


class _HashingWriter:
    """File-like wrapper: np.save writes through it, so hashing costs no second read."""

    def __init__(self, f: io.BufferedWriter):
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        mv = memoryview(data).cast("B")
        self.sha.update(mv)
        self.size += mv.nbytes
        return self._f.write(mv)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for key, dist in [
        ("torch", "torch"),
        ("transformer_lens", "transformer-lens"),
        ("transformers", "transformers"),
        ("numpy", "numpy"),
        ("workbench", "workbench"),
    ]:
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def store_size_bytes(path: str | os.PathLike) -> int:
    """Total size in bytes of every regular file under ``path`` (0 if it does not exist)."""
    total = 0
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _as_int_array(x: Any, name: str, np_dtype: np.dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.size and np_dtype == np.int32:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < np.iinfo(np.int32).min or hi > np.iinfo(np.int32).max:
            raise ValueError(f"{name} values [{lo}, {hi}] do not fit in int32")
    return np.ascontiguousarray(arr, dtype=np_dtype)


@dataclass(frozen=True)
class ShardRecord:
    """One completed shard: its index, number of contexts, and {relative file: {"size", "sha256"}}."""

    index: int
    n_contexts: int
    files: dict[str, dict[str, Any]]

    def to_json(self) -> dict:
        return {"index": self.index, "n_contexts": self.n_contexts, "files": self.files}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ShardRecord":
        return cls(index=int(obj["index"]), n_contexts=int(obj["n_contexts"]), files=dict(obj["files"]))


def _check_sizes(root: Path, records: Sequence[ShardRecord], fix: str) -> None:
    for rec in records:
        for rel, info in rec.files.items():
            p = root / rel
            if not p.exists():
                raise StoreError(f"{p}: shard file is missing (shard {rec.index}). {fix}")
            size = p.stat().st_size
            if size != info["size"]:
                raise StoreError(
                    f"{p}: shard file is {size} bytes, expected {info['size']} (truncated or overwritten, "
                    f"shard {rec.index}). {fix}"
                )


def _read_progress(root: Path) -> tuple[list[ShardRecord], bool]:
    """Parse progress.jsonl; returns (records, torn) where torn means trailing junk was dropped."""
    path = root / PROGRESS
    if not path.exists():
        return [], False
    raw = path.read_bytes()
    records: list[ShardRecord] = []
    torn = False
    lines = raw.split(b"\n")
    for i, line in enumerate(lines):
        is_last = i == len(lines) - 1
        if not line.strip():
            continue
        try:
            if is_last:  # no trailing newline: the append never finished
                raise ValueError("unterminated record")
            rec = ShardRecord.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError) as e:
            if all(not rest.strip() for rest in lines[i + 1 :]):
                torn = True  # a torn final append after kill -9 / power loss: drop it
                break
            raise StoreError(
                f"{path}: line {i + 1} is not a valid shard record ({e}); the journal is corrupt. "
                "Delete the store directory and harvest again."
            ) from None
        if rec.index != len(records):
            raise StoreError(
                f"{path}: line {i + 1} records shard {rec.index}, expected {len(records)}; the journal is "
                "corrupt. Delete the store directory and harvest again."
            )
        records.append(rec)
    return records, torn
