"""What this machine offers torch: the default device and model dtype, fast bf16 matmuls, and the CPU thread count
for a block of work.

- :func:`default_device`: CUDA when a GPU is visible, else MPS on Apple hardware, else the CPU; what ``device=None``
  means for models (and so, through :func:`workbench.sae.interop.as_sae`, for the SAE and the feature pass).
- :func:`default_model_dtype`: bfloat16 model weights on a CUDA GPU with native bf16 (Ampere or newer), float32
  everywhere else (the CPU, where the numbers of this project are measured, stays exactly as it was; MPS, where
  several ops lack bf16 kernels). ``load_model(dtype="float32")`` opts out.

- :func:`fast_bf16_matmul` says whether bf16 matrix products run natively (a CUDA GPU with native bf16, or a CPU with
  AVX512-BF16 or AMX). The trainer's selection GEMM and the feature pass's TopK candidates use bf16 only then: on a CPU that
  merely *supports* bf16 (plain AVX512, emulated in software) it is slower than float32.
- :func:`torch_threads`: generation, attribution, steering and the feature pass run many small ops, where one
  thread is often as fast as several and far faster when the machine is oversubscribed; each takes a ``threads``
  setting and runs its work inside this context, which restores the previous count afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


def mps_available() -> bool:
    """Whether torch sees an Apple GPU (the MPS backend, built and usable)."""
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except Exception:  # an old or odd torch build
        return False


def default_device() -> torch.device:
    """CUDA if a GPU is visible, else MPS on Apple hardware, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_model_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype of model weights when none is asked for: bfloat16 on a CUDA device with native bf16, else float32."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


def fast_bf16_matmul(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matmuls are fast on ``device``: a CUDA device with native bf16 (Ampere or newer), or a CPU with
    AVX512-BF16 / AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # private probes may change between torch versions
            pass
    return False


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads (None: unchanged), restoring the previous count after it."""
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
