"""The process group ``torchrun`` starts, for code that runs in several processes (docs/methods.md §18).

A script run without ``torchrun`` is one process: :func:`process_group` says ``(0, 1)`` and nothing else changes.
"""
from __future__ import annotations

import os

import torch

__all__ = ["barrier", "init_from_env", "process_group"]


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Start the default process group from ``torchrun``'s environment if it is not running yet.

    Returns True when a group of more than one process is up. NCCL for CUDA devices, gloo otherwise."""
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE is set but {', '.join(missing)} are not: launch with torchrun (it sets them), "
                         f"or unset WORLD_SIZE for one process")
    is_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if is_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if is_cuda else "gloo")
    return dist.get_world_size() > 1


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) when no process group is running."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process of the group (nothing to wait for without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
