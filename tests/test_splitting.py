"""Tests for workbench.analysis.splitting and widgets.split_explorer on a planted family with a known answer.

Three ReLU SAEs over orthonormal directions e_i (d=32): the small one has parents e0..e3; the mid and large ones
split e0 into two children (e0 + e10/2 and e0 + e11/2, each firing on its own token type only), the large one merges
e1 and e2 into one latent, copies e3, adds a novel e20 and a silent e21. Token types with known counts give exact
coverages; correlations are checked against numpy on the dense codes.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from helpers import PLANT_HOOK, write_store
from workbench.analysis.explain import explain_features
from workbench.analysis.features import FeatureConfig, compute_features
from workbench.sae.model import SAE, SAEConfig, SAEMetadata
from workbench.analysis.splitting import (
    SplitConfig,
    TokenCodes,
    activation_correlation,
    analyze_splitting,
    heldout_codes,
)
from workbench.studies.profile import train_nested
from widgets.split_explorer import SplitExplorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 32
# token type -> (direction recipe, count in the held-out set, token string)
TYPES = {"A": ((0, 10), 30, " alpha"), "B": ((0, 11), 10, " beta"), "C": ((1,), 8, " gamma"),
         "D": ((2,), 8, " delta"), "E": ((3,), 5, " eps"), "F": ((20,), 7, " novel"), "G": ((25,), 12, " other")}


def _basis() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return q.T.to(torch.float32)  # rows orthonormal


E = _basis()


def _direction(recipe: tuple[int, ...]) -> torch.Tensor:
    if len(recipe) == 2:  # a child: e_a + e_b / 2
        return E[recipe[0]] + 0.5 * E[recipe[1]]
    return E[recipe[0]].clone()


def relu_sae(rows: list[torch.Tensor], bias: list[float]) -> SAE:
    w = torch.stack([r / r.norm() for r in rows])
    sae = SAE(SAEConfig("relu", D, len(rows), apply_b_dec_to_input=False),
              SAEMetadata(model_name="planted", hook_name=PLANT_HOOK))
    with torch.no_grad():
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_enc.copy_(torch.tensor(bias))
        sae.b_dec.zero_()
    return sae.eval()


def planted_saes() -> dict[str, SAE]:
    child0, child1 = E[0] + 0.5 * E[10], E[0] + 0.5 * E[11]
    z = -0.05  # a small margin, so rounding errors of the orthonormal basis (~1e-7) never fire a feature
    small = relu_sae([E[0], E[1], E[2], E[3]], [z] * 4)
    mid = relu_sae([child0, child1, E[1], E[2], E[3]], [-1.0, -1.0, z, z, z])
    large = relu_sae([child0, child1, E[1] + E[2], E[3], E[20], E[21]], [-1.0, -1.0, -0.5, z, z, z])
    return {"large": large, "small": small, "mid": mid}  # any order: analyze_splitting sorts by size


def planted_tokens(scale: int = 1, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Activations [n, D] (each token a type's direction times a magnitude in [1, 1.1]) and the type of each."""
    gen = torch.Generator().manual_seed(seed)
    kinds = [t for t, (_, n, _) in TYPES.items() for _ in range(n * scale)]
    kinds = [kinds[i] for i in torch.randperm(len(kinds), generator=gen).tolist()]
    mags = 1.0 + 0.1 * torch.rand(len(kinds), generator=gen)
    x = torch.stack([_direction(TYPES[k][0]) for k in kinds]) * mags[:, None]
    return x, kinds


@pytest.fixture(scope="module")
def split():
    x, _ = planted_tokens()
    return analyze_splitting(planted_saes(), x.split(16))  # batches, as a store's held-out stream yields


# ----------------------------------------------------------------------------------------------------------------
# Codes and correlations
# ----------------------------------------------------------------------------------------------------------------


def test_heldout_codes_equal_the_dense_encoding():
    x, _ = planted_tokens()
    saes = planted_saes()
    codes = heldout_codes(saes, x.split(7))
    for name, sae in saes.items():
        with torch.no_grad():
            dense = sae.encode(x)
        assert codes[name].n_tokens == x.shape[0]
        assert torch.allclose(codes[name].dense(), dense, atol=1e-6)
        j = int(dense.count_nonzero(0).argmax())
        assert torch.equal(codes[name].firing(j), (dense[:, j] > 0).nonzero().squeeze(1))
    with pytest.raises(ValueError, match="d_model mismatch"):
        heldout_codes(saes, torch.zeros(4, D + 1))
    with pytest.raises(ValueError, match="empty"):
        heldout_codes(saes, [])


def test_activation_correlation_matches_numpy():
    gen = torch.Generator().manual_seed(1)
    n, da, db = 300, 7, 11
    a = torch.relu(torch.randn(n, da, generator=gen) - 0.8)
    b = torch.relu(a @ torch.randn(da, db, generator=gen) + 0.3 * torch.randn(n, db, generator=gen) - 0.5)
    a[:, 3] = 0  # a silent feature: correlation 0 by convention

    def codes(m):
        nz = m.nonzero()
        return TokenCodes(nz[:, 0], nz[:, 1], m[nz[:, 0], nz[:, 1]], m.shape[0], m.shape[1])

    corr, cofire = activation_correlation(codes(a), codes(b), chunk=64)  # chunking must not matter
    with np.errstate(invalid="ignore"):  # the silent feature has no variance
        ref = np.corrcoef(a.numpy().T, b.numpy().T)[:da, da:]
    ref[3] = 0.0
    assert np.allclose(corr.numpy(), ref, atol=1e-5)
    assert torch.equal(cofire, ((a > 0).to(torch.int64).T @ (b > 0).to(torch.int64)))
    with pytest.raises(ValueError, match="different tokens"):
        activation_correlation(codes(a), codes(b[:-1]))


# ----------------------------------------------------------------------------------------------------------------
# Families, merges, novelty
# ----------------------------------------------------------------------------------------------------------------


def test_the_planted_split_family_and_its_partition(split):
    assert split.names == ["small", "mid", "large"] and split.sizes == [4, 5, 6]
    fam = split.family(0)
    n_a, n_b = TYPES["A"][1], TYPES["B"][1]
    assert fam.n_parent_tokens == n_a + n_b
    large = {m.feature: m for m in fam.children["large"]}
    assert set(large) == {0, 1} and set(m.feature for m in fam.children["mid"]) == {0, 1}
    assert large[0].coverage == pytest.approx(n_a / (n_a + n_b)) and large[1].coverage == pytest.approx(
        n_b / (n_a + n_b))
    assert large[0].inside == 1.0 and large[1].inside == 1.0 and large[0].n_firing == n_a
    assert large[0].cosine == pytest.approx(1 / np.sqrt(1.25), abs=1e-5)
    assert fam.union_coverage["large"] == pytest.approx(1.0) and fam.overlap["large"] == 0.0
    assert not fam.merges
    # the children come sorted by coverage; the lattice links mid child j to the identical large child j
    assert [m.feature for m in fam.children["large"]] == [0, 1]
    lattice = {(e.a, e.b): e.cosine for e in fam.edges if e.sae_a == "mid"}
    assert lattice[(0, 0)] == pytest.approx(1.0, abs=1e-5) and lattice[(1, 1)] == pytest.approx(1.0, abs=1e-5)


def test_a_latent_claimed_by_two_parents_is_a_merge(split):
    for parent in (1, 2):
        fam = split.family(parent)
        (child,) = fam.children["large"]
        assert child.feature == 2 and child.parents == [1, 2] and child.merged
        assert fam.merges == [child]
        assert child.coverage == 1.0
        assert child.inside == pytest.approx(TYPES["C"][1] / (TYPES["C"][1] + TYPES["D"][1]))
    assert split.parents_of("large", 2) == [1, 2]
    rows = {(r["sae"], r["feature"]): r for r in split.family(1).rows()}
    assert rows[("large", 2)]["merge_with"] == [2] and rows[("mid", 2)]["merge_with"] == []


def test_novelty_separates_refinements_novel_and_silent_latents(split):
    nov = split.novelty("large")
    assert nov["kind"] == ["refinement", "refinement", "refinement", "refinement", "novel", "silent"]
    assert nov["counts"] == {"refinement": 4, "novel": 1, "silent": 1}
    best = nov["best"].tolist()
    assert best[0] == best[1] == 0 and best[2] in (1, 2) and best[3] == 3  # latent 2 ties between e1 and e2
    summary = {row["sae"]: row for row in split.summary()}
    assert summary["large"]["parents_split"] == 1 and summary["large"]["merged_children"] == 1
    assert summary["mid"]["novel"] == 0


def test_families_are_ranked_and_correlation_mode_agrees_with_numpy(split):
    fams = split.families()
    assert fams[0].parent == 0 and len(fams[0].children["large"]) == 2
    assert {f.parent for f in fams} == {0, 1, 2, 3}
    x, _ = planted_tokens()
    saes = planted_saes()
    with torch.no_grad():
        p, c = saes["small"].encode(x)[:, 0].numpy(), saes["large"].encode(x).numpy()
    r = [np.corrcoef(p, c[:, j])[0, 1] if c[:, j].std() > 0 else 0.0 for j in range(6)]
    by_corr = analyze_splitting(saes, x, SplitConfig(by="correlation", corr_threshold=0.5))
    got = {m.feature for m in by_corr.family(0).children["large"]}
    assert got == {j for j in range(6) if r[j] >= 0.5}
    with pytest.raises(ValueError, match="out of range"):
        split.family(4)
    with pytest.raises(ValueError, match="by must be"):
        SplitConfig(by="magic")
    with pytest.raises(ValueError, match="distinct sizes"):
        analyze_splitting({"a": saes["small"], "b": relu_sae([E[5], E[6], E[7], E[8]], [-0.05] * 4)}, x)


# ----------------------------------------------------------------------------------------------------------------
# Training nested sizes in one pass
# ----------------------------------------------------------------------------------------------------------------


def test_train_nested_trains_every_size_on_one_pass_and_reuses_it(tmp_path):
    from workbench.sae.train import SyntheticSource, TrainConfig

    source = SyntheticSource(16, 24, active=3, seed=0)
    config = TrainConfig(total_tokens=1024, batch_size=128, checkpoint_every=0, scale_estimate_tokens=512,
                         b_dec_init_tokens=256)
    saes, run_dir = train_nested(source, [32, 16, 64], config, tmp_path, k=4, progress=False)
    assert list(saes) == ["topk-16-k4", "topk-32-k4", "topk-64-k4"]
    assert [s.cfg.d_sae for s in saes.values()] == [16, 32, 64]
    summary = (run_dir / "summary.json").read_text()
    assert all(name in summary for name in saes)
    again, run_dir2 = train_nested(source, [16, 32, 64], config, tmp_path, k=4, progress=False)
    assert run_dir2 == run_dir
    assert all(torch.equal(again[n].W_dec, saes[n].W_dec) for n in saes)
    with pytest.raises(ValueError, match="at least two"):
        train_nested(source, [16], config, tmp_path, k=4)


# ----------------------------------------------------------------------------------------------------------------
# The explorer, on feature results computed over a planted store
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_results(tmp_path_factory):
    """Each SAE's analysis pass over a store of the planted token types (token id = 10 + type index)."""
    x, kinds = planted_tokens(scale=2, seed=1)
    ctx = 17  # BOS + 16
    n_ctx = x.shape[0] // (ctx - 1)
    n = n_ctx * (ctx - 1)
    ids_of = {k: 10 + i for i, k in enumerate(TYPES)}
    acts = np.zeros((n_ctx, ctx, D), dtype=np.float32)
    tokens = np.ones((n_ctx, ctx), dtype=np.int64)
    acts[:, 1:] = x[:n].numpy().reshape(n_ctx, ctx - 1, D)
    tokens[:, 1:] = np.array([ids_of[k] for k in kinds[:n]]).reshape(n_ctx, ctx - 1)
    store = write_store(tmp_path_factory.mktemp("planted-split-store"), acts, tokens)
    cfg = FeatureConfig(top_k=5, n_buckets=2, per_bucket=2, context_before=2, context_after=1, progress=False)
    vocab = {10 + i: s for i, (_, _, s) in enumerate(TYPES.values())}
    out = {}
    for name, sae in planted_saes().items():
        res = compute_features(store, sae, None, cfg, tokenizer=False)
        res.vocab.update(vocab)
        out[name] = res
    return out


def test_split_explorer_shows_the_family_side_by_side(split, planted_results):
    expl = {name: explain_features(res) for name, res in planted_results.items()}
    ex = SplitExplorer(split, planted_results, expl, n_examples=2)
    assert ex.parents()[0] == (0, 2)
    fam = ex.select(0)
    assert fam.parent == 0
    out = ex.to_html(include_plotlyjs=False)
    assert out.count("<h4>") == 3  # one column per size
    # child 0 of the large SAE fires on " alpha" tokens, child 1 on " beta": their explanations and emphasised
    # top-example tokens say so
    assert "alpha" in expl["large"][0].explanation.text and "beta" in expl["large"][1].explanation.text
    col = out.split("<h4>large</h4>")[1]
    first, second = col.split("<b>F1</b>")
    assert re.search(r'wb-max"[^>]*> alpha</span>', first) and not re.search(r'wb-max"[^>]*> beta</span>', first)
    assert re.search(r'wb-max"[^>]*> beta</span>', second)
    assert "covers 75% of the parent" in first and "cos 0.89" in first
    fig = ex.figure()
    labels = [t for tr in fig.data if tr.mode == "text" for t in tr.text]
    assert "cos 0.89 / r" in labels[0] and len(labels) == len(fam.edges)
    merge_html = SplitExplorer(split, planted_results, expl)
    merge_html.select(1)
    assert "<b>merge</b>: also a child of F2" in merge_html.to_html(include_plotlyjs=False)
    assert ex.widget is not None and ex.family is fam
