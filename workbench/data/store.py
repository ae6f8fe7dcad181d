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

Crash safety: each shard file is written to a temporary name, fsync'd and renamed into place
(:func:`workbench.core.persist.atomic_write`); the shard counts only once its record (sha256 + size of every file) is appended to ``progress.jsonl`` and fsync'd.
A failed write (a full disk) removes the shard's temporary and unrecorded files and raises
:class:`StoreWriteError` (the file, the space needed); the store stays resumable.
A :class:`StoreWriter` reopened on the same directory resumes at the first unrecorded shard, removes
leftovers and rewrites them; given identical inputs the shard files are byte-identical whether or not the
run was interrupted. :meth:`StoreWriter.finalize` writes the complete manifest.

Reading: :class:`ActivationStore` checks sizes on open (cheap, catches truncation), verifies each file's
sha256 lazily the first time this process reads it, and streams ``[batch, d]`` tensors with
:meth:`ActivationStore.iter_batches` (sequential or shuffled through a bounded multi-shard buffer).
"""
from workbench.data.store_format import (FORMAT, FORMAT_VERSION, ShardRecord, StoreError, StoreWriteError,
                                         hook_file_name, store_size_bytes)
from workbench.data.store_reader import ActivationStore
from workbench.data.store_writer import StoreWriter

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ActivationStore",
    "ShardRecord",
    "StoreError",
    "StoreWriteError",
    "StoreWriter",
    "hook_file_name",
    "store_size_bytes",
]
