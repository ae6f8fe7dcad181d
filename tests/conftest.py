"""Shared fixtures: the real embedded model, a small real activation store, and a small real SAE with its feature
results on that store, each built once per session.

The model and the store live in the workbench cache (``WORKBENCH_HOME``), keyed by spec, so reruns reuse them.
Every test that needs one of them loads a real model, so it carries the ``slow`` marker (``-m "not slow"`` skips
them); :func:`pytest_collection_modifyitems` adds the marker to any test that uses a real-model fixture and forgot it.
Plain helpers shared by several modules are in ``helpers.py``.
"""
from __future__ import annotations

import functools
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMALL_TOKENS = 16_384

# Fixtures that load a real model (directly or through one of these); a test using any of them is ``slow``.
MODEL_FIXTURES = frozenset({"gemma", "small_store", "real_sae", "real_results"})


def pytest_collection_modifyitems(config, items):
    """Safety net for the ``slow`` marker: a test whose fixtures (transitively) include a real-model fixture is
    marked ``slow`` even if its module forgot to. Nothing is deselected here."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


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


@functools.lru_cache(maxsize=None)
def _real_test_sae(store_path: str, d_sae: int = 256, k: int = 16):
    """A small TopK SAE initialised from data (decoder rows = centred, normalised activations; b_dec = mean), then
    a few Adam steps: cheap, and its features are non-trivial (they fire on tokens like their seed token)."""
    import torch

    from workbench.data.store import ActivationStore
    from workbench.sae.model import SAE, SAEConfig, SAEMetadata

    store = ActivationStore.open(store_path)
    x = torch.cat(list(store.iter_batches(4096, shuffle=False, exclude_bos=True, drop_last=False)))
    scale = float((x.shape[1] / x.pow(2).sum(1).mean()).sqrt())
    xs = x * scale
    gen = torch.Generator().manual_seed(0)
    sae = SAE(SAEConfig("topk", x.shape[1], d_sae, k=k),
              SAEMetadata(model_name=store.model_name, hook_name=store.hooks[0], context_size=store.context_size))
    sae.init_from_data(xs[:4096], method="mean")
    with torch.no_grad():
        d = xs[torch.randperm(xs.shape[0], generator=gen)[:d_sae]] - sae.b_dec
        d = d / d.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(d)
        sae.W_enc.copy_(d.t())
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for _ in range(20):
        out = sae.training_loss(xs[torch.randint(0, xs.shape[0], (1024,), generator=gen)])
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        opt.step()
        opt.zero_grad()
        sae.apply_constraints(out)
    return sae.folded(scale).eval()


@pytest.fixture(scope="session")
def real_sae(small_store):
    """A small data-initialised TopK SAE (256 features, k=16) on the small store's hook."""
    return _real_test_sae(str(small_store.path))


@pytest.fixture(scope="session")
def real_results(small_store, real_sae, gemma, tmp_path_factory):
    """``compute_features`` of ``real_sae`` over the first ``helpers.ANALYSED_CONTEXTS`` contexts of the small
    store (the rest are held out), with logit effects from the real model."""
    from helpers import ANALYSED_CONTEXTS
    from workbench.analysis.features import FeatureConfig, compute_features

    out = tmp_path_factory.mktemp("real-features")
    cfg = FeatureConfig(max_tokens=ANALYSED_CONTEXTS * small_store.context_size, progress=False)
    return compute_features(small_store, real_sae, out, cfg, model=gemma, tokenizer=gemma.tokenizer)
