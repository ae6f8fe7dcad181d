"""Tests for workbench.analysis.features (the streaming analysis pass) and workbench.analysis.logits.

Synthetic where the truth must be known: a planted store read by an identity ReLU SAE (feature j = relu(x_j), exact
in bf16), so density, maxima, top-K contexts, histograms and bucket samples are checked against brute force on the
dense codes. Real where cheap: the session's small Gemma store with a small data-initialised TopK SAE, and the
real model's final norm and unembedding.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from workbench.analysis.feature_kernels import (BucketReservoir, SparseEncoder, bucket_index, hash_keys, merge_topk, shard_topk,
                                       sparse_encode)
from workbench.analysis.features import FeatureConfig, FeatureResults, compute_features, encode_contexts
from workbench.sae.model import SAE, SAEConfig

from helpers import ANALYSED_CONTEXTS, identity_sae, write_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_data(n_ctx: int = 24, ctx: int = 16, d: int = 6, seed: int = 0):
    """Activations on a grid of multiples of 0.25 (exact in bf16; many ties), ~40% non-zero, negatives too; the
    BOS position holds huge values that must be ignored; every context holds two documents."""
    rng = np.random.default_rng(seed)
    vals = rng.integers(1, 33, size=(n_ctx, ctx, d)) * 0.25
    mask = rng.random((n_ctx, ctx, d)) < 0.4
    acts = np.where(mask, vals, -rng.integers(0, 8, size=(n_ctx, ctx, d)) * 0.5).astype(np.float32)
    acts[:, 0, :] = 1000.0  # BOS
    acts[:, :, d - 1] = 0.0  # a dead feature
    tokens = rng.integers(2, 60, size=(n_ctx, ctx)).astype(np.int64)
    tokens[:, 0] = 1
    docs = np.repeat(np.arange(n_ctx)[:, None] * 2, ctx, 1)
    docs[:, ctx // 2:] += 1
    return acts, tokens, docs


# ----------------------------------------------------------------------------------------------------------------
# Pure pieces
# ----------------------------------------------------------------------------------------------------------------


def test_hash_keys_are_deterministic_distinct_and_uniform():
    f = torch.arange(50).repeat_interleave(2000)
    t = torch.arange(100_000) + (1 << 33)
    k1, k2 = hash_keys(f, t, seed=3), hash_keys(f, t, seed=3)
    assert torch.equal(k1, k2)
    assert int(k1.min()) >= 0 and int(k1.max()) < 2**32
    assert not torch.equal(k1, hash_keys(f, t, seed=4))
    assert torch.unique(k1).numel() > 99_990
    u = k1.double() / 2**32
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005


def test_bucket_index_is_linear_with_the_max_in_the_last_bucket():
    mx = torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0])
    v = torch.tensor([0.01, 0.2, 0.21, 1.99, 2.0])
    assert bucket_index(v, mx, 10).tolist() == [0, 1, 1, 9, 9]


def _brute_topk(feat, val, tok, d_sae, k, ctx=None):
    out = {}
    for f in range(d_sae):
        items = [(float(v), int(t)) for ff, v, t in zip(feat.tolist(), val.tolist(), tok.tolist()) if ff == f]
        if ctx is not None:
            best = {}
            for v, t in sorted(items, key=lambda e: (-e[0], e[1])):
                best.setdefault(t // ctx, (v, t))
            items = list(best.values())
        out[f] = sorted(items, key=lambda e: (-e[0], e[1]))[:k]
    return out


@pytest.mark.parametrize("ctx", [None, 8])
def test_streamed_topk_matches_brute_force(ctx):
    gen = torch.Generator().manual_seed(1)
    n, d_sae, k = 3000, 7, 5
    feat = torch.randint(0, d_sae, (n,), generator=gen)
    val = torch.randint(1, 20, (n,), generator=gen).float() / 4  # many ties
    tok = torch.arange(n)
    top_v = torch.full((d_sae, k), float("-inf"))
    top_t = torch.full((d_sae, k), -1, dtype=torch.long)
    for lo in range(0, n, 512):  # chunks of whole contexts (512 is a multiple of 8)
        sl = slice(lo, lo + 512)
        cand = val[sl] > top_v[:, -1][feat[sl]]
        sv, st = shard_topk(feat[sl][cand], val[sl][cand], tok[sl][cand], d_sae, k, ctx)
        top_v, top_t = merge_topk(top_v, top_t, sv, st)
    want = _brute_topk(feat, val, tok, d_sae, k, ctx)
    for f in range(d_sae):
        got = [(float(v), int(t)) for v, t in zip(top_v[f], top_t[f]) if t >= 0]
        assert got == want[f]


def test_bucket_reservoir_keeps_the_smallest_keys_whatever_the_chunking():
    gen = torch.Generator().manual_seed(2)
    n, n_cells, m = 5000, 13, 4
    cell = torch.randint(0, n_cells, (n,), generator=gen)
    tok = torch.arange(n)
    key = hash_keys(cell, tok)
    val = torch.rand(n, generator=gen)
    results = []
    for chunk in (n, 777, 50):
        res = BucketReservoir(n_cells, m)
        perm = torch.randperm(n, generator=gen) if chunk == 50 else torch.arange(n)  # order must not matter
        for lo in range(0, n, chunk):
            i = perm[lo:lo + chunk]
            res.update(cell[i], key[i], tok[i], val[i])
        results.append(res)
    for c in range(n_cells):
        idx = (cell == c).nonzero().squeeze(1)
        want = idx[torch.argsort(key[idx])[:m]]
        for res in results:
            assert sorted(res.tok[c].tolist()) == sorted(want.tolist())
            assert torch.equal(res.val[c].sort().values, val[want].sort().values)


def _random_sae(arch: str, d: int = 12, n: int = 40, seed: int = 0) -> SAE:
    kw = {"k": 5} if arch in ("topk", "batchtopk", "matryoshka") else {}
    sae = SAE(SAEConfig(arch, d, n, **kw), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(n, generator=gen) * 0.3)
        sae.b_dec.copy_(torch.randn(d, generator=gen) * 0.1)
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(torch.rand(n, generator=gen) * 0.5)
    return sae.eval()


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu", "batchtopk", "matryoshka"])
def test_sparse_encode_equals_dense_encode(arch):
    sae = _random_sae(arch)
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(5))
    dense = sae.encode(x).detach()
    for thr in (0.0, 0.2):
        rows, feats, vals = sparse_encode(sae, x, thr)
        got = torch.zeros_like(dense)
        got[rows, feats] = vals
        assert torch.equal(got, torch.where(dense > thr, dense, torch.zeros_like(dense)))
        key = rows * 40 + feats
        assert torch.all(key[1:] > key[:-1])  # sorted by (row, feature)


@pytest.mark.slow
def test_fast_topk_encoder_matches_exact_on_real_activations(small_store, real_sae):
    x = torch.cat([small_store.activations(c) for c in range(8)])
    r0, f0, v0 = SparseEncoder(real_sae, 0.0, fast=False)(x)
    r1, f1, v1 = SparseEncoder(real_sae, 0.0, fast=True)(x)
    assert torch.equal(r0, r1) and torch.equal(f0, f1)
    assert torch.allclose(v0, v1, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# The planted store: everything against brute force
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    acts, tokens, docs = planted_data()
    root = tmp_path_factory.mktemp("planted")
    store = write_store(root / "store", acts, tokens, docs)
    sae = identity_sae(acts.shape[2])
    cfg = FeatureConfig(top_k=5, n_buckets=4, per_bucket=3, n_hist_bins=8, context_before=3, context_after=2,
                        chunk_tokens=32, progress=False)
    res = compute_features(store, sae, root / "features", cfg, tokenizer=False)
    return {"acts": acts, "tokens": tokens, "docs": docs, "store": store, "sae": sae, "cfg": cfg, "res": res,
            "root": root}


def _dense_codes(acts: np.ndarray) -> np.ndarray:
    codes = np.maximum(acts, 0).astype(np.float32)
    codes[:, 0, :] = 0  # BOS excluded
    return codes


def test_planted_density_max_sum_histogram(planted):
    acts, res, cfg = planted["acts"], planted["res"], planted["cfg"]
    codes = _dense_codes(acts)
    n_ctx, ctx, d = codes.shape
    flat = codes.reshape(-1, d)
    assert res.n_tokens == n_ctx * (ctx - 1)
    assert res.count.tolist() == (flat > 0).sum(0).tolist()
    assert torch.allclose(res.density, torch.tensor((flat > 0).sum(0) / (n_ctx * (ctx - 1)), dtype=torch.float64))
    assert res.max_activation.tolist() == flat.max(0).tolist()
    assert torch.allclose(res.arrays["sum"], torch.tensor(flat.sum(0), dtype=torch.float64))
    assert res.count[d - 1] == 0 and (d - 1) not in res.alive().tolist()
    for f in range(d - 1):
        v = flat[:, f][flat[:, f] > 0]
        b = np.minimum(np.floor(v / v.max() * cfg.n_hist_bins), cfg.n_hist_bins - 1).astype(int)
        assert res.arrays["hist"][f].tolist() == np.bincount(b, minlength=cfg.n_hist_bins).tolist()
        h = res.histogram(f)
        assert len(h.edges) == cfg.n_hist_bins + 1 and h.edges[-1] == pytest.approx(float(v.max()))


def test_planted_top_contexts_and_windows(planted):
    acts, tokens, docs, res, cfg = planted["acts"], planted["tokens"], planted["docs"], planted["res"], planted["cfg"]
    codes = _dense_codes(acts)
    n_ctx, ctx, d = codes.shape
    for f in range(d - 1):
        per_ctx = [(float(codes[c, :, f].max()), c * ctx + int(np.argmax(codes[c, :, f]))) for c in range(n_ctx)
                   if codes[c, :, f].max() > 0]
        want = sorted(per_ctx, key=lambda e: (-e[0], e[1]))[: cfg.top_k]
        got = [(e.activation, e.context_idx * ctx + e.position) for e in res.top_examples(f)]
        assert got == want
        for e in res.top_examples(f):
            c, p = e.context_idx, e.position
            assert e.acts[e.index] == e.activation and e.token_ids[e.index] == int(tokens[c, p])
            for j, t in enumerate(e.token_ids):
                q = e.start + j
                assert 0 <= q < ctx and docs[c, q] == docs[c, p]  # clipped to the context and the document
                assert t == int(tokens[c, q]) and e.acts[j] == float(codes[c, q, f])
            lo = max(0, p - cfg.context_before)
            while docs[c, lo] != docs[c, p]:
                lo += 1
            assert e.start == lo


def test_planted_bucket_samples_are_the_smallest_hash_keys_of_each_bucket(planted):
    acts, res, cfg = planted["acts"], planted["res"], planted["cfg"]
    codes = _dense_codes(acts)
    d = codes.shape[2]
    flat = torch.from_numpy(codes.reshape(-1, d))
    for f in range(d - 1):
        v = flat[:, f]
        fire = (v > 0).nonzero().squeeze(1)
        b = bucket_index(v[fire], v.max().expand(fire.numel()), cfg.n_buckets)
        keys = hash_keys(torch.full_like(fire, f), fire, cfg.seed)
        buckets = res.buckets(f)
        assert sum(bk.count for bk in buckets) == int(res.count[f])
        for bi, bk in enumerate(buckets):
            sel = (b == bi).nonzero().squeeze(1)
            assert bk.count == sel.numel()
            want = fire[sel[torch.argsort(keys[sel])[: cfg.per_bucket]]]
            got = [e.context_idx * codes.shape[1] + e.position for e in bk.examples]
            assert sorted(got) == sorted(want.tolist())
            for e in bk.examples:
                assert bk.lo <= e.activation <= bk.hi + 1e-6 and e.acts[e.index] == e.activation


def test_planted_results_do_not_depend_on_chunking_and_resume_reencodes_only_missing_shards(planted, tmp_path):
    store, sae = planted["store"], planted["sae"]
    cfg2 = FeatureConfig(**{**planted["cfg"].to_dict(), "chunk_tokens": 16})
    res2 = compute_features(store, sae, tmp_path / "f", cfg2, tokenizer=False)
    for name, arr in planted["res"].arrays.items():
        assert torch.equal(arr, res2.arrays[name]), name
    assert res2.meta["encode"] == {"encoded_shards": store.n_shards, "reused_shards": 0}
    (tmp_path / "f" / "codes" / "00002.safetensors").unlink()  # as if the pass had died there
    res3 = compute_features(store, sae, tmp_path / "f", cfg2, tokenizer=False, overwrite=True)
    assert res3.meta["encode"] == {"encoded_shards": 1, "reused_shards": store.n_shards - 1}
    assert torch.equal(res3.arrays["top_tok"], res2.arrays["top_tok"])
    # same SAE, store and config: the saved results come back without a pass
    res4 = compute_features(store, sae, tmp_path / "f", cfg2, tokenizer=False)
    assert res4.meta["encode"] == res3.meta["encode"]
    # another SAE invalidates the cache
    other = identity_sae(sae.cfg.d_in)
    with torch.no_grad():
        other.W_enc.mul_(2)
    res5 = compute_features(store, other, tmp_path / "f", cfg2, tokenizer=False)
    assert res5.meta["encode"]["encoded_shards"] == store.n_shards
    assert torch.allclose(res5.max_activation, 2 * res2.max_activation)


def test_planted_max_tokens_keeps_the_rest_held_out(planted, tmp_path):
    store, sae = planted["store"], planted["sae"]
    cfg = FeatureConfig(**{**planted["cfg"].to_dict(), "max_tokens": 5 * 16 + 1})
    res = compute_features(store, sae, None, cfg, tokenizer=False)
    assert res.n_contexts == 6 and res.n_tokens == 6 * 15
    assert int(res.arrays["top_tok"].max()) < 6 * 16
    want = np.maximum(planted["acts"][:6, 1:], 0).reshape(-1, 6)
    assert res.count.tolist() == (want > 0).sum(0).tolist()


def test_errors_name_the_problem(planted, tmp_path):
    res, store = planted["res"], planted["store"]
    with pytest.raises(ValueError, match=r"feature index 6 out of range \[0, 6\)"):
        res.feature(6)
    with pytest.raises(ValueError, match="out of range"):
        res.feature(-1)
    with pytest.raises(ValueError, match="d_model mismatch.*d_in=7.*d_model=6"):
        compute_features(store, identity_sae(7), None, planted["cfg"], tokenizer=False)
    with pytest.raises(ValueError, match="d_model mismatch"):
        encode_contexts(store, identity_sae(5), [0])
    with pytest.raises(ValueError, match="top_k"):
        FeatureConfig(top_k=0)


def test_save_load_roundtrip_and_corrupt_files(planted, tmp_path):
    res = planted["res"]
    d = tmp_path / "copy"
    res.save(d)
    back = FeatureResults.load(d)
    for name, arr in res.arrays.items():
        assert torch.equal(arr, back.arrays[name])
    assert back.feature(0) == res.feature(0)
    assert back.feature(0).top[0].activation == float(res.max_activation[0])

    bad = tmp_path / "bad-json"
    shutil.copytree(d, bad)
    (bad / "features.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"features\.json is corrupt"):
        FeatureResults.load(bad)

    trunc = tmp_path / "truncated"
    shutil.copytree(d, trunc)
    raw = (trunc / "features.safetensors").read_bytes()
    (trunc / "features.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"features\.safetensors is corrupt or truncated"):
        FeatureResults.load(trunc)

    mixed = tmp_path / "mixed"
    shutil.copytree(d, mixed)
    meta = json.loads((mixed / "features.json").read_text())
    meta["arrays"]["count"] = [99]
    (mixed / "features.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not belong together"):
        FeatureResults.load(mixed)

    with pytest.raises(ValueError, match="features.json is missing"):
        FeatureResults.load(tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------------------------
# The real small store
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_pass_agrees_with_dense_encoding(small_store, real_sae, real_results):
    res = real_results
    assert res.n_contexts == ANALYSED_CONTEXTS and res.d_sae == real_sae.cfg.d_sae
    ids, acts = encode_contexts(small_store, real_sae, range(ANALYSED_CONTEXTS))
    flat = acts.reshape(-1, acts.shape[-1])
    assert res.count.tolist() == (flat > 0).sum(0).tolist()
    assert torch.allclose(res.max_activation, flat.max(0).values, rtol=1e-4, atol=1e-5)
    alive = res.alive()
    assert alive.numel() > 0.5 * res.d_sae
    for f in alive[:: max(1, alive.numel() // 12)].tolist():
        rep = res.feature(f)
        top = rep.top
        assert top and top[0].activation == pytest.approx(rep.max_activation, rel=1e-4)
        assert [e.activation for e in top] == sorted((e.activation for e in top), reverse=True)
        assert len({e.context_idx for e in top}) == len(top)
        e = top[0]
        assert e.acts[e.index] == pytest.approx(float(acts[e.context_idx, e.position, f]), rel=1e-4, abs=1e-5)
        assert e.token_ids[e.index] == int(ids[e.context_idx, e.position])
        assert "".join(e.tokens)  # decoded strings, no tokenizer needed at load time
        assert sum(rep.histogram.counts) == rep.count == sum(b.count for b in rep.buckets)
        assert 0 < rep.density < 1 and rep.mean_activation <= rep.max_activation
        assert rep.logits is not None and len(rep.logits.top_tokens) == 10
        assert rep.logits.top_values == sorted(rep.logits.top_values, reverse=True)


@pytest.mark.slow
def test_real_results_load_from_their_files_alone(real_results, tmp_path, monkeypatch):
    """Saved results come back as they were without a pass: no encoding, no store, no model, no tokenizer."""
    import workbench.analysis.feature_codes as codes_mod
    import workbench.analysis.features as features_mod
    import workbench.data.models as models_mod
    from workbench.data.store import ActivationStore

    real_results.save(tmp_path)

    def forbidden(name):
        def fail(*args, **kwargs):
            pytest.fail(f"FeatureResults.load called {name}")
        return fail

    for mod, name in [(features_mod, "compute_features"), (codes_mod, "encode_sparse_codes"),
                      (features_mod, "encode_sparse_codes"), (features_mod, "encode_contexts"),
                      (codes_mod, "SparseEncoder"),
                      (features_mod, "_load_tokenizer_quietly"), (models_mod, "load_model"),
                      (models_mod, "load_tokenizer")]:
        monkeypatch.setattr(mod, name, forbidden(f"{mod.__name__}.{name}"))
    monkeypatch.setattr(ActivationStore, "open", forbidden("ActivationStore.open"))
    back = FeatureResults.load(tmp_path)
    for f in real_results.alive()[:5].tolist():
        assert back.feature(f) == real_results.feature(f)
        assert back.feature(f).top[0].tokens == real_results.feature(f).top[0].tokens  # strings from tokens.json


# ----------------------------------------------------------------------------------------------------------------
# Logit effects
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_final_norm_scale_matches_gemma_ln_final(gemma):
    from workbench.analysis.logits import final_norm_scale

    norm = final_norm_scale(gemma)
    assert norm.convention == "w" and not norm.centre  # TransformerLens has folded Gemma's (1 + w) into w
    x = torch.randn(3, gemma.cfg.d_model) * 5
    rms = x.pow(2).mean(-1, keepdim=True).add(gemma.cfg.eps).sqrt()
    with torch.no_grad():
        assert torch.allclose(gemma.ln_final(x), x / rms * norm.weight, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_logit_weights_are_the_unembedded_normalised_direction(gemma, real_sae):
    from workbench.analysis.logits import logit_effects, logit_weights

    d = real_sae.W_dec[:3].detach()
    lw = logit_weights(gemma, d)
    with torch.no_grad():
        through_model = gemma.unembed(gemma.ln_final(d[:, None, :]))[:, 0] - gemma.b_U
    rms = d.pow(2).mean(-1, keepdim=True).add(gemma.cfg.eps).sqrt()
    assert torch.allclose(lw / rms, through_model, rtol=1e-3, atol=1e-3 * float(through_model.abs().max()))
    eff = logit_effects(gemma, d, k=5)
    assert torch.equal(eff.top_ids, lw.topk(5, dim=-1).indices)
    assert torch.equal(eff.bottom_ids, lw.topk(5, dim=-1, largest=False).indices)
    named = eff.tokens(gemma.tokenizer, 0)
    assert len(named["top"]) == 5 and isinstance(named["top"][0][0], str)
    with pytest.raises(ValueError, match="d_model"):
        logit_weights(gemma, torch.zeros(2, 7))


def test_final_norm_scale_handles_layernorm_centring():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.analysis.logits import final_norm_scale, logit_weights

    cfg = HookedTransformerConfig(n_layers=1, d_model=16, d_head=4, n_heads=4, n_ctx=8, d_vocab=30, act_fn="gelu",
                                  normalization_type="LN", seed=0)
    model = HookedTransformer(cfg)
    with torch.no_grad():
        model.ln_final.w.copy_(torch.rand(16) + 0.5)
        model.ln_final.b.copy_(torch.randn(16))
    norm = final_norm_scale(model)
    assert norm.centre and norm.convention == "w"
    d = torch.randn(2, 16)
    with torch.no_grad():
        through = model.unembed(model.ln_final(d[:, None]))[:, 0] - model.unembed(model.ln_final.b[None, None])[:, 0]
    dc = d - d.mean(-1, keepdim=True)
    scale = dc.pow(2).mean(-1, keepdim=True).add(model.cfg.eps).sqrt()
    assert torch.allclose(logit_weights(model, d) / scale, through, atol=1e-4)
