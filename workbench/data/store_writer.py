"""Writing an activation store shard by shard, crash-safe and resumable (the layout and crash-safety rules are
described in :mod:`workbench.data.store`)."""
from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from workbench.core.persist import atomic_write, atomic_write_bytes, fsync_dir, is_temp_name, read_tagged_json
from workbench.data.store_reader import ActivationStore
from workbench.data.store_format import (FORMAT, FORMAT_VERSION, LOCK, MANIFEST, PROGRESS, SHARD_DIR, ShardRecord,
                                         StoreError, _FP16_MAX, _HashingWriter, _TORCH_DTYPE, _as_int_array,
                                         _check_sizes, _hook_files, _normalise_dtype, _now, _read_progress,
                                         _shard_files, _versions, _write_json, write_error)

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = ["StoreWriter"]


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
        self._lock: BaseFileLock | None = None
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
                if p.name != LOCK and not is_temp_name(p.name)
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
        atomic_write_bytes(self.path / PROGRESS, data.encode())

    def _remove_leftovers(self) -> None:
        """Delete temp files and files of shards that were never recorded (a crash mid-shard)."""
        keep = {rel for r in self._records for rel in r.files}
        shard_dir = self.path / SHARD_DIR
        if shard_dir.is_dir():
            for p in shard_dir.iterdir():
                rel = f"{SHARD_DIR}/{p.name}"
                if p.is_file() and rel not in keep and (is_temp_name(p.name) or p.name.endswith(".npy")):
                    p.unlink()
        for p in self.path.iterdir():
            if is_temp_name(p.name) and p.is_file():
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
        record_files: dict[str, dict[str, Any]] = {}
        target = self.path / SHARD_DIR
        try:
            target.mkdir(exist_ok=True)
            for role, rel in files.items():
                target = self.path / rel
                record_files[rel] = self._save_atomic(target, arrays[role])
            target = self.path / PROGRESS
            fsync_dir(self.path / SHARD_DIR)
            self._append_record(ShardRecord(index=int(index), n_contexts=n_ctx, files=record_files))
        except OSError as err:  # a full disk, a lost mount: leave no files of this shard, keep the store resumable
            for rel in files.values():
                (self.path / rel).unlink(missing_ok=True)
            needed = sum(int(a.nbytes) for a in arrays.values())
            raise write_error(err, target, needed, self.path, self.n_complete_shards) from err

    def adopt_shard(self, index: int, src_root: str | os.PathLike, record: ShardRecord) -> None:
        """Move the files of shard ``record`` of another store (same hooks and shard size, e.g. one rank's part of
        a harvest, :mod:`workbench.data.store_ranks`) into this one as shard ``index``: renamed, not copied, with
        their size and SHA-256 records. Resumable: a file already moved (its source gone, the destination of the
        recorded size present) counts as moved."""
        self._check_open()
        if int(index) != self.n_complete_shards:
            raise ValueError(f"adopt_shard index {index} out of order: the next index is {self.n_complete_shards}")
        src_root = Path(src_root)
        local, final = _shard_files(record.index, self.hook_files), _shard_files(int(index), self.hook_files)
        (self.path / SHARD_DIR).mkdir(exist_ok=True)
        files: dict[str, dict[str, Any]] = {}
        for role, rel in local.items():
            info = record.files.get(rel)
            src, dst = src_root / rel, self.path / final[role]
            if info is None:
                raise StoreError(f"{src_root}: shard {record.index} has no {role} file ({rel}): that store is "
                                 f"damaged; delete it and rerun the harvest")
            if src.exists():
                os.replace(src, dst)
            elif not (dst.exists() and dst.stat().st_size == info["size"]):
                raise StoreError(f"{src} is missing and {dst} does not hold it: the shard was lost; delete "
                                 f"{src_root} and rerun the harvest")
            files[final[role]] = dict(info)
        fsync_dir(self.path / SHARD_DIR)
        self._append_record(ShardRecord(index=int(index), n_contexts=record.n_contexts, files=files))

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
        arr = np.ascontiguousarray(arr)
        hashed: dict[str, Any] = {}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                w = _HashingWriter(f)
                np.lib.format.write_array_header_1_0(w, np.lib.format.header_data_from_array_1_0(arr))
                w.write(arr.reshape(-1).view(np.uint8).data)
                hashed.update(size=w.size, sha256=w.sha.hexdigest())

        atomic_write(path, write)
        return hashed

    def _append_record(self, record: ShardRecord) -> None:
        line = (json.dumps(record.to_json(), sort_keys=True) + "\n").encode()
        fd = os.open(self.path / PROGRESS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, "No space left on device (short write)", str(self.path / PROGRESS))
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # no torn record stays behind the next shard's
                raise
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
        try:
            _write_json(self.path / MANIFEST, self.manifest)
        except OSError as err:
            raise write_error(err, self.path / MANIFEST, 1 << 16, self.path, self.n_complete_shards) from err
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
