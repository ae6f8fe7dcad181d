"""Training over several processes launched by ``torchrun`` (docs/methods.md §18).

Two ways to use N processes, both on ``torch.distributed`` (NCCL on CUDA, gloo on CPU):

* **data parallel** (``mode="data"``, the default): every rank builds every SAE with the same seed, reads the same
  global batch from the source and trains on its own contiguous slice of it (:func:`rank_slice`); gradients are
  averaged over ranks before clipping and the optimiser step, so every rank holds the same weights, and they equal
  a single-process run with the same global batch up to float rounding. Firing statistics (dead latents) are
  OR-ed and the logged losses, L0 and FVU averaged over ranks. Rank 0 alone writes logs, checkpoints and the
  final SAEs; every rank resumes from them.
* **runs spread over ranks** (``mode="runs"``): for a multi-SAE pass (sizes x sparsities x architectures), rank r
  trains the SAEs ``i`` with ``i % N == r`` (:func:`runs_of_rank`) on the whole batch, as sparsify spreads layers
  over ranks. Each SAE keeps the seed of its position in the full list, so it equals the SAE a one-process pass
  over the same list trains. Each rank checkpoints its own SAEs (``checkpoints/rank<r>-of-<N>``).

A script run without ``torchrun`` sees one process: nothing changes. :func:`init_from_env` starts the process
group from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) when the caller has not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from workbench.core.processes import init_from_env, process_group

__all__ = ["MODES", "Distributed", "init_from_env", "rank_slice", "runs_of_rank"]

MODES = ("data", "runs")


def rank_slice(n_rows: int, rank: int, world_size: int) -> slice:
    """The contiguous rows of a global batch of ``n_rows`` that ``rank`` trains on (pure).

    The batch must split evenly: unequal slices would weight the ranks' gradients unequally in the average."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    if n_rows % world_size:
        raise ValueError(f"a global batch of {n_rows} rows does not split over {world_size} processes: use a "
                         f"batch_size divisible by the number of processes")
    per = n_rows // world_size
    return slice(rank * per, (rank + 1) * per)


def runs_of_rank(n_runs: int, rank: int, world_size: int) -> list[int]:
    """The SAEs (positions in the list of runs) that ``rank`` trains when runs are spread over ranks (pure)."""
    if n_runs < world_size:
        raise ValueError(f"{n_runs} SAE(s) cannot be spread over {world_size} processes (each needs at least one): "
                         f"use mode='data', or fewer processes")
    return [i for i in range(n_runs) if i % world_size == rank]


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: ``rank`` of ``world_size``, and how the work is split (``mode``)."""

    rank: int = 0
    world_size: int = 1
    mode: str = "data"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown distributed mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in a world of {self.world_size} processes")

    @classmethod
    def current(cls, mode: str = "data") -> "Distributed":
        """The running process group (one process when there is none)."""
        rank, world_size = process_group()
        return cls(rank, world_size, mode)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def data_parallel(self) -> bool:
        return self.active and self.mode == "data"

    @property
    def writes_shared_files(self) -> bool:
        """True where shared outputs (train_config.json, data-parallel checkpoints and SAEs) are written."""
        return self.rank == 0 or self.mode == "runs"

    def local_rows(self, batch: Tensor) -> Tensor:
        """This rank's slice of a global batch (the whole batch unless data parallel)."""
        return batch[rank_slice(batch.shape[0], self.rank, self.world_size)] if self.data_parallel else batch

    def runs(self, n_runs: int) -> list[int]:
        """Positions of the runs this rank trains."""
        if self.active and self.mode == "runs":
            return runs_of_rank(n_runs, self.rank, self.world_size)
        return list(range(n_runs))

    # ----- collectives (no-ops unless data parallel) -----

    def average_gradients(self, params: Sequence[Tensor]) -> None:
        """Replace each parameter's gradient by its mean over ranks (one flat all-reduce)."""
        if not self.data_parallel:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def any_rank(self, mask: Tensor) -> Tensor:
        """Element-wise OR of a bool tensor over ranks."""
        if not self.data_parallel:
            return mask
        import torch.distributed as dist

        m = mask.to(torch.int32)
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
        return m.to(torch.bool)

    def mean(self, values: Tensor) -> Tensor:
        """Mean of a tensor over ranks."""
        if not self.data_parallel:
            return values
        import torch.distributed as dist

        out = values.clone()
        dist.all_reduce(out)
        return out / self.world_size

    def minimum(self, values: Tensor) -> Tensor:
        """Element-wise minimum over ranks (BatchTopK's threshold estimate)."""
        if not self.data_parallel:
            return values
        import torch.distributed as dist

        out = values.clone()
        dist.all_reduce(out, op=dist.ReduceOp.MIN)
        return out

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when it is True on any (a stop request reaching one rank stops all at one step)."""
        if not self.active:
            return flag
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()
