"""Evaluation: reconstruction and feature metrics on activations, and the spliced-model metrics."""
from __future__ import annotations

import pytest
import torch

from workbench.sae.evaluate import density_histogram, downstream_metrics, evaluate_activations
from workbench.sae.model import SAE, SAEConfig, SAEMetadata


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def identity_sae(d: int, hook: str | None = None) -> SAE:
    """relu([x, -x]) decoded by [I; -I] reconstructs x exactly."""
    sae = SAE(SAEConfig("relu", d, 2 * d), SAEMetadata(hook_name=hook), seed=None)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def test_perfect_and_useless_reconstructions():
    x = torch.randn(300, 8) * 3 + 50
    batches = list(x.split(64))
    good = evaluate_activations(identity_sae(8), batches)
    assert good.n_tokens == 300 and good.fvu == pytest.approx(0.0, abs=1e-6)
    assert good.explained_variance == pytest.approx(1.0, abs=1e-6)
    assert good.l0 == pytest.approx(8.0)  # each coordinate is positive in exactly one of x, -x
    assert good.dead_fraction == pytest.approx(8 / 16)  # x > 0 everywhere here: the -x half never fires
    mean_only = identity_sae(8)
    with torch.no_grad():
        mean_only.W_dec.zero_()
        mean_only.b_dec.copy_(x.mean(0))
    bad = evaluate_activations(mean_only, batches)
    assert bad.fvu == pytest.approx(1.0, rel=1e-5)


def test_fvu_mse_l0_match_direct_computation_with_large_mean():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 16, generator=gen) + 6200.0 / 4  # a large shared component, as in residual streams
    sae = SAE(SAEConfig("topk", 16, 64, k=5), seed=3)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    m = evaluate_activations(sae, x.split(128), max_tokens=900)
    xs = x[:900].double()
    recon = sae(x[:900]).detach().double()
    err = (recon - xs).pow(2).sum()
    assert m.n_tokens == 900
    assert m.fvu == pytest.approx(float(err / (xs - xs.mean(0)).pow(2).sum()), rel=1e-4)
    assert m.mse == pytest.approx(float(err / 900), rel=1e-4)
    assert m.l0 == pytest.approx(5.0)
    density = (sae.encode(x[:900]) > 0).float().mean(0)
    assert torch.allclose(m.density, density)
    assert m.dense_fraction == pytest.approx(float((density > 0.1).float().mean()))


def test_dead_dense_and_histogram():
    sae = SAE(SAEConfig("relu", 4, 6), seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[0, 0] = 1.0  # fires when x0 > 0: about half the tokens
        sae.W_enc[1, 1] = 1.0
        sae.b_enc.copy_(torch.tensor([0.0, -2.5, 1.0, -1.0, -1.0, -1.0]))  # latent 1 rare, 2 always, 3-5 dead
    x = torch.randn(4000, 4, generator=torch.Generator().manual_seed(1))
    m = evaluate_activations(sae, [x])
    assert m.dead_fraction == pytest.approx(3 / 6)
    assert m.dense_fraction == pytest.approx(2 / 6)
    hist = m.log10_density_histogram
    assert hist["n_dead"] == 3 and sum(hist["counts"]) == 3
    assert hist["bin_edges"][-1] == 0.0 and hist["bin_edges"][0] <= -3
    h = density_histogram(torch.tensor([0.0, 2e-3, 2e-2, 0.5]), bins=3, lowest=1e-3)
    assert h["counts"] == [1, 1, 1] and h["n_dead"] == 1


@pytest.fixture(scope="module")
def tiny_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=12, d_head=4, n_heads=4, d_mlp=32, d_vocab=40,
                                  act_fn="relu", normalization_type="LN", device="cpu", seed=0)
    return HookedTransformer(cfg)


def test_downstream_perfect_sae_recovers_everything(tiny_model):
    tokens = torch.randint(0, 40, (6, 12), generator=torch.Generator().manual_seed(2))
    m = downstream_metrics(tiny_model, identity_sae(16, "blocks.0.hook_resid_post"), tokens, batch_size=4)
    assert m.n_tokens == 6 * 10  # predictions made from position 0 (BOS) are not counted, as in SAELens
    assert m.ce_spliced == pytest.approx(m.ce_clean, abs=1e-5)
    assert m.ce_loss_score == pytest.approx(1.0, abs=1e-3)
    assert m.kl_div == pytest.approx(0.0, abs=1e-6) and m.kl_div_score == pytest.approx(1.0, abs=1e-4)
    assert abs(m.ce_zero_ablation - m.ce_clean) > 1e-3 and m.kl_div_ablation > 0


def test_downstream_zero_sae_recovers_nothing_against_the_bos_kept_baseline(tiny_model):
    tokens = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(3))
    sae = identity_sae(16, "blocks.1.hook_resid_pre")
    with torch.no_grad():
        sae.W_dec.zero_()
    kept = downstream_metrics(tiny_model, sae, tokens, keep_bos_in_ablation=True)
    assert kept.ce_spliced == pytest.approx(kept.ce_zero_ablation, abs=1e-6)
    assert kept.ce_loss_score == pytest.approx(0.0, abs=1e-6) and kept.ablation == "BOS kept"
    assert kept.kl_div > 0
    field = downstream_metrics(tiny_model, sae, tokens)  # the field's baseline also zeroes BOS: a different loss
    assert field.ablation == "all positions" and field.ce_spliced == pytest.approx(kept.ce_spliced, abs=1e-6)
    assert abs(field.ce_zero_ablation - kept.ce_zero_ablation) > 1e-4


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"])
def test_downstream_resumed_passes_equal_full_hooked_passes(tiny_model, hook):
    """Residual hooks run the blocks before the hook once (start_at_layer); the numbers equal full hooked passes,
    computed here independently with run_with_hooks."""
    import torch.nn.functional as F

    tokens = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(4))
    sae = identity_sae(16, hook)
    with torch.no_grad():
        sae.W_dec.mul_(0.5)  # an imperfect SAE: spliced differs from clean
    m = downstream_metrics(tiny_model, sae, tokens, batch_size=2)

    def splice(act, hook):
        out = sae(act).clone()
        out[:, 0] = act[:, 0]
        return out

    ref = {}
    for name, hooks in (("clean", []), ("spliced", [(hook, splice)]), ("zero", [(hook, lambda a, hook: a * 0)])):
        with torch.no_grad():
            logp = tiny_model.run_with_hooks(tokens, fwd_hooks=hooks)[:, 1:-1].log_softmax(-1)
        ref[name] = logp
    tgt = tokens[:, 2:]
    ce = {k: float(F.nll_loss(v.reshape(-1, 40), tgt.reshape(-1))) for k, v in ref.items()}
    assert m.ce_clean == pytest.approx(ce["clean"], rel=1e-5)
    assert m.ce_spliced == pytest.approx(ce["spliced"], rel=1e-5)
    assert m.ce_zero_ablation == pytest.approx(ce["zero"], rel=1e-5)
    kl = float((ref["clean"].exp() * (ref["clean"] - ref["spliced"])).sum(-1).mean())
    assert m.kl_div == pytest.approx(kl, rel=1e-4)


def test_downstream_errors(tiny_model):
    tokens = torch.randint(0, 40, (2, 12))
    with pytest.raises(ValueError, match="no hook_name"):
        downstream_metrics(tiny_model, identity_sae(16), tokens)
    with pytest.raises(ValueError, match="no hook 'blocks.9.hook_resid_post'"):
        downstream_metrics(tiny_model, identity_sae(16), tokens, hook_name="blocks.9.hook_resid_post")
    with pytest.raises(ValueError, match="d_in=8"):
        downstream_metrics(tiny_model, identity_sae(8), tokens, hook_name="blocks.0.hook_resid_post")
