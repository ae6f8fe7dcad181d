"""DFC options for a model that is a small part of the loss (docs/methods.md §13, §17): block-wise BatchTopK
(``exclusive_k``) and per-model loss weights (``loss_weights`` / ``fvu_weights``), on planted pairs where model A
looks like Gemma-3-270M under the papers' norm scaling (a large constant direction, token-to-token signal a few
percent of the loss)."""
from __future__ import annotations

import pytest
import torch

from workbench.diffing.crosscoder import Crosscoder, CrosscoderConfig, CrosscoderSpec, fvu_weights, load_crosscoder
from workbench.diffing.dfc import check_partition
from workbench.diffing.synthetic import planted_pair
from workbench.sae.train import TensorSource, TrainConfig, train

D_A, D_B, N_SAE, A_ONLY = 48, 32, 64, 8


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _gemma_like(pair) -> torch.Tensor:
    """Model A's activations shrunk to a fifth and moved by a constant of norm 6: after the global scaling its
    centred variance is ~1% of the loss, as Gemma's is ~3% in the cross-architecture diff."""
    x = pair.x.clone()
    c = torch.randn(D_A, generator=torch.Generator().manual_seed(3))
    x[:, :D_A] = 0.2 * x[:, :D_A] + 6.0 * c / c.norm()
    return x


def _variances(x):
    return tuple(float((p - p.mean(0)).pow(2).sum(1).mean()) for p in (x[:, :D_A], x[:, D_A:]))


@pytest.fixture(scope="module")
def gemma_like_runs(tmp_path_factory):
    torch.set_num_threads(1)
    pair = planted_pair(n_tokens=16384, d_a=D_A, d_b=D_B, seed=0)  # 6 A-only features, ~0.5 active per token
    x = _gemma_like(pair)
    common = dict(k=3, lr=5e-3, d_models=(D_A, D_B), a_only=A_ONLY, b_only=A_ONLY)
    specs = [CrosscoderSpec("batchtopk", N_SAE, name="plain", **common),
             CrosscoderSpec("batchtopk", N_SAE, name="blocks", exclusive_k=0.5, **common),
             CrosscoderSpec("batchtopk", N_SAE, name="weighted", loss_weights=fvu_weights(_variances(x)), **common)]
    config = TrainConfig(total_tokens=16384, batch_size=256, epochs=3, device="cpu", b_dec_init="mean",
                         scale_estimate_tokens=4096, b_dec_init_tokens=4096, heldout_eval_tokens=0, log_every=20,
                         checkpoint_every=1000)
    out = tmp_path_factory.mktemp("blocks")
    return pair, x, train(specs, config, TensorSource(x, seed=0), out, progress=False)


def _a_only_recovery(cc, pair, x):
    """For each planted A-only feature, the best cosine between its direction and the A decoder of an A-only latent
    that fires on x (0 when none fires), and the fraction of A-only latents that fire."""
    with torch.no_grad():
        fires = (cc.encode(x) > 0).any(0)
    lat = torch.arange(A_ONLY)[fires[:A_ONLY]]
    truth = pair.directions_a[pair.kinds == 1]
    if lat.numel() == 0:
        return torch.zeros(truth.shape[0]), 0.0
    w = cc.W_dec.detach()[lat, :D_A]
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (truth @ w.T).max(1).values, float(fires[:A_ONLY].float().mean())


def test_plain_dfc_leaves_the_small_models_exclusive_block_dead(gemma_like_runs):
    pair, x, result = gemma_like_runs
    cos, alive = _a_only_recovery(result.runs["plain"].sae, pair, x)
    assert alive <= 0.25 and float(cos.max()) < 0.9, (alive, cos)  # what the options below fix


def test_block_topk_brings_the_planted_exclusive_features_to_life(gemma_like_runs):
    pair, x, result = gemma_like_runs
    cc = result.runs["blocks"].sae
    cos, alive = _a_only_recovery(cc, pair, x)
    # measured: 4 of the 6 planted A-only features found by the A-only block at cosine > 0.99 (two merged), none
    # by the plain DFC's
    assert alive >= 0.75 and int((cos > 0.9).sum()) >= 4, (alive, cos)
    assert check_partition(cc)["weights"] == 0.0
    # the inference thresholds are per block: the exclusive block keeps about its share of the code on x
    with torch.no_grad():
        codes = cc.encode(x)
    per_block = (codes > 0).float().sum(1).mean(), (codes[:, :A_ONLY] > 0).float().sum(1).mean()
    assert 0.25 < float(per_block[1]) < 1.0 and float(per_block[0]) == pytest.approx(3.0, rel=0.3), per_block


def test_fvu_weights_also_revive_part_of_the_block(gemma_like_runs):
    pair, x, result = gemma_like_runs
    cos, alive = _a_only_recovery(result.runs["weighted"].sae, pair, x)
    assert alive >= 0.25 and int((cos > 0.9).sum()) >= 3, (alive, cos)  # measured: 3 of 6


def test_saved_block_dfc_round_trips(gemma_like_runs, tmp_path):
    _, x, result = gemma_like_runs
    run = result.runs["blocks"]
    loaded = load_crosscoder(run.path)
    assert loaded.cfg.exclusive_k == 0.5 and loaded.cfg.threshold_per_latent
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x[:512]), run.sae.encode(x[:512]), atol=1e-5)


def test_fvu_weights_equalise_each_models_variance_and_keep_the_total():
    w = fvu_weights((2.0, 98.0))
    assert w[0] * 2.0 == pytest.approx(w[1] * 98.0)
    assert w[0] * 2.0 + w[1] * 98.0 == pytest.approx(100.0)
    with pytest.raises(ValueError, match="positive variances"):
        fvu_weights((0.0, 1.0))


def test_weighted_loss_counts_each_model_by_its_weight():
    cfg = CrosscoderConfig("relu", 5, 4, d_models=(3, 2), l1_coefficient=0.0, loss_weights=(2.0, 0.5))
    cc = Crosscoder(cfg, seed=0)
    x = torch.randn(16, 5)
    out = cc.training_loss(x)
    with torch.no_grad():
        err = (cc(x) - x).pow(2)
    expected = (2.0 * err[:, :3].sum(1) + 0.5 * err[:, 3:].sum(1)).mean()
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(out.mse) == pytest.approx(float(err.sum(1).mean()), rel=1e-5)  # logged unweighted


def test_block_options_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="BatchTopK DFC"):
        CrosscoderConfig("batchtopk", 5, 8, k=2, d_models=(3, 2), exclusive_k=0.5)  # no exclusive block
    with pytest.raises(ValueError, match="leave the shared block"):
        CrosscoderConfig("batchtopk", 5, 8, k=2, d_models=(3, 2), a_only=2, b_only=2, exclusive_k=1.0)
    with pytest.raises(ValueError, match="loss_weights"):
        CrosscoderConfig("relu", 5, 8, d_models=(3, 2), loss_weights=(1.0, 0.0))


def test_cross_architecture_sizes_select_per_block_and_fine_tune_sizes_keep_the_papers_dfc():
    from workbench.diffing.experiments import DiffSizes, crosscoder_specs

    class _Paired:
        d_models = (8, 6)

    for sizes in (DiffSizes.full(), DiffSizes.smoke()):
        specs = {s.name: s for s in crosscoder_specs(_Paired(), sizes)}
        assert specs["dfc"].exclusive_k == pytest.approx(sizes.k / 8) and specs["batchtopk"].exclusive_k == 0
        assert specs["dfc"].a_only == round(0.10 * sizes.d_sae)
    for sizes in (DiffSizes(), DiffSizes.finetune_full(), DiffSizes.audit_full(), DiffSizes.finetune_smoke()):
        dfc = {s.name: s for s in crosscoder_specs(_Paired(), sizes)}["dfc"]
        assert dfc.exclusive_k == 0 and dfc.a_only == round(0.05 * sizes.d_sae)
    # the papers' setting leaves the keys of runs cached before the option existed unchanged
    assert DiffSizes().key() == DiffSizes(exclusive_fraction=0.05, exclusive_k_share=0.0, weighting="none").key()
    assert DiffSizes().key() != DiffSizes(exclusive_k_share=0.125).key()
    with pytest.raises(ValueError, match="exclusive_k_share"):
        DiffSizes(exclusive_k_share=0.5)


def test_configs_from_before_the_options_keep_their_fingerprint():
    # the trainer's resume check compares config dicts: a plain crosscoder's must not grow the new keys
    plain = CrosscoderConfig("batchtopk", 5, 8, k=2, d_models=(3, 2), a_only=1, b_only=1).to_dict()
    assert "exclusive_k" not in plain and "loss_weights" not in plain
    cfg = CrosscoderConfig("batchtopk", 5, 8, k=2, d_models=(3, 2), a_only=1, b_only=1, exclusive_k=0.5,
                           loss_weights=(2.0, 0.5))
    back = CrosscoderConfig.from_dict(cfg.to_dict())
    assert back.exclusive_k == 0.5 and back.loss_weights == (2.0, 0.5)
    assert CrosscoderConfig.from_dict(plain).loss_weights == (1.0, 1.0)
