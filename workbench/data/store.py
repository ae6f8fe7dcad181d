"""The on-disk activation store: a crash-safe writer and memory-bounded readers.

A store is a directory::

    manifest.json          # config, versions, shard list with sha256 + sizes, ``complete`` flag
    progress.jsonl         # one fsync'd JSON record per completed shard (the writer's journal)
    .writer.lock           # held (flock) by the one live writer
    shards/
        00000.tokens.npy                       int32   [n_ctx, ctx]
        00000.doc_ids.npy                      int64   [n_ctx, ctx]
        00000.positions.npy                    int32   [n_ctx, ctx]
        00000.acts.blocks-6-hook_resid_post.npy  float16 (or uint16 holding bfloat16 bits) [n_ctx*ctx, d]
        00001. ...

Every file is plain ``.npy`` (``np.save``), so any shard can be memory-mapped with
``np.load(f, mmap_mode="r", allow_pickle=False)``; nothing is ever pickled. bfloat16 activations are
stored as ``uint16`` and re-viewed as ``torch.bfloat16`` on read.

Crash safety: each shard file is written to ``.<name>.tmp``, fsync'd and renamed into place; the shard
counts only once its record (sha256 + size of every file) is appended to ``progress.jsonl`` and fsync'd.
A :class:`StoreWriter` reopened on the same directory resumes at the first unrecorded shard, removes
leftovers and rewrites them; given identical inputs the shard files are byte-identical whether or not the
run was interrupted. :meth:`StoreWriter.finalize` writes the complete manifest.

Reading: :class:`ActivationStore` checks sizes on open (cheap, catches truncation), verifies each file's
sha256 lazily the first time this process reads it, and streams ``[batch, d]`` tensors with
:meth:`ActivationStore.iter_batches` (sequential or shuffled through a bounded multi-shard buffer).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from workbench.core.persist import read_tagged_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ActivationStore",
    "ShardRecord",
    "StoreError",
    "StoreWriter",
    "hook_file_name",
    "store_size_bytes",
]

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


class StoreError(ValueError):
    """A store is missing, corrupt, truncated, incomplete or incompatible; the message names the file and the fix."""


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


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


# ----------------------------------------------------------------------------------------------------------
# writer


class StoreWriter:
    """Write an activation store shard by shard; resumable after a crash (even ``kill -9``).

    Opening a directory that already holds a compatible partial store resumes it: :attr:`n_complete_shards`
    says how many shards are done (the harvester skips ``n_complete_shards * shard_contexts`` contexts) and
    the next :meth:`write_shard` must use that index. A compatible *complete* store opens with
    :attr:`is_complete` true; :meth:`finalize` then just returns it. An incompatible store, or a non-empty
    directory that is not a store, raises :class:`StoreError`.

    Only one writer may hold a directory at a time (an OS file lock, released automatically if the process
    dies). Use as a context manager or call :meth:`close` to release it without finalizing.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        model_name: str,
        hooks: list[str],
        d_model: dict[str, int] | int,
        context_size: int,
        dtype: str = "float16",
        shard_contexts: int = 512,
        corpus: dict | None = None,
        corpus_fingerprint: str | None = None,
        extra: dict | None = None,
        prepend_bos: bool = True,
    ):
        self.path = Path(path)
        hooks = list(hooks)
        if not hooks or not all(isinstance(h, str) and h for h in hooks):
            raise ValueError(f"hooks must be a non-empty list of hook names, got {hooks!r}")
        if len(set(hooks)) != len(hooks):
            raise ValueError(f"hooks contain duplicates: {hooks!r}")
        if isinstance(d_model, Mapping):
            missing = [h for h in hooks if h not in d_model]
            unknown = [h for h in d_model if h not in hooks]
            if missing or unknown:
                raise ValueError(f"d_model keys must match hooks: missing {missing}, unknown {unknown}")
            d_map = {h: int(d_model[h]) for h in hooks}
        else:
            d_map = {h: int(d_model) for h in hooks}
        if any(d <= 0 for d in d_map.values()):
            raise ValueError(f"d_model must be positive, got {d_map}")
        if int(context_size) <= 0 or int(shard_contexts) <= 0:
            raise ValueError("context_size and shard_contexts must be positive")
        for name, obj in [("corpus", corpus), ("extra", extra)]:
            try:
                json.dumps(obj)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{name} must be JSON-serialisable: {e}") from None

        self.model_name = str(model_name)
        self.hooks = hooks
        self.d_model = d_map
        self.context_size = int(context_size)
        self.dtype = _normalise_dtype(dtype)
        self.shard_contexts = int(shard_contexts)
        self.prepend_bos = bool(prepend_bos)
        self.hook_files = _hook_files(hooks)
        self._torch_dtype = _TORCH_DTYPE[self.dtype]
        self._lock = None
        self._closed = False

        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "hooks": self.hooks,
            "hook_files": self.hook_files,
            "d_model": self.d_model,
            "dtype": self.dtype,
            "context_size": self.context_size,
            "shard_contexts": self.shard_contexts,
            "prepend_bos": self.prepend_bos,
            "corpus": corpus,
            "corpus_fingerprint": corpus_fingerprint,
        }
        config = json.loads(json.dumps(config))  # compare like with like against a manifest read from disk

        self.path.mkdir(parents=True, exist_ok=True)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            leftovers = [
                p.name
                for p in self.path.iterdir()
                if p.name not in (LOCK, f".{MANIFEST}.tmp")
                and not (p.name == SHARD_DIR and p.is_dir() and not any(p.iterdir()))
            ]
            if leftovers:
                raise StoreError(
                    f"{self.path} is not empty and holds no {MANIFEST} (found {sorted(leftovers)[:5]}): it is not "
                    "an activation store. Pick another output directory (--out) or empty this one."
                )
        self._acquire_lock()
        try:
            self._open(config, extra or {})
        except BaseException:
            self.close()
            raise

    # -- setup ----------------------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise StoreError(
                f"{self.path / LOCK}: another writer (in this or another process) holds this store. Wait for it "
                "to finish, or pick another output directory (--out)."
            ) from None
        self._lock = lock

    def _open(self, config: dict, extra: dict) -> None:
        manifest_path = self.path / MANIFEST
        if manifest_path.exists():
            old = read_tagged_json(manifest_path, format=FORMAT, what="an activation-store manifest",
                                   max_version=FORMAT_VERSION, error=StoreError,
                                   fix=f"pick another --out or delete {self.path}")
            diffs = []
            for key, want in config.items():
                have = old.get(key)
                if key == "corpus" and (config["corpus_fingerprint"] or old.get("corpus_fingerprint")):
                    continue  # the fingerprint decides; the spec dict may carry cosmetic fields
                if have != want:
                    diffs.append(f"{key}: store has {have!r}, requested {want!r}")
            if diffs:
                raise StoreError(
                    f"{self.path} already holds an incompatible activation store ("
                    + "; ".join(diffs)
                    + f"). Pick another output directory (--out) or delete {self.path} to start over."
                )
            self.manifest = old
            if old.get("versions") != (now := _versions()):
                warnings.warn(
                    f"resuming {self.path} under different library versions ({old.get('versions')} -> {now}); "
                    "shards may not be byte-identical to an uninterrupted run",
                    stacklevel=3,
                )
            self.manifest.setdefault("extra", {}).update(extra)
            if old.get("complete"):
                self._records = [ShardRecord.from_json(s) for s in old["shards"]]
                self.is_complete = True
                _check_sizes(
                    self.path, self._records, f"Delete {self.path} and harvest again, or pick another --out."
                )
                return
            self.manifest.setdefault("resumed", []).append(_now())
        else:
            self.manifest = {
                **config,
                "complete": False,
                "created": _now(),
                "versions": _versions(),
                "n_contexts": 0,
                "n_tokens": 0,
                "shards": [],
                "extra": dict(extra),
            }
        self.is_complete = False
        records, torn = _read_progress(self.path)
        _check_sizes(
            self.path,
            records,
            f"A shard recorded as complete was damaged; delete {self.path} and harvest again.",
        )
        if torn:
            self._rewrite_progress(records)
        self._records = records
        self._remove_leftovers()
        (self.path / SHARD_DIR).mkdir(exist_ok=True)
        _write_json(manifest_path, self.manifest)

    def _rewrite_progress(self, records: Sequence[ShardRecord]) -> None:
        data = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records)
        _atomic_write_bytes(self.path / PROGRESS, data.encode())

    def _remove_leftovers(self) -> None:
        """Delete temp files and files of shards that were never recorded (a crash mid-shard)."""
        keep = {rel for r in self._records for rel in r.files}
        shard_dir = self.path / SHARD_DIR
        if shard_dir.is_dir():
            for p in shard_dir.iterdir():
                rel = f"{SHARD_DIR}/{p.name}"
                if p.is_file() and rel not in keep and (p.name.endswith(".tmp") or p.name.endswith(".npy")):
                    p.unlink()
        for p in self.path.iterdir():
            if p.name.endswith(".tmp") and p.is_file():
                p.unlink()

    # -- properties -----------------------------------------------------------------------------------------

    @property
    def n_complete_shards(self) -> int:
        """Shards fully written and recorded; the next :meth:`write_shard` index."""
        return len(self._records)

    @property
    def n_complete_contexts(self) -> int:
        """Contexts in the completed shards (the harvester skips this many)."""
        return sum(r.n_contexts for r in self._records)

    # -- writing --------------------------------------------------------------------------------------------

    def write_shard(
        self,
        index: int,
        tokens: Any,
        doc_ids: Any,
        positions: Any,
        acts: Mapping[str, torch.Tensor | np.ndarray],
    ) -> None:
        """Validate, convert to the store dtype, write atomically and record one shard.

        ``tokens``/``doc_ids``/``positions``: integer ``[n_ctx, context_size]`` with
        ``1 <= n_ctx <= shard_contexts`` (only the final shard may be shorter). ``acts``: one float array per
        hook, ``[n_ctx*ctx, d]`` or ``[n_ctx, ctx, d]``. Raises ValueError on any shape/dtype mismatch and if
        a value overflows the store dtype (float16 saturates at 65504: use ``dtype="bfloat16"``).
        """
        self._check_open()
        if self.is_complete:
            raise StoreError(f"{self.path} is already complete ({self.n_complete_shards} shards); nothing to write.")
        if int(index) != self.n_complete_shards:
            raise ValueError(
                f"write_shard index {index} out of order: the store has {self.n_complete_shards} complete shards, "
                f"so the next index is {self.n_complete_shards}"
            )
        if self._records and self._records[-1].n_contexts < self.shard_contexts:
            raise ValueError(
                f"shard {index - 1} had {self._records[-1].n_contexts} < shard_contexts={self.shard_contexts} "
                "contexts, so it must be the last one; call finalize()"
            )
        ctx = self.context_size
        tok = _as_int_array(tokens, "tokens", np.dtype("<i4"))
        doc = _as_int_array(doc_ids, "doc_ids", np.dtype("<i8"))
        pos = _as_int_array(positions, "positions", np.dtype("<i4"))
        if tok.ndim != 2 or tok.shape[1] != ctx or not 1 <= tok.shape[0] <= self.shard_contexts:
            raise ValueError(
                f"tokens must be [n_ctx, {ctx}] with 1 <= n_ctx <= shard_contexts={self.shard_contexts}, "
                f"got {list(tok.shape)}"
            )
        for name, arr in [("doc_ids", doc), ("positions", pos)]:
            if arr.shape != tok.shape:
                raise ValueError(f"{name} shape {list(arr.shape)} does not match tokens shape {list(tok.shape)}")
        n_ctx = tok.shape[0]
        missing = [h for h in self.hooks if h not in acts]
        unknown = [h for h in acts if h not in self.hooks]
        if missing or unknown:
            raise ValueError(f"acts keys must be the store hooks {self.hooks}: missing {missing}, unknown {unknown}")
        converted = {h: self._convert_acts(h, acts[h], n_ctx) for h in self.hooks}

        files = _shard_files(index, self.hook_files)
        arrays: dict[str, np.ndarray] = {"tokens": tok, "doc_ids": doc, "positions": pos}
        arrays.update({f"acts:{h}": converted[h] for h in self.hooks})
        (self.path / SHARD_DIR).mkdir(exist_ok=True)
        record_files: dict[str, dict[str, Any]] = {}
        for role, rel in files.items():
            record_files[rel] = self._save_atomic(self.path / rel, arrays[role])
        _fsync_dir(self.path / SHARD_DIR)
        self._append_record(ShardRecord(index=int(index), n_contexts=n_ctx, files=record_files))

    def _convert_acts(self, hook: str, x: Any, n_ctx: int) -> np.ndarray:
        d = self.d_model[hook]
        rows = n_ctx * self.context_size
        if isinstance(x, np.ndarray):
            if not np.issubdtype(x.dtype, np.floating):
                raise ValueError(f"acts[{hook!r}] must be floating point, got numpy dtype {x.dtype}")
            t = torch.from_numpy(np.ascontiguousarray(x))
        elif isinstance(x, torch.Tensor):
            if not x.is_floating_point():
                raise ValueError(f"acts[{hook!r}] must be floating point, got {x.dtype}")
            t = x.detach()
        else:
            raise ValueError(f"acts[{hook!r}] must be a torch.Tensor or numpy array, got {type(x).__name__}")
        if t.ndim == 3:
            if tuple(t.shape[:2]) != (n_ctx, self.context_size) or t.shape[2] != d:
                raise ValueError(
                    f"acts[{hook!r}]: expected shape [{n_ctx}, {self.context_size}, {d}] (d_model={d}), "
                    f"got {list(t.shape)}"
                )
            t = t.reshape(rows, d)
        elif t.ndim == 2:
            if t.shape[1] != d:
                raise ValueError(f"acts[{hook!r}]: expected d_model={d}, got {t.shape[1]} (shape {list(t.shape)})")
            if t.shape[0] != rows:
                raise ValueError(
                    f"acts[{hook!r}]: expected {rows} rows (n_ctx={n_ctx} x context_size={self.context_size}), "
                    f"got {t.shape[0]}"
                )
        else:
            raise ValueError(f"acts[{hook!r}]: expected [n_ctx*ctx, {d}] or [n_ctx, ctx, {d}], got {list(t.shape)}")
        out = t.to(self._torch_dtype).cpu().contiguous()
        if not bool(torch.isfinite(out).all()):
            src_bad = int((~torch.isfinite(t)).sum())
            if src_bad:
                raise ValueError(f"acts[{hook!r}] contains {src_bad} NaN/inf values; refusing to store them")
            big = float(t.abs().max())
            raise ValueError(
                f"acts[{hook!r}]: values up to {big:.4g} overflow {self.dtype} (max {_FP16_MAX:g}); "
                "harvest with dtype='bfloat16' instead"
            )
        if self.dtype == "bfloat16":
            return out.view(torch.int16).numpy().view(np.dtype("<u2"))
        return out.numpy()

    def _save_atomic(self, path: Path, arr: np.ndarray) -> dict[str, Any]:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            w = _HashingWriter(f)
            arr = np.ascontiguousarray(arr)
            np.lib.format.write_array_header_1_0(w, np.lib.format.header_data_from_array_1_0(arr))
            w.write(memoryview(arr.reshape(-1).view(np.uint8)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return {"size": w.size, "sha256": w.sha.hexdigest()}

    def _append_record(self, record: ShardRecord) -> None:
        line = (json.dumps(record.to_json(), sort_keys=True) + "\n").encode()
        fd = os.open(self.path / PROGRESS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._records.append(record)

    # -- finishing ------------------------------------------------------------------------------------------

    def finalize(self, extra: dict | None = None) -> "ActivationStore":
        """Write the complete manifest (shard list, totals, ``complete: true``), release the lock, open the store."""
        self._check_open()
        if not self._records:
            raise StoreError(f"{self.path}: no shards written; nothing to finalize.")
        if extra:
            json.dumps(extra)
            self.manifest.setdefault("extra", {}).update(extra)
        if not self.is_complete:
            n_ctx = self.n_complete_contexts
            self.manifest.update(
                shards=[r.to_json() for r in self._records],
                n_contexts=n_ctx,
                n_tokens=n_ctx * self.context_size,
                complete=True,
                finished=_now(),
            )
        _write_json(self.path / MANIFEST, self.manifest)
        self.is_complete = True
        self.close()
        return ActivationStore.open(self.path, verify="size")

    def close(self) -> None:
        """Release the writer lock (the store stays resumable). Idempotent."""
        if self._lock is not None:
            try:
                self._lock.release()
            finally:
                self._lock = None
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"this StoreWriter for {self.path} is closed; open a new one to resume")

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else f"{self.n_complete_shards} shards done"
        return f"StoreWriter({str(self.path)!r}, {self.model_name}, hooks={self.hooks}, {state})"


# ----------------------------------------------------------------------------------------------------------
# reader


class ActivationStore:
    """Read-only access to a finished (or, with ``allow_incomplete``, partial) store; use :meth:`open`."""

    def __init__(self, path: Path, manifest: dict, records: list[ShardRecord], verify: str):
        self.path = path
        self.manifest = manifest
        self._records = records
        self._verify_mode = verify
        self.hooks: list[str] = list(manifest["hooks"])
        self._d = {h: int(manifest["d_model"][h]) for h in self.hooks}
        self._hook_files = dict(manifest.get("hook_files") or _hook_files(self.hooks))
        self.context_size: int = int(manifest["context_size"])
        self.dtype: str = manifest["dtype"]
        self.model_name: str = manifest["model_name"]
        self.prepend_bos: bool = bool(manifest.get("prepend_bos", manifest.get("extra", {}).get("prepend_bos", True)))
        counts = np.array([r.n_contexts for r in records], dtype=np.int64)
        self._ctx_starts = np.concatenate([[0], np.cumsum(counts)])
        self._token_cache: dict[str, np.ndarray] = {}

    # -- opening --------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | os.PathLike, verify: str = "size", *, allow_incomplete: bool = False
    ) -> "ActivationStore":
        """Open a store directory (or its manifest.json).

        ``verify``: ``"size"`` (default) checks every file exists with its recorded size; ``"full"`` also
        checks every sha256 now; ``"none"`` checks nothing, also skipping the lazy per-file checksum on read.
        ``allow_incomplete``: open an interrupted harvest, reading the shards recorded so far.
        """
        if verify not in ("size", "full", "none"):
            raise ValueError(f"verify must be 'size', 'full' or 'none', got {verify!r}")
        root = Path(path)
        if root.is_file() and root.name == MANIFEST:
            root = root.parent
        if not root.exists():
            raise StoreError(f"{root}: no such directory. Harvest activations into it first (--out {root}).")
        if not root.is_dir():
            raise StoreError(f"{root} is a file, not an activation store directory.")
        mpath = root / MANIFEST
        if not mpath.exists():
            raise StoreError(
                f"{root} is not an activation store: it has no {MANIFEST}. Point at the directory a harvest wrote "
                "(its --out), or harvest into this one first."
            )
        manifest = read_tagged_json(mpath, format=FORMAT, what="an activation-store manifest",
                                    max_version=FORMAT_VERSION, error=StoreError,
                                    fix="the store is corrupt or was not written by workbench; harvest again")
        required = ["model_name", "hooks", "d_model", "dtype", "context_size", "shard_contexts"]
        if missing := [k for k in required if k not in manifest]:
            raise StoreError(f"{mpath} lacks keys {missing}; the store is corrupt. Harvest again.")
        if manifest.get("complete"):
            try:
                records = [ShardRecord.from_json(s) for s in manifest.get("shards", [])]
            except (KeyError, TypeError, ValueError) as e:
                msg = f"{mpath}: malformed shard list ({e!r}); the store is corrupt. Harvest again."
                raise StoreError(msg) from None
        else:
            records, _ = _read_progress(root)
            if not allow_incomplete:
                raise StoreError(
                    f"{root}: the harvest did not finish ({len(records)} shards recorded, manifest says "
                    "complete=false). Rerun the same harvest command with the same --out to resume it, or open "
                    "with allow_incomplete=True to read the shards written so far."
                )
            manifest = {**manifest, "shards": [r.to_json() for r in records]}
            manifest["n_contexts"] = sum(r.n_contexts for r in records)
            manifest["n_tokens"] = manifest["n_contexts"] * int(manifest["context_size"])
        if not records:
            raise StoreError(f"{root}: the store holds no shards.")
        store = cls(root, manifest, records, verify)
        for i, rec in enumerate(records):
            if rec.index != i:
                raise StoreError(f"{mpath}: shard list entry {i} has index {rec.index}; the manifest is corrupt.")
            names = set(_shard_files(rec.index, store._hook_files).values())
            if names != set(rec.files):
                raise StoreError(
                    f"{mpath}: shard {rec.index} record lists {sorted(rec.files)}, expected {sorted(names)}; "
                    "the manifest is corrupt. Harvest again into a fresh --out."
                )
        if verify in ("size", "full"):
            _check_sizes(root, records, "The store is damaged: harvest again into a fresh --out.")
        if verify == "full":
            store.verify()
        return store

    # -- metadata -------------------------------------------------------------------------------------------

    @property
    def d_model(self) -> int:
        """The activation width; with several hooks of different widths use :meth:`d_in`."""
        ds = set(self._d.values())
        if len(ds) != 1:
            raise StoreError(f"hooks have different widths {self._d}; use store.d_in(hook)")
        return ds.pop()

    def d_in(self, hook: str | None = None) -> int:
        """Width of one hook's activations."""
        return self._d[self._hook(hook)]

    @property
    def n_contexts(self) -> int:
        return int(self._ctx_starts[-1])

    @property
    def n_tokens(self) -> int:
        return self.n_contexts * self.context_size

    @property
    def n_shards(self) -> int:
        return len(self._records)

    @property
    def shard_contexts(self) -> int:
        return int(self.manifest["shard_contexts"])

    def _skip_bos(self, exclude_bos: bool) -> bool:
        return bool(exclude_bos and self.prepend_bos)

    def n_rows(self, exclude_bos: bool = True) -> int:
        """Rows :meth:`iter_batches` streams in total (before ``start_tokens``/``max_tokens``/``drop_last``)."""
        per_ctx = self.context_size - (1 if self._skip_bos(exclude_bos) else 0)
        return self.n_contexts * per_ctx

    def _hook(self, hook: str | None) -> str:
        if hook is None:
            if len(self.hooks) == 1:
                return self.hooks[0]
            raise ValueError(f"the store has several hooks {self.hooks}; pass hook=")
        if hook not in self._d:
            raise ValueError(f"hook {hook!r} is not in this store; it has {self.hooks}")
        return hook

    # -- integrity ------------------------------------------------------------------------------------------

    def _file(self, shard: int, role: str) -> tuple[Path, dict[str, Any]]:
        rel = _shard_files(shard, self._hook_files)[role]
        return self.path / rel, self._records[shard].files[rel]

    @staticmethod
    def _cache_key(p: Path, info: Mapping[str, Any]) -> tuple | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return (str(p.resolve()), st.st_size, st.st_mtime_ns, info["sha256"])

    def _corrupt(self, p: Path, info: Mapping[str, Any], got: str) -> StoreError:
        return StoreError(
            f"{p}: checksum mismatch (sha256 {got}, recorded {info['sha256']}); the shard file is corrupt. "
            "Harvest again into a fresh --out (or restore the file from a copy)."
        )

    def _ensure_verified(self, shard: int, role: str) -> None:
        if self._verify_mode == "none":
            return
        p, info = self._file(shard, role)
        key = self._cache_key(p, info)
        if key is None:
            raise StoreError(f"{p}: shard file is missing. Harvest again into a fresh --out.")
        if key in _VERIFIED:
            return
        if key[1] != info["size"]:
            raise StoreError(
                f"{p}: {key[1]} bytes, expected {info['size']} (truncated). Harvest again into a fresh --out."
            )
        got = _sha256_file(p)
        if got != info["sha256"]:
            raise self._corrupt(p, info, got)
        _VERIFIED.add(key)

    def verify(self) -> None:
        """sha256 every file; raises :class:`StoreError` naming the first corrupt one."""
        for rec in self._records:
            for role in _shard_files(rec.index, self._hook_files):
                p, info = self._file(rec.index, role)
                key = self._cache_key(p, info)
                if key is None:
                    raise StoreError(f"{p}: shard file is missing. Harvest again into a fresh --out.")
                got = _sha256_file(p)
                if got != info["sha256"]:
                    raise self._corrupt(p, info, got)
                _VERIFIED.add(key)

    # -- raw shard access -----------------------------------------------------------------------------------

    def _load(self, shard: int, role: str) -> np.ndarray:
        """Memory-map one shard file (after the lazy checksum)."""
        self._ensure_verified(shard, role)
        p, _ = self._file(shard, role)
        try:
            return np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise StoreError(f"{p}: cannot read shard file ({e}). Harvest again into a fresh --out.") from None

    def _read_acts_into(self, shard: int, hook: str, out: np.ndarray) -> None:
        """Read one shard's activations for ``hook`` straight into ``out`` ([rows, d] storage dtype),
        hashing the same bytes on the way when this process has not verified the file yet."""
        p, info = self._file(shard, f"acts:{hook}")
        key = self._cache_key(p, info)
        if key is None:
            raise StoreError(f"{p}: shard file is missing. Harvest again into a fresh --out.")
        check = self._verify_mode != "none" and key not in _VERIFIED
        want_dtype = _NP_STORAGE[self.dtype]
        want_shape = (self._records[shard].n_contexts * self.context_size, self._d[hook])
        with open(p, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dt = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dt = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
            except ValueError as e:
                raise StoreError(f"{p}: not a valid .npy file ({e}). Harvest again into a fresh --out.") from None
            if tuple(shape) != want_shape or fortran or np.dtype(dt) != want_dtype:
                raise StoreError(
                    f"{p}: holds {np.dtype(dt)} {list(shape)}, expected {want_dtype} {list(want_shape)}; the store "
                    "is inconsistent. Harvest again into a fresh --out."
                )
            header_len = f.tell()
            h = None
            if check:
                f.seek(0)
                h = hashlib.sha256(f.read(header_len))
            mv = memoryview(out.reshape(-1).view(np.uint8))
            n, off = mv.nbytes, 0
            while off < n:
                got = f.readinto(mv[off : off + _CHUNK])
                if not got:
                    raise StoreError(f"{p}: file ends after {header_len + off} bytes (truncated). Harvest again.")
                if h is not None:
                    h.update(mv[off : off + got])
                off += got
            if h is not None:
                if f.read(1):
                    h.update(b"x")  # trailing junk: force a mismatch
                digest = h.hexdigest()
                if digest != info["sha256"]:
                    raise self._corrupt(p, info, digest)
                _VERIFIED.add(key)

    def _to_torch(self, arr: np.ndarray, dtype: torch.dtype | None, device: Any) -> torch.Tensor:
        if self.dtype == "bfloat16":
            t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(arr)
        if device is not None and torch.device(device).type != "cpu":
            t = t.to(device)
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        return t

    # -- streaming ------------------------------------------------------------------------------------------

    def iter_batches(
        self,
        batch_size: int,
        *,
        hook: str | None = None,
        shuffle: bool = True,
        seed: int = 0,
        exclude_bos: bool = True,
        dtype: torch.dtype | None = torch.float32,
        device: Any = "cpu",
        drop_last: bool = True,
        start_tokens: int = 0,
        max_tokens: int | None = None,
        buffer_shards: int = 4,
    ) -> Iterator[torch.Tensor]:
        """Stream activations as ``[batch_size, d]`` tensors.

        The stream is a fixed sequence of rows: sequential = shard/context/position order; shuffled = shards
        in a seeded random order, taken ``buffer_shards`` at a time, each group's rows in a seeded random
        permutation (a batch may straddle two groups). It depends only on (seed, buffer_shards,
        exclude_bos, the store). ``start_tokens`` skips that many rows of the stream (whole groups are skipped
        without reading them), ``max_tokens`` caps the rows after that, so a trainer that has consumed
        ``k`` batches resumes with ``start_tokens=k*batch_size``. ``exclude_bos`` drops position 0 of each
        context when the store's contexts begin with BOS (``prepend_bos`` in the manifest). ``dtype=None``
        keeps the storage dtype. Memory: one buffer of ``buffer_shards`` shards (1 shard when sequential)
        plus the batch.
        """
        hook = self._hook(hook)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if start_tokens < 0 or (max_tokens is not None and max_tokens < 0):
            raise ValueError("start_tokens and max_tokens must be >= 0")
        if buffer_shards <= 0:
            raise ValueError(f"buffer_shards must be positive, got {buffer_shards}")
        ctx = self.context_size
        skip_bos = self._skip_bos(exclude_bos)
        per_ctx = ctx - (1 if skip_bos else 0)
        n_shards = self.n_shards

        if shuffle:
            order = np.random.default_rng([seed, 0]).permutation(n_shards)
            group_size = buffer_shards
        else:
            order = np.arange(n_shards)
            group_size = 1
        groups = [order[i : i + group_size] for i in range(0, n_shards, group_size)]
        group_rows = [sum(self._records[s].n_contexts for s in g) * per_ctx for g in groups]
        bounds = np.concatenate([[0], np.cumsum(group_rows)]).astype(np.int64)
        total = int(bounds[-1])
        start = min(int(start_tokens), total)
        end = total if max_tokens is None else min(total, start + int(max_tokens))
        return self._stream(
            hook, groups, bounds, start, end, batch_size, shuffle, seed, skip_bos, dtype, device, drop_last
        )

    def _stream(
        self,
        hook: str,
        groups: list[np.ndarray],
        bounds: np.ndarray,
        start: int,
        end: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        skip_bos: bool,
        dtype: torch.dtype | None,
        device: Any,
        drop_last: bool,
    ) -> Iterator[torch.Tensor]:
        if start >= end:
            return
        d, ctx = self._d[hook], self.context_size
        per_ctx = ctx - (1 if skip_bos else 0)
        copies = (dtype is not None and dtype != _TORCH_DTYPE[self.dtype]) or torch.device(device).type != "cpu"
        scratch = np.empty((batch_size, d), dtype=_NP_STORAGE[self.dtype]) if copies else None
        max_group_rows = max(sum(self._records[s].n_contexts for s in g) * ctx for g in groups)
        buf: np.ndarray | None = None
        pending: list[np.ndarray] = []
        pending_n = 0

        for gi, group in enumerate(groups):
            g0, g1 = int(bounds[gi]), int(bounds[gi + 1])
            if g1 <= start:
                continue
            if g0 >= end:
                break
            if buf is None:
                buf = np.empty((max_group_rows, d), dtype=_NP_STORAGE[self.dtype])
            off = 0
            for s in group:
                rows = self._records[s].n_contexts * ctx
                self._read_acts_into(int(s), hook, buf[off : off + rows])
                off += rows
            n_valid = g1 - g0
            if skip_bos:  # buffer row of the j-th non-BOS row: skip every row at a multiple of ctx
                j = np.arange(n_valid, dtype=np.int64)
                valid = j + j // per_ctx + 1
            else:
                valid = None
            if shuffle:
                perm = np.random.default_rng([seed, 1, gi]).permutation(n_valid)
                rows_idx = valid[perm] if valid is not None else perm
            else:
                rows_idx = valid  # None = contiguous
            i, hi = max(start, g0) - g0, min(end, g1) - g0
            while i < hi:
                take = min(batch_size - pending_n, hi - i)
                if pending_n == 0 and take == batch_size and scratch is not None:
                    # whole batch: gather into a reused scratch; _to_torch's dtype/device conversion copies it out
                    if rows_idx is None:
                        np.copyto(scratch, buf[i : i + take])
                    else:
                        np.take(buf, rows_idx[i : i + take], axis=0, out=scratch)
                    i += take
                    yield self._to_torch(scratch, dtype, device)
                    continue
                piece = buf[i : i + take].copy() if rows_idx is None else buf[rows_idx[i : i + take]]
                i += take
                if pending_n == 0 and take == batch_size:
                    yield self._to_torch(piece, dtype, device)
                    continue
                pending.append(piece)
                pending_n += take
                if pending_n == batch_size:
                    batch = np.concatenate(pending)
                    pending, pending_n = [], 0
                    yield self._to_torch(batch, dtype, device)
        if pending_n and not drop_last:
            yield self._to_torch(np.concatenate(pending), dtype, device)

    # -- random access --------------------------------------------------------------------------------------

    def _locate(self, context_idx: Any) -> tuple[int, int]:
        if isinstance(context_idx, (bool, np.bool_)) or not isinstance(context_idx, (int, np.integer)):
            raise ValueError(f"context_idx must be an int, got {context_idx!r}")
        c = int(context_idx)
        if not 0 <= c < self.n_contexts:
            raise ValueError(f"context_idx {c} out of range [0, {self.n_contexts})")
        shard = int(np.searchsorted(self._ctx_starts, c, side="right") - 1)
        return shard, c - int(self._ctx_starts[shard])

    def _check_position(self, position: Any) -> int:
        if isinstance(position, (bool, np.bool_)) or not isinstance(position, (int, np.integer)):
            raise ValueError(f"position must be an int, got {position!r}")
        p = int(position)
        if not 0 <= p < self.context_size:
            raise ValueError(f"position {p} out of range [0, {self.context_size})")
        return p

    def _all(self, role: str) -> np.ndarray:
        if role not in self._token_cache:
            parts = [self._load(r.index, role) for r in self._records]
            arr = np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])
            arr.flags.writeable = False
            self._token_cache[role] = arr
        return self._token_cache[role]

    def token_ids(self) -> np.ndarray:
        """All token ids, ``[n_contexts, ctx]`` int32 (read-only; read once per store object and cached).
        For one shard without concatenating use :meth:`shard_arrays`."""
        return self._all("tokens")

    def doc_ids(self) -> np.ndarray:
        """All document ids, ``[n_contexts, ctx]`` int64 (read-only, cached)."""
        return self._all("doc_ids")

    def positions(self) -> np.ndarray:
        """All in-document positions, ``[n_contexts, ctx]`` int32 (read-only, cached)."""
        return self._all("positions")

    def shard_arrays(self, shard: int) -> dict[str, np.ndarray]:
        """Memory-mapped ``tokens``/``doc_ids``/``positions`` of one shard."""
        if not 0 <= int(shard) < self.n_shards:
            raise ValueError(f"shard {shard} out of range [0, {self.n_shards})")
        return {role: self._load(int(shard), role) for role in ("tokens", "doc_ids", "positions")}

    def context(
        self, context_idx: int, position: int | None = None, window: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """Token ids, doc ids and in-document positions of one context, or of ``window=(before, after)``
        tokens around ``position`` (clipped to the context).

        Returns ``{"context_idx", "start", "stop", "tokens", "doc_ids", "positions", "index"}`` where
        ``tokens`` etc. cover ``[start, stop)`` and ``index`` is ``position`` relative to ``start`` (None when
        no position was given).
        """
        shard, local = self._locate(context_idx)
        start, stop, index = 0, self.context_size, None
        if position is not None:
            p = self._check_position(position)
            index = p
            if window is not None:
                try:
                    before, after = (int(w) for w in window)
                except (TypeError, ValueError):
                    raise ValueError(f"window must be (before, after), got {window!r}") from None
                if before < 0 or after < 0:
                    raise ValueError(f"window must be non-negative, got {window!r}")
                start, stop = max(0, p - before), min(self.context_size, p + after + 1)
                index = p - start
        elif window is not None:
            raise ValueError("window needs a position")
        arrs = self.shard_arrays(shard)
        out: dict[str, Any] = {"context_idx": int(context_idx), "start": start, "stop": stop, "index": index}
        for role, arr in arrs.items():
            out[role] = np.array(arr[local, start:stop])
        return out

    def activations(
        self, context_idx: int, hook: str | None = None, *, dtype: torch.dtype | None = torch.float32
    ) -> torch.Tensor:
        """``[ctx, d]`` activations of one context (``dtype=None`` keeps the storage dtype)."""
        hook = self._hook(hook)
        shard, local = self._locate(context_idx)
        mm = self._load(shard, f"acts:{hook}")
        ctx = self.context_size
        return self._to_torch(np.array(mm[local * ctx : (local + 1) * ctx]), dtype, "cpu")

    def text(
        self,
        context_idx: int,
        position: int,
        tokenizer: Any,
        before: int = 10,
        after: int = 4,
        *,
        same_doc: bool = False,
    ) -> dict[str, Any]:
        """Decode the window around one token: ``{"before", "token", "after", "tokens", "index"}``.

        ``tokens`` are the window's per-token strings (``convert_ids_to_tokens`` when the tokenizer has it,
        else ``decode`` of each id) and ``index`` is the token's place in that list. ``same_doc`` clips the
        window to the token's own document (contexts may pack several documents).
        """
        c = self.context(context_idx, position, window=(before, after))
        ids = [int(t) for t in c["tokens"]]
        k = c["index"]
        if same_doc:
            docs = c["doc_ids"]
            lo, hi = k, k + 1
            while lo > 0 and docs[lo - 1] == docs[k]:
                lo -= 1
            while hi < len(ids) and docs[hi] == docs[k]:
                hi += 1
            ids, k = ids[lo:hi], k - lo

        def decode(seq: list[int]) -> str:
            return tokenizer.decode(seq) if seq else ""

        if hasattr(tokenizer, "convert_ids_to_tokens"):
            toks = [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]
        else:
            toks = [decode([i]) for i in ids]
        return {
            "before": decode(ids[:k]),
            "token": decode([ids[k]]),
            "after": decode(ids[k + 1 :]),
            "tokens": toks,
            "index": k,
        }

    # -- summaries ------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Key facts for display: sizes, shape, dtype, hooks, provenance."""
        m = self.manifest
        return {
            "path": str(self.path),
            "model_name": self.model_name,
            "hooks": list(self.hooks),
            "d_model": dict(self._d),
            "dtype": self.dtype,
            "context_size": self.context_size,
            "n_contexts": self.n_contexts,
            "n_tokens": self.n_tokens,
            "n_shards": self.n_shards,
            "shard_contexts": self.shard_contexts,
            "prepend_bos": self.prepend_bos,
            "size_bytes": store_size_bytes(self.path),
            "complete": bool(m.get("complete")),
            "created": m.get("created"),
            "corpus": m.get("corpus"),
            "corpus_fingerprint": m.get("corpus_fingerprint"),
            "versions": m.get("versions"),
            "extra": m.get("extra", {}),
        }

    def norm_stats(self, hook: str | None = None, max_tokens: int = 100_000) -> dict[str, float]:
        """Statistics of the L2 norm ``||x||`` over the first ``max_tokens`` non-BOS rows (sequential), plus
        the norm of the mean vector."""
        hook = self._hook(hook)
        norms: list[torch.Tensor] = []
        total = torch.zeros(self._d[hook], dtype=torch.float64)
        n = 0
        for batch in self.iter_batches(
            8192, hook=hook, shuffle=False, drop_last=False, max_tokens=max_tokens, dtype=torch.float32
        ):
            norms.append(batch.norm(dim=1))
            total += batch.sum(0, dtype=torch.float64)
            n += batch.shape[0]
        if n == 0:
            raise StoreError(f"{self.path}: no rows to compute norms from")
        x = torch.cat(norms).double()
        return {
            "hook": hook,
            "n": n,
            "mean": float(x.mean()),
            "std": float(x.std()) if n > 1 else 0.0,
            "min": float(x.min()),
            "max": float(x.max()),
            "median": float(x.median()),
            "mean_vector_norm": float((total / n).norm()),
        }

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.path)!r}, {self.model_name}, hooks={self.hooks}, "
            f"{self.n_contexts}x{self.context_size} tokens, {self.dtype})"
        )
