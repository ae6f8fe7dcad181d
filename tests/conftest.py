"""Shared fixtures: the real embedded model and a small real activation store, built once per session.

Both live in the workbench cache (``WORKBENCH_HOME``), keyed by spec, so reruns reuse them.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMALL_TOKENS = 16_384


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of many small tensor ops: one torch thread (OpenMP barriers make them up to 10x slower with two
    threads on a loaded 2-core machine, measured). Restores the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gemma():
    from workbench.data.models import load_model

    return load_model("gemma-3-270m", device="cpu")


@pytest.fixture(scope="session")
def small_spec():
    from workbench.data.corpus import CorpusSpec
    from workbench.data.harvest import HarvestSpec

    return HarvestSpec(model="gemma-3-270m", n_tokens=SMALL_TOKENS, corpus=CorpusSpec(source="wiki"))


@pytest.fixture(scope="session")
def small_store(gemma, small_spec):
    from workbench.data.harvest import HarvestConfig, harvest_cached

    return harvest_cached(small_spec, model=gemma, config=HarvestConfig(progress=False, shard_contexts=64))
