"""Reading an activation store: :class:`ActivationStore` (layout and guarantees in :mod:`workbench.data.store`)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from workbench.core.persist import read_tagged_json
from workbench.data.store_format import (_VERIFIED, FORMAT, FORMAT_VERSION, MANIFEST, ShardRecord, StoreError, _CHUNK,
                                         _NP_STORAGE, _TORCH_DTYPE, _check_sizes, _hook_files, _read_progress,
                                         _sha256_file, _shard_files, store_size_bytes)

__all__ = ["ActivationStore"]


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
            mv = out.reshape(-1).view(np.uint8).data  # a flat byte memoryview of out
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
            valid: np.ndarray | None = None
            if skip_bos:  # buffer row of the j-th non-BOS row: skip every row at a multiple of ctx
                j = np.arange(n_valid, dtype=np.int64)
                valid = j + j // per_ctx + 1
            rows_idx: np.ndarray | None
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

    def norm_stats(self, hook: str | None = None, max_tokens: int = 100_000) -> dict[str, Any]:
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
