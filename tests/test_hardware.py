"""What the machine offers torch: the bf16 probe that picks low-precision selection, and thread scoping."""
from __future__ import annotations

import pytest
import torch

from workbench.core.hardware import fast_bf16_matmul, torch_threads
from workbench.sae.train import TrainConfig


@pytest.mark.parametrize("avx512_bf16,amx,fast", [(False, False, False), (True, False, True), (False, True, True)])
def test_bf16_is_used_only_where_the_cpu_multiplies_it_natively(monkeypatch, avx512_bf16, amx, fast):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert fast_bf16_matmul("cpu") is fast
    # the trainer's automatic selection precision follows the probe; an explicit choice overrides it
    assert TrainConfig(device="cpu").resolved_selection_dtype == (torch.bfloat16 if fast else None)
    assert TrainConfig(device="cpu", selection_dtype="bfloat16").resolved_selection_dtype == torch.bfloat16
    assert TrainConfig(device="cpu", selection_dtype="float32").resolved_selection_dtype is None


@pytest.mark.parametrize("available,native,fast", [(True, True, True), (True, False, False), (False, True, False)])
def test_bf16_on_cuda_only_where_the_gpu_has_native_bf16(monkeypatch, available, native, fast):
    # a pre-Ampere GPU (V100, T4) emulates bf16: the probe must not pick it there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    assert fast_bf16_matmul("cuda") is fast


def test_bf16_probe_by_device_type():
    assert fast_bf16_matmul("meta") is False


def test_torch_threads_scopes_and_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with torch_threads(0):
            pass
    assert torch.get_num_threads() == before
