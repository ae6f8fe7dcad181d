"""One store harvested by several processes (``torchrun ... -m workbench harvest``), docs/methods.md §18.

The harvest's shards are numbered in the order of the packed corpus. With N ranks, rank r computes the shards
``i`` with ``i % N == r`` (:func:`shards_of_rank`) and writes them, in that order, into its own store beside the
final one (:func:`rank_store_dir`: ``<out>.rank<r>-of-<N>``), so each rank resumes on its own after a crash.
When every rank is done, rank 0 moves the shard files into the final store in global order
(:func:`merge_rank_stores`): files are renamed, not copied, and their recorded sizes and SHA-256 checksums carry
over, so the merged store is checksummed like any other and holds exactly what one process would have written.
A merge interrupted half-way resumes too: a shard already moved is recognised by its checksum record.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from workbench.data.store_format import ShardRecord, StoreError, _read_progress
from workbench.data.store_writer import StoreWriter

__all__ = ["merge_rank_stores", "rank_store_dir", "shards_of_rank"]


def shards_of_rank(n_shards: int, rank: int, world_size: int) -> list[int]:
    """The global shard indices rank ``rank`` of ``world_size`` harvests (pure)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    return list(range(rank, n_shards, world_size))


def rank_store_dir(out: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Where rank ``rank`` writes its shards of the store ``out``."""
    out = Path(out)
    return out.parent / f"{out.name}.rank{rank}-of-{world_size}"


def _records(root: Path) -> list[ShardRecord]:
    records, _ = _read_progress(root)
    return records


def merge_rank_stores(writer: StoreWriter, world_size: int, n_shards: int) -> None:
    """Move the shards of the rank stores of ``writer.path`` into it, in global order (resumable).

    ``writer`` is the final store's open writer; shards it already holds are skipped. Raises StoreError when a rank
    store lacks a shard it should hold (that rank did not finish: rerun the harvest to resume it)."""
    out = writer.path
    ranks = [rank_store_dir(out, r, world_size) for r in range(world_size)]
    records = [_records(p) for p in ranks]
    for index in range(writer.n_complete_shards, n_shards):
        rank, local = index % world_size, index // world_size
        if local >= len(records[rank]):
            raise StoreError(f"{ranks[rank]} holds {len(records[rank])} shard(s) but shard {index} (its shard {local}) "
                             f"is needed: rank {rank} did not finish; rerun the same harvest to resume it")
        writer.adopt_shard(index, ranks[rank], records[rank][local])
    for p in ranks:  # every shard moved: what is left are the rank stores' journals and manifests
        shutil.rmtree(p, ignore_errors=True)
