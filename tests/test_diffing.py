"""Model diffing without models: character-offset alignment on crafted tokenizations, crosscoders (L1, BatchTopK)
and a DFC trained by the SAE trainer on planted pairs of different widths, partition integrity through training
and resume, and Latent Scaling against its closed form."""
from __future__ import annotations

import shutil

import numpy as np

import pytest
import torch

from workbench.diffing.alignment import align_offsets, alignment_stats, token_ends
from workbench.diffing.analyses import latent_kinds, pair_metrics, relative_norms
from workbench.diffing.crosscoder import Crosscoder, CrosscoderConfig, CrosscoderSpec, load_crosscoder
from workbench.diffing.dfc import Partition, check_partition, forbidden_max
from workbench.diffing.latent_scaling import closed_form_beta, latent_scaling
from workbench.diffing.synthetic import planted_pair
from workbench.sae.io import read_safetensors
from workbench.sae.train import TensorSource, TrainConfig, train


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared machine
    yield
    torch.set_num_threads(old)


# ----- alignment ---------------------------------------------------------------------------------------------------


def test_identical_tokenizations_keep_every_token():
    offs = [(0, 3), (3, 7), (7, 8)]
    assert align_offsets(offs, offs) == ([0, 1, 2], [0, 1, 2])


def test_numbers_split_differently_pair_only_common_ends():
    # "12345 apples": A splits digit by digit, B into "123" "45"; " apples" is one token in both
    a = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 12)]
    b = [(0, 3), (3, 5), (5, 12)]
    ia, ib = align_offsets(a, b)
    assert (ia, ib) == ([2, 4, 5], [0, 1, 2])


def test_words_split_differently_pair_at_the_word_end():
    # "unhappiness is": A "un|happiness| is", B "unhapp|iness| is"
    a = [(0, 2), (2, 11), (11, 14)]
    b = [(0, 6), (6, 11), (11, 14)]
    assert align_offsets(a, b) == ([1, 2], [1, 2])


def test_byte_fallback_accent_pairs_the_token_that_completes_the_character():
    # "é!": A has two byte tokens both reporting (0, 1); B one token
    a = [(0, 1), (0, 1), (1, 2)]
    b = [(0, 1), (1, 2)]
    assert token_ends(a) == {1: 1, 2: 2}
    assert align_offsets(a, b) == ([1, 2], [0, 1])


def test_spans_special_tokens_and_empty_tokens_are_never_paired():
    a = [(0, 0), (0, 4), (4, 9), (9, 14)]  # an empty (added special) token first
    b = [(0, 4), (4, 9), (9, 14)]
    assert align_offsets(a, b) == ([1, 2, 3], [0, 1, 2])
    assert align_offsets(a, b, keep_spans=[(4, 9)]) == ([2], [1])
    assert align_offsets(a, b, skip_b=[1]) == ([1, 3], [0, 2])
    with pytest.raises(ValueError, match="end < start"):
        token_ends([(3, 1)])


def test_alignment_fractions_per_model_and_language():
    stats = alignment_stats([("en", 10, 8, 8), ("es", 10, 20, 5), ("es", 10, 20, 5)])
    f = stats.fractions()
    assert f["a"]["en"] == pytest.approx(0.8) and f["b"]["en"] == pytest.approx(1.0)
    assert f["a"]["es"] == pytest.approx(0.5) and f["b"]["es"] == pytest.approx(0.25)
    assert f["b"]["all"] == pytest.approx(18 / 48)


# ----- crosscoders ------------------------------------------------------------------------------------------------

D_A, D_B = 48, 32


def _config(steps_per_epoch_tokens=16384, epochs=2, **kw):
    return TrainConfig(total_tokens=steps_per_epoch_tokens, batch_size=256, epochs=epochs, device="cpu",
                       b_dec_init="mean", scale_estimate_tokens=4096, b_dec_init_tokens=4096, heldout_eval_tokens=0,
                       log_every=20, **kw)


def _match(cc, pair):
    """For each planted feature: the best decoder cosine and that latent's relative norm."""
    truth = torch.cat([pair.directions_a, pair.directions_b], 1)
    truth = truth / truth.norm(dim=1, keepdim=True)
    w = cc.W_dec.detach()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos, idx = (truth @ w.T).max(1)
    return cos, relative_norms(cc)[idx], idx


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory):
    torch.set_num_threads(1)
    pair = planted_pair(n_tokens=16384, d_a=D_A, d_b=D_B, seed=0)
    specs = [CrosscoderSpec("relu", 64, l1_coefficient=1.0, lr=5e-3, d_models=(D_A, D_B), name="l1"),
             CrosscoderSpec("batchtopk", 64, k=3, lr=5e-3, d_models=(D_A, D_B), name="btk"),
             CrosscoderSpec("batchtopk", 64, k=3, lr=5e-3, d_models=(D_A, D_B), a_only=8, b_only=8, name="dfc")]
    out = tmp_path_factory.mktemp("cc")
    config = _config(epochs=3, checkpoint_every=16, keep_checkpoints=50)
    result = train(specs, config, TensorSource(pair.x, seed=0), out, progress=False)
    return pair, result, out, specs


@pytest.mark.parametrize("name", ["l1", "btk"])
def test_crosscoders_recover_planted_shared_and_exclusive_features(planted_runs, name):
    pair, result, _, _ = planted_runs
    cc = result.runs[name].sae
    assert isinstance(cc, Crosscoder)
    cos, r, _ = _match(cc, pair)
    shared, a_only, b_only = (pair.kinds == k for k in range(3))
    assert float(cos.min()) > 0.9, cos
    assert bool(((r[shared] > 0.3) & (r[shared] < 0.7)).all()), r[shared]
    assert float(r[a_only].max()) < 0.35 and float(r[a_only].mean()) < 0.2, r[a_only]
    assert float(r[b_only].min()) > 0.65 and float(r[b_only].mean()) > 0.8, r[b_only]
    m = pair_metrics(cc, pair.x)
    assert m["fvu_a"] < 0.1 and m["fvu_b"] < 0.1


def test_saved_crosscoder_reads_raw_activations_and_round_trips(planted_runs):
    pair, result, _, _ = planted_runs
    for name in ("l1", "btk", "dfc"):
        run = result.runs[name]
        loaded = load_crosscoder(run.path)
        assert loaded.cfg.d_models == (D_A, D_B) and loaded.partition == run.sae.partition
        x = pair.x[:512] * 7.0  # raw units differ from training units: the folded scales absorb it
        torch.testing.assert_close(loaded.encode(x), run.sae.encode(x))
    # the folding itself: reconstruction quality on raw inputs is what it was in training units
    assert pair_metrics(load_crosscoder(result.runs["l1"].path), pair.x * 7.0)["fvu_a"] < 0.1


def test_dfc_keeps_forbidden_weights_exactly_zero_through_training(planted_runs):
    pair, result, out, _ = planted_runs
    cc = result.runs["dfc"].sae
    check = check_partition(cc)
    assert check["ok"] and check["weights"] == 0.0
    part, dims = cc.partition, cc.cfg.d_models
    assert part == Partition(64, 8, 8)
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert len(ckpts) >= 4  # every checkpoint of the run: weights and Adam moments
    for ck in ckpts:
        w = read_safetensors(ck / "dfc" / "sae.safetensors")
        o = read_safetensors(ck / "dfc" / "optimizer.safetensors")
        assert forbidden_max(part, dims, w["W_enc"], w["W_dec"]) < 1e-6
        assert forbidden_max(part, dims, o["W_enc.exp_avg"], o["W_dec.exp_avg"]) == 0.0
        assert forbidden_max(part, dims, o["W_enc.exp_avg_sq"], o["W_dec.exp_avg_sq"]) == 0.0
    # the exclusive blocks did learn: the allowed side of the exclusive latents is not zero
    w = cc.W_dec.detach()
    assert float(w[part.a_slice, :D_A].norm()) > 0 and float(w[part.b_slice, D_A:].norm()) > 0
    kinds = latent_kinds(cc)
    assert (kinds[:8] == "a_only").all() and (kinds[8:16] == "b_only").all() and (kinds[16:] == "shared").all()


def test_dfc_resume_is_exact_and_stays_masked(planted_runs, tmp_path):
    pair, result, out, specs = planted_runs
    # resume from an earlier checkpoint of the same run (as after a kill) and finish it
    resumed = tmp_path / "run"
    shutil.copytree(out, resumed)
    ckpts = sorted((resumed / "checkpoints").glob("step_*"))
    for late in ckpts[len(ckpts) // 2:]:
        shutil.rmtree(late)
    (resumed / "checkpoints" / "LATEST").unlink()
    # the fingerprint covers every spec of the run, so resume with all three
    config = _config(epochs=3, checkpoint_every=16, keep_checkpoints=50)
    again = train(specs, config, TensorSource(pair.x, seed=0), resumed, progress=False)
    cc = again.runs["dfc"].sae
    assert check_partition(cc)["ok"]
    torch.testing.assert_close(cc.W_dec, result.runs["dfc"].sae.W_dec)
    last = sorted((resumed / "checkpoints").glob("step_*"))[-1]
    o = read_safetensors(last / "dfc" / "optimizer.safetensors")
    assert forbidden_max(cc.partition, cc.cfg.d_models, o["W_enc.exp_avg_sq"], o["W_dec.exp_avg_sq"]) == 0.0


def test_dfc_masks_gradients_and_optimizer_state_each_step():
    cfg = CrosscoderConfig("batchtopk", 20, 16, k=2, d_models=(12, 8), a_only=3, b_only=2)
    cc = Crosscoder(cfg, seed=1)
    assert check_partition(cc)["weights"] == 0.0  # zero at init
    opt = torch.optim.Adam(cc.parameters(), lr=1e-2)
    cc.attach_optimizer(opt)
    x = torch.randn(64, 20)
    for _ in range(5):
        out = cc.training_loss(x)
        out.loss.backward()
        assert check_partition(cc)["grads"] > 0  # the raw gradient does reach the forbidden entries...
        cc.remove_parallel_decoder_grad()
        assert check_partition(cc)["grads"] == 0.0  # ...and is masked before the step
        opt.step()
        cc.apply_constraints(out)
        opt.zero_grad()
        c = check_partition(cc, opt)
        assert c["weights"] == 0.0 and c["optimizer"] == 0.0


def test_crosscoder_configs_refuse_bad_shapes():
    with pytest.raises(ValueError, match="summing to d_in"):
        CrosscoderConfig("relu", 10, 8, d_models=(4, 4))
    with pytest.raises(ValueError, match="not supported"):
        CrosscoderConfig("jumprelu", 8, 8, d_models=(4, 4))
    with pytest.raises(ValueError, match="at most d_sae"):
        CrosscoderConfig("relu", 8, 8, d_models=(4, 4), a_only=5, b_only=5)
    assert Partition.from_fractions(1000) == Partition(1000, 50, 50)


# ----- Latent Scaling ------------------------------------------------------------------------------------------------


def test_latent_scaling_matches_the_closed_form():
    cfg = CrosscoderConfig("relu", 24, 10, d_models=(12, 12))
    cc = Crosscoder(cfg, seed=3)
    x = torch.randn(300, 24)
    res = latent_scaling(cc, x.split(64), torch.tensor([0, 4, 7]))
    codes = cc.encode(x)
    recon = cc.decode(codes)
    for row, j in enumerate([0, 4, 7]):
        f = codes[:, j]
        own = int(res.own[row])
        u = cc.W_dec[j, 12 * own:12 * own + 12].detach()
        for m in range(2):
            sl = slice(12 * m, 12 * m + 12)
            contrib = f[:, None] * cc.W_dec[j, sl].detach()[None]
            beta_e, _ = closed_form_beta(f, u, (x[:, sl] - recon[:, sl]) + contrib)
            beta_r, _ = closed_form_beta(f, u, recon[:, sl] - contrib)
            assert float(res.beta_error[row, m]) == pytest.approx(beta_e, rel=1e-3, abs=1e-5)
            assert float(res.beta_recon[row, m]) == pytest.approx(beta_r, rel=1e-3, abs=1e-5)


def test_latent_scaling_separates_truly_exclusive_from_shared(planted_runs):
    # a model and its fine-tune: the same space, shared features point the same way in both
    pair = planted_pair(n_tokens=8192, d_a=32, d_b=32, n_shared=16, n_a_only=0, n_b_only=4, seed=1, same_space=True)
    spec = CrosscoderSpec("relu", 32, l1_coefficient=1.0, lr=5e-3, d_models=(32, 32), name="same")
    cc = train([spec], _config(8192, epochs=3), TensorSource(pair.x, seed=0), planted_runs[2].parent / "same",
               progress=False).runs["same"].sae
    _, r, idx = _match(cc, pair)
    res = latent_scaling(cc, pair.x.split(1024), idx)
    nu = res.nu_error
    shared, b_only = pair.kinds == 0, pair.kinds == 2
    assert float(nu[b_only].abs().max()) < 0.2, nu[b_only]  # B's latent explains nothing of A
    assert float(res.explained_ratio[b_only].max()) < 0.1
    # a shared latent explains both models' activations about equally
    assert float(res.explained_ratio[shared].median()) > 0.5


def test_exclusive_ranking_orders_by_specificity_and_drops_outlier_latents():
    from workbench.diffing.analyses import exclusive_ranking
    from workbench.diffing.latent_scaling import LatentScaling


    kinds = np.array(["b_only", "b_only", "shared", "b_only", "b_only"])
    beta = torch.tensor([[0.5, 1.0], [0.1, 1.0], [1.0, 1.0], [0.0, 1.0], [0.2, 1.0]])
    scaling = LatentScaling(torch.arange(5), torch.ones(5, dtype=torch.long), beta, beta, beta, beta,
                            torch.tensor([50, 50, 50, 2, 50]))
    assert scaling.specificity.tolist() == pytest.approx([0.5, 0.1, 1.0, 0.0, 0.2])
    # latent 3 is the most specific but fires on 2 tokens only: an outlier catcher, left out
    assert exclusive_ranking(kinds, "b", scaling=scaling) == [1, 4, 0]
    assert exclusive_ranking(kinds, "b", frequency=torch.tensor([0.1, 0.3, 0.0, 0.2, 0.0]))[:2] == [1, 3]
    dense = torch.tensor([0.1, 0.3, 0.0, 0.2, 0.0])
    assert exclusive_ranking(kinds, "b", frequency=dense, max_frequency=0.25)[:2] == [3, 0]  # 1 fires on 30%
