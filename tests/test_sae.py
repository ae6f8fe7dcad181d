"""SAE architectures, their objectives, the sparse training path, and the SAELens file format."""
from __future__ import annotations

import json

import pytest
import torch

from workbench.sae import io as sae_io
from workbench.sae.model import (ARCHITECTURES, SAE, JumpReLUFunction, SAEConfig, SAEMetadata, StepFunction,
                           geometric_median)
from workbench.sae.kernels import select_batch_topk, select_topk


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sae(arch: str, d: int = 16, n: int = 64, seed: int = 1, **kw) -> SAE:
    return SAE(SAEConfig(arch, d, n, k=kw.pop("k", 4), **kw), SAEMetadata("toy", "blocks.0.hook_resid_post", 32),
               seed=seed)


def _perturb(sae: SAE, x: torch.Tensor) -> None:
    """Make an SAE less symmetric than its init, deterministically."""
    gen = torch.Generator().manual_seed(123)
    sae.init_from_data(x, "mean")
    with torch.no_grad():
        sae.b_enc.add_(0.1 * torch.randn(sae.cfg.d_sae, generator=gen))
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(0.2 + 0.3 * torch.rand(sae.cfg.d_sae, generator=gen))


# ---------------------------------------------------------------------------------------------------------------
# The sparse path equals the dense path
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,centred", [(a, True) for a in ARCHITECTURES] + [("relu", False)])
def test_sparse_path_gradients_equal_dense_path(arch, centred):
    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(96, 16, generator=gen) + 1
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    results = {}
    for sparse in (True, False):
        sae = _sae(arch, jumprelu_bandwidth=0.5, apply_b_dec_to_input=centred)
        _perturb(sae, x)
        out = sae.training_loss(x, dead_mask=dead, sparsity_scale=0.7, sparse=sparse)
        out.loss.backward()
        assert out.sparse is sparse
        results[sparse] = (out, {n: p.grad.clone() for n, p in sae.named_parameters()})
    (o_s, g_s), (o_d, g_d) = results[True], results[False]
    assert torch.allclose(o_s.loss, o_d.loss, rtol=1e-5)
    assert torch.allclose(o_s.aux_loss, o_d.aux_loss, rtol=1e-5)
    assert torch.equal(o_s.fired, o_d.fired)
    if arch in ("topk", "batchtopk", "matryoshka"):
        assert o_s.aux_loss > 0  # dead latents exist, so AuxK is exercised
    if arch in ("relu", "jumprelu"):
        assert o_s.sparsity_loss > 0
    for name in g_s:
        scale = g_d[name].abs().max()
        assert scale > 0, name
        assert (g_s[name] - g_d[name]).abs().max() <= 1e-5 * scale + 1e-7, name


@pytest.mark.parametrize("centred", [True, False])
def test_dense_relu_step_matches_autograd_on_the_plain_formula(centred):
    """The fused dense ReLU node gives the loss and every gradient of the written-out objective."""
    gen = torch.Generator().manual_seed(7)
    x = 2 * torch.randn(80, 16, generator=gen) + 1
    sae = _sae("relu", l1_coefficient=0.8, apply_b_dec_to_input=centred)
    _perturb(sae, x)
    out = sae.training_loss(x, sparsity_scale=0.6, sparse=False)
    assert out.sparse is False
    out.loss.backward()
    fused = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()

    x_in = x - sae.b_dec if centred else x
    f = torch.relu(x_in @ sae.W_enc + sae.b_enc)
    x_hat = f @ sae.W_dec + sae.b_dec
    mse = (x - x_hat).pow(2).sum(-1).mean()
    l1 = 0.8 * 0.6 * (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    (mse + l1).backward()
    assert torch.allclose(out.loss, (mse + l1).detach(), rtol=1e-5)
    assert torch.allclose(out.sparsity_loss, l1.detach(), rtol=1e-5)
    assert float(out.l0) == pytest.approx(float((f > 0).sum(-1).float().mean()))
    assert torch.equal(out.fired, (f > 0).any(0))
    for name, p in sae.named_parameters():
        scale = p.grad.abs().max()
        assert scale > 0, name
        assert (fused[name] - p.grad).abs().max() <= 1e-5 * scale, name


def test_density_hint_picks_the_relu_path_before_any_selection(monkeypatch):
    x = torch.randn(64, 16)
    sae = _sae("relu")
    _perturb(sae, x)

    def no_selection(*args, **kwargs):
        raise AssertionError("a dense step computed a selection")

    with monkeypatch.context() as m:
        m.setattr(sae, "_selections", no_selection)
        assert sae.training_loss(x, sparse_max_density=0.1, density_hint=0.3).sparse is False
    assert sae.training_loss(x, sparse_max_density=0.1, density_hint=0.05).sparse is True
    # no hint: the selection's own density decides (half the latents fire at this init)
    assert sae.training_loss(x, sparse_max_density=0.1).sparse is False


def test_reused_buffers_never_feed_a_stale_graph():
    """Step buffers are reused: backward through a graph whose buffers a later step overwrote must fail loudly."""
    x = torch.randn(64, 16)
    sae = _sae("relu")
    first = sae.training_loss(x, sparse=False)
    sae.training_loss(x + 1, sparse=False)  # overwrites the codes buffer the first graph saved
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.loss.backward()


@pytest.mark.parametrize("arch", ["topk", "relu", "batchtopk"])
def test_low_precision_selection_keeps_exact_values(arch):
    """A bf16 selection GEMM only chooses entries: their values and the loss stay float32."""
    gen = torch.Generator().manual_seed(4)
    x = 3 * torch.randn(256, 16, generator=gen) + 2
    sae = _sae(arch)
    _perturb(sae, x)
    exact = sae.training_loss(x, sparse=True)
    fast = sae.training_loss(x, sparse=True, selection_dtype=torch.bfloat16)
    assert torch.allclose(fast.loss, exact.loss, rtol=1e-2)
    x_in = x - sae.b_dec.detach() if sae.cfg.apply_b_dec_to_input else x
    sel = sae.arch.select(sae, sae._selection_pre(x_in, torch.bfloat16).clone())
    ref = sae.arch.select(sae, sae._selection_pre(x_in, torch.float32).clone())
    entries = set((sel.rows * 64 + sel.idx).tolist())
    assert len(entries & set((ref.rows * 64 + ref.idx).tolist())) >= 0.95 * len(entries)
    # the kept values are the float32 pre-activations, not bf16-rounded ones
    sel.exact_pre(x_in, sae.W_enc.detach(), sae.b_enc.detach())
    assert torch.allclose(sel.pre, sae.pre_activations(x).detach()[sel.rows, sel.idx], atol=1e-5)


def test_topk_loss_matches_a_plain_reference():
    """Dense reference written from the paper's formulas: MSE + (1/32) AuxK on the residual."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 16, generator=gen) + 3
    sae = _sae("topk")
    _perturb(sae, x)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[10:40] = True
    out = sae.training_loss(x, dead_mask=dead, sparse=True)
    W_enc, b_enc, W_dec, b_dec = (t.detach() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    pre = (x - b_dec) @ W_enc + b_enc
    v, i = pre.topk(4, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, i, v.relu())
    x_hat = z @ W_dec + b_dec
    mse = (x - x_hat).pow(2).sum(-1).mean()
    e = x - x_hat
    k_aux = min(16 // 2, int(dead.sum()))
    va, ia = pre.masked_fill(~dead, -float("inf")).topk(k_aux, dim=-1)
    e_hat = torch.zeros_like(pre).scatter(-1, ia, va.relu()) @ W_dec
    aux = (e - e_hat).pow(2).sum(-1).mean() / 32
    assert torch.allclose(out.mse, mse, rtol=1e-5)
    assert torch.allclose(out.aux_loss, aux, rtol=1e-5)
    assert torch.allclose(out.loss.detach(), mse + aux, rtol=1e-5)


def test_auxk_target_counts_b_dec_once():
    """Dead latent 0 reconstructs the live latents' residual exactly, whatever b_dec: AuxK is zero."""
    d, n = 4, 4
    sae = SAE(SAEConfig("topk", d, n, k=1, aux_k=2), seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_dec.copy_(eye)
        sae.W_enc.copy_(eye)
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.full((d,), 100.0))
    x = (sae.b_dec.detach() + 2 * eye[0] + 3 * eye[1])[None]
    dead = torch.tensor([True, False, False, False])
    for sparse in (True, False):
        out = sae.training_loss(x, dead_mask=dead, sparse=sparse)
        assert out.mse == pytest.approx(4.0)  # latent 1 (value 3) kept, 2 * e0 left over
        assert float(out.aux_loss) == pytest.approx(0.0, abs=1e-9)
    # a residual component no dead latent can explain shows up at weight 1/32
    x2 = x + 0.5 * eye[3][None]
    with torch.no_grad():
        sae.W_enc[:, 3] = 0  # latent 3 never fires
    out = sae.training_loss(x2, dead_mask=dead, sparse=True)
    assert float(out.aux_loss) == pytest.approx(0.25 / 32, rel=1e-5)


def test_decoder_gradient_parallel_component_removed():
    x = torch.randn(64, 16) * 3
    sae = _sae("topk")
    _perturb(sae, x)
    sae.training_loss(x, sparse=True).loss.backward()
    g, w = sae.W_dec.grad, sae.W_dec.detach()
    assert (g * w).sum(1).abs().max() > 1e-4
    sae.remove_parallel_decoder_grad()
    assert (sae.W_dec.grad * w).sum(1).abs().max() < 1e-5
    sae.apply_constraints()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_relu_recipe_init_and_no_unit_norm():
    sae = _sae("relu")
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((64,), 0.1), atol=1e-6)
    assert torch.equal(sae.W_enc, sae.W_dec.t())
    with torch.no_grad():
        sae.W_dec.mul_(3)
    sae.apply_constraints()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((64,), 0.3), atol=1e-6)


def test_relu_penalty_is_l1_weighted_by_decoder_norm():
    x = torch.randn(32, 16)
    sae = _sae("relu", l1_coefficient=5.0)
    _perturb(sae, x)
    out = sae.training_loss(x, sparsity_scale=0.5, sparse=True)
    f = sae.encode(x)
    expected = 5.0 * 0.5 * (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    assert torch.allclose(out.sparsity_loss, expected.detach(), rtol=1e-5)


def test_jumprelu_straight_through_estimator():
    pre = torch.tensor([0.05, 0.26, 0.31, 0.9], requires_grad=True)
    theta = torch.full((4,), 0.3, requires_grad=True)
    out = JumpReLUFunction.apply(pre, theta, 0.1)
    assert torch.equal(out.detach(), torch.tensor([0.0, 0.0, 0.31, 0.9]))
    out.sum().backward()
    assert torch.equal(pre.grad, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    # rectangle kernel: entries within bandwidth/2 of theta give -(theta / bw)
    assert torch.allclose(theta.grad, torch.tensor([0.0, -3.0, -3.0, 0.0]))
    theta.grad = None
    StepFunction.apply(pre.detach(), theta, 0.1).sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([0.0, -10.0, -10.0, 0.0]))


def test_batch_topk_selection_is_exact():
    gen = torch.Generator().manual_seed(3)
    for pre in (torch.randn(64, 256, generator=gen),
                torch.cat([torch.randn(1, 256, generator=gen) + 10, torch.randn(63, 256, generator=gen)])):
        sel = select_batch_topk(pre, 3)  # the second case overflows one row's candidates: exact fallback
        ref = set(pre.reshape(-1).topk(3 * 64).indices.tolist())
        assert set((sel.rows * 256 + sel.idx).tolist()) == ref
        assert torch.equal(sel.rows, sel.rows.sort().values)
        assert torch.equal(sel.pre, pre[sel.rows, sel.idx])


def test_batchtopk_threshold_is_ema_of_min_activation():
    x = torch.randn(128, 16) * 2
    sae = _sae("batchtopk", k=2, threshold_ema_rate=0.5)
    _perturb(sae, x)
    with torch.no_grad():
        sae.threshold.fill_(-1.0)
    out = sae.training_loss(x, sparse=True)
    sae.apply_constraints(out)
    first = float(out.min_active)
    assert torch.allclose(sae.threshold, torch.full((64,), first))
    out2 = sae.training_loss(x * 1.5, sparse=True)
    sae.apply_constraints(out2)
    assert torch.allclose(sae.threshold, torch.full((64,), 0.5 * first + 0.5 * float(out2.min_active)))
    # inference uses the threshold, not the batch
    acts = sae.encode(x)
    pre = sae.pre_activations(x)
    assert torch.equal(acts > 0, pre > sae.threshold)


def test_encode_shapes_hooks_and_errors():
    sae = _sae("topk")
    x = torch.randn(2, 5, 16)
    acts = sae.encode(x)
    assert acts.shape == (2, 5, 64) and ((acts > 0).sum(-1) <= 4).all()
    assert sae(x).shape == x.shape
    _, cache = sae.run_with_cache(x)
    assert torch.equal(cache["hook_sae_acts_post"], acts)
    with pytest.raises(ValueError, match="d_in=16"):
        sae.encode(torch.randn(3, 17))
    with pytest.raises(ValueError, match="unknown SAE architecture 'hypothetical': choose one of relu, topk"):
        SAEConfig("hypothetical", 16, 64)
    with pytest.raises(ValueError, match="k=100"):
        SAEConfig("topk", 16, 64, k=100)


def test_folding_the_input_scale_preserves_the_function():
    x = torch.randn(20, 16) * 7
    for arch in ARCHITECTURES:
        sae = _sae(arch)
        _perturb(sae, x * 0.25)
        folded = sae.folded(0.25)
        assert torch.allclose(folded.encode(x), sae.encode(0.25 * x), atol=1e-5)
        assert torch.allclose(folded(x), sae(0.25 * x) / 0.25, atol=1e-4)


def test_geometric_median_resists_outliers():
    pts = torch.cat([torch.randn(200, 3) * 0.1, torch.full((20, 3), 100.0)])
    assert geometric_median(pts).norm() < 1.0
    assert pts.mean(0).norm() > 10.0


def test_select_topk_rows():
    pre = torch.randn(5, 9)
    sel = select_topk(pre, 3)
    assert sel.nnz == 15 and torch.equal(sel.offsets(), torch.arange(0, 16, 3))


# ---------------------------------------------------------------------------------------------------------------
# SAELens v6 files
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sae_lens():
    """SAELens, a required dependency: imported here rather than at the top only to keep collection fast."""
    import sae_lens

    return sae_lens


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_saved_sae_opens_in_sae_lens_with_same_encodings(tmp_path, sae_lens, arch):
    x = torch.randn(40, 16) * 5 + 2
    sae = _sae(arch)
    _perturb(sae, x * 0.5)
    path = sae_io.save_sae(sae, tmp_path / arch, input_scale=0.5)
    cfg = json.loads((path / "cfg.json").read_text())
    assert {"architecture", "d_in", "d_sae", "dtype", "metadata"} <= set(cfg)
    meta = cfg["metadata"]
    assert int(meta["sae_lens_version"].split(".")[0]) >= 6
    assert meta["model_name"] == "toy" and meta["hook_name"] == "blocks.0.hook_resid_post"
    assert meta["context_size"] == 32
    from safetensors.torch import load_file

    tensors = load_file(str(path / "sae_weights.safetensors"))
    assert tensors["W_enc"].shape == (16, 64) and tensors["W_dec"].shape == (64, 16)
    assert ("threshold" in tensors) == (arch in ("jumprelu", "batchtopk", "matryoshka"))

    theirs = sae_lens.SAE.load_from_disk(str(path))
    expected = sae.encode(0.5 * x)  # the folded file takes raw activations
    assert torch.allclose(theirs.encode(x), expected, atol=1e-5)
    ours = sae_io.load_sae(path)
    assert ours.cfg == sae.cfg and ours.metadata.hook_name == "blocks.0.hook_resid_post"
    assert torch.allclose(ours.encode(x), expected, atol=1e-5)
    assert torch.allclose(ours(x), theirs(x), atol=1e-4)


def _sae_lens_saes(sae_lens):
    from sae_lens import (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, JumpReLUSAE, JumpReLUSAEConfig,
                          StandardSAE, StandardSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig)

    torch.manual_seed(0)
    std = StandardSAE(StandardSAEConfig(d_in=16, d_sae=64))
    topk = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=16, d_sae=64, k=5, rescale_acts_by_decoder_norm=True))
    jump = JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=64))
    btk = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=16, d_sae=64, k=5))
    with torch.no_grad():
        for s in (std, topk, jump, btk):
            s.b_dec.normal_()
            s.b_enc.normal_(std=0.5)
            s.W_dec.mul_(torch.rand(64, 1) + 0.5)  # decoder norms not 1: exercises the norm folding
        jump.threshold.uniform_(0.0, 0.5)
        btk.topk_threshold.fill_(0.3)
    return {"standard": std, "topk": topk, "jumprelu": jump, "batchtopk": btk}


def test_sae_lens_saes_load_into_our_class(tmp_path, sae_lens):
    x = torch.randn(30, 16) * 2
    for name, theirs in _sae_lens_saes(sae_lens).items():
        if name == "batchtopk":  # SAELens saves BatchTopK for inference as JumpReLU with its threshold
            theirs.save_inference_model(str(tmp_path / name))
            reference = sae_lens.SAE.load_from_disk(str(tmp_path / name))
        else:
            theirs.save_model(str(tmp_path / name))
            reference = theirs
        from_disk = sae_io.load_sae(tmp_path / name)
        assert torch.allclose(from_disk.encode(x), reference.encode(x), atol=1e-5), name
        assert torch.allclose(from_disk(x), reference(x), atol=1e-4), name
        in_memory = sae_io.from_sae_lens(theirs)
        if name == "batchtopk":  # the training class's own encode is batch-level; compare with the threshold
            assert torch.allclose(in_memory.encode(x), reference.encode(x), atol=1e-5)
        else:
            assert torch.allclose(in_memory.encode(x), theirs.encode(x), atol=1e-5), name


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="cfg.json does not exist"):
        sae_io.load_sae(tmp_path)
    sae = _sae("topk")
    path = sae_io.save_sae(sae, tmp_path / "s")
    weights = path / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="sae_weights.safetensors"):
        sae_io.load_sae(path)
    cfg = json.loads((path / "cfg.json").read_text())
    cfg["architecture"] = "hypothetical"
    cfg["metadata"].pop("workbench")
    sae_io.save_sae(sae, tmp_path / "g")
    (tmp_path / "g" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'hypothetical' is not supported; workbench.SAE loads standard, topk"):
        sae_io.load_sae(tmp_path / "g")


def test_pretrained_offline_fails_fast_with_clear_error(monkeypatch, sae_lens):
    monkeypatch.setattr(sae_io, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ValueError, match="hub is unreachable"):
        sae_io.load_pretrained("gpt2-small-res-jb", "blocks.0.hook_resid_pre")


# ---------------------------------------------------------------------------------------------------------------
# gated (docs/methods.md §23): SAELens's training objective and folder format, both ways
# ---------------------------------------------------------------------------------------------------------------


def _sae_lens_gated(sae_lens, seed: int = 0):
    from sae_lens import GatedTrainingSAE, GatedTrainingSAEConfig

    torch.manual_seed(seed)
    theirs = GatedTrainingSAE(GatedTrainingSAEConfig(d_in=16, d_sae=64, l1_coefficient=2.0))
    with torch.no_grad():
        theirs.b_dec.normal_()
        theirs.b_gate.normal_(std=0.5)
        theirs.b_mag.normal_(std=0.5)
        theirs.r_mag.normal_(std=0.3)
        theirs.W_dec.mul_(torch.rand(64, 1) + 0.5)
    return theirs


def test_gated_objective_equals_sae_lens_training_loss_with_a_frozen_decoder_in_the_aux_term(sae_lens):
    from sae_lens.saes.sae import TrainStepInput

    theirs = _sae_lens_gated(sae_lens)
    x = torch.randn(48, 16) * 2
    out_theirs = theirs.training_forward_pass(TrainStepInput(x, {"l1": 2.0 * 0.5}, None, 0, False))
    ours = sae_io.from_sae_lens(theirs)
    ours.cfg.l1_coefficient = 2.0
    assert ours.cfg.architecture == "gated" and set(ours.tensor_names) >= {"r_mag", "b_mag"}
    for sparse in (True, False):
        out = ours.training_loss(x, sparsity_scale=0.5, sparse=sparse)
        assert out.sparse is sparse
        assert torch.allclose(out.loss, out_theirs.loss, rtol=1e-5)
        assert torch.allclose(out.mse, out_theirs.losses["mse_loss"], rtol=1e-5)
        assert torch.allclose(out.sparsity_loss, out_theirs.losses["l1_loss"], rtol=1e-5)
        assert torch.allclose(out.aux_loss, out_theirs.losses["auxiliary_reconstruction_loss"], rtol=1e-5)
        # the auxiliary reconstruction trains the gate through a frozen decoder: W_dec's gradient is that of
        # MSE + L1 alone, and b_enc (the gate bias) gets one only from the gate's two terms
        ours.zero_grad()
        out.loss.backward()
        dec_grad = ours.W_dec.grad.clone()
        ours.zero_grad()
        f = ours.encode(x)
        pi_gate = torch.relu((x - ours.b_dec) @ ours.W_enc + ours.b_enc)
        reference = ((f @ ours.W_dec + ours.b_dec - x).pow(2).sum(-1).mean()
                     + 1.0 * (pi_gate * ours.W_dec.norm(dim=1)).sum(-1).mean())
        reference.backward()
        assert torch.allclose(dec_grad, ours.W_dec.grad, atol=1e-5)
        ours.zero_grad()


def test_gated_round_trip_with_sae_lens(tmp_path, sae_lens):
    x = torch.randn(40, 16) * 3 + 1
    # SAELens -> ours, from disk and in memory
    theirs = _sae_lens_gated(sae_lens, seed=1)
    theirs.save_model(str(tmp_path / "theirs"))
    from_disk = sae_io.load_sae(tmp_path / "theirs")
    assert from_disk.cfg.architecture == "gated"
    for ours in (from_disk, sae_io.from_sae_lens(theirs)):
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)
        assert torch.allclose(ours.decode(ours.encode(x)), theirs.decode(theirs.encode(x)), atol=1e-5)
    assert (theirs.encode(x) > 0).float().mean() > 0.1  # the gate opens and closes: a real comparison
    # ours -> SAELens -> ours: a trained-looking gated SAE, folded input scale included
    sae = _sae("gated")
    _perturb(sae, x * 0.5)
    with torch.no_grad():
        sae.r_mag.copy_(0.3 * torch.randn(64))
        sae.b_mag.copy_(0.2 * torch.randn(64))
    path = sae_io.save_sae(sae, tmp_path / "ours", input_scale=0.5)
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["architecture"] == "gated"
    from safetensors.torch import load_file

    assert set(load_file(str(path / "sae_weights.safetensors"))) == {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec",
                                                                      "b_dec"}
    loaded = sae_lens.SAE.load_from_disk(str(path))
    assert type(loaded).__name__ == "GatedSAE"
    expected = sae.encode(0.5 * x)
    assert torch.allclose(loaded.encode(x), expected, atol=1e-5)
    assert torch.allclose(loaded.decode(expected), sae.decode(expected) / 0.5, atol=1e-5)
    loaded.save_model(str(tmp_path / "back"))
    back = sae_io.load_sae(tmp_path / "back")
    assert torch.allclose(back.encode(x), expected, atol=1e-5)
    assert torch.allclose(back(x), loaded(x), atol=1e-5)


def test_gated_codes_follow_the_gate_and_the_rescaled_magnitude():
    sae = _sae("gated")
    x = torch.randn(30, 16) * 2
    _perturb(sae, x)
    with torch.no_grad():
        sae.r_mag.copy_(torch.linspace(-1, 1, 64))
        sae.b_mag.copy_(torch.linspace(0.5, -0.5, 64))
    x_in = x - sae.b_dec
    gate = x_in @ sae.W_enc + sae.b_enc > 0
    magnitude = x_in @ sae.W_enc * sae.r_mag.exp() + sae.b_mag
    f = sae.encode(x)
    assert torch.allclose(f, torch.relu(magnitude) * gate, atol=1e-6)
    assert bool(((magnitude > 0) & ~gate).any())  # magnitude alone would fire here: the gate closes it
    assert not sae.cfg.unit_norm_decoder
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((64,), 0.1), atol=1e-6)
    from workbench.analysis.feature_kernels import sparse_encode

    rows, feats, vals = sparse_encode(sae, x.detach())
    assert torch.equal(torch.stack([rows, feats]), f.detach().nonzero().T)
    assert torch.allclose(vals, f.detach()[rows, feats])
