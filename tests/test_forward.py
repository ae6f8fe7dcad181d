"""Tests for workbench.data.forward: TransformerLens hook names read off the HF model rebuilt from the same weights.

Every hook kind the project harvests is compared with ``HookedTransformer.run_with_hooks`` on both embedded models
(short real text, so it is quick), in float32 and after the bf16 rounding the store applies; a harvest through the
new path is compared with one through ``HookedTransformer`` (same store key, same stored values within bf16 ulps).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data import forward as fwd
from workbench.data import harvest as harvest_mod
from workbench.data.corpus import CorpusSpec
from workbench.data.harvest import HarvestConfig, HarvestSpec, harvest

pytestmark = pytest.mark.slow

KINDS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "mlp.hook_post",
         "mlp.hook_pre", "mlp.hook_pre_linear")
TEXTS = ["Fact: Dallas is a city in the state of", "La capital de Francia es Madrid. Le chat est assis sur le"]
F32_RTOL = 1e-4  # max |HF - TL| / max |TL| per hook, both float32


@pytest.fixture(scope="module")
def smollm():
    from workbench.data.models import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


def _tokens(model) -> torch.Tensor:
    toks = [model.to_tokens(t, prepend_bos=True)[0, :10] for t in TEXTS]
    return torch.stack(toks)


def _hooks(model) -> list[str]:
    mid, first = model.cfg.n_layers // 2, 0
    return [f"blocks.{layer}.{kind}" for layer in (first, mid) for kind in KINDS]


def _bf16_agree(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of entries whose bf16 roundings are equal or one bf16 step apart (what a store keeps); entries
    below 1e-3 of the activation's scale are judged by the step at that floor (float32 noise dwarfs them)."""
    a16, b16 = a.to(torch.bfloat16).float(), b.to(torch.bfloat16).float()
    floor = 1e-3 * float(b16.abs().max())
    step = b16.abs().clamp_min(floor) * 2.0**-7  # one bf16 ulp at that magnitude (8 significant bits)
    return float(((a16 - b16).abs() <= step).float().mean())


@pytest.mark.parametrize("which", ["gemma", "smollm"])
def test_every_harvested_hook_matches_hooked_transformer(which, request):
    model = request.getfixturevalue(which)
    hooks = _hooks(model)
    tokens = _tokens(model)
    hf = fwd.hook_forward(model, hooks, prefer="hf", check=False)
    assert hf.path == "hf"
    ours, theirs = hf(tokens), fwd.tl_forward(model, hooks)(tokens)
    errors = fwd.max_relative_error(ours, theirs)
    assert max(errors.values()) < F32_RTOL, errors
    for hook in hooks:
        assert ours[hook].shape == theirs[hook].shape
        assert _bf16_agree(ours[hook], theirs[hook]) == 1.0, hook
    # the hooks are distinct points, not one tensor reported under several names
    mid = model.cfg.n_layers // 2
    pre, post = ours[f"blocks.{mid}.hook_resid_pre"], ours[f"blocks.{mid}.hook_resid_post"]
    attn, mlp = ours[f"blocks.{mid}.hook_attn_out"], ours[f"blocks.{mid}.hook_mlp_out"]
    torch.testing.assert_close(pre + attn + mlp, post, rtol=1e-4, atol=1e-4 * float(post.abs().max()))
    assert float((pre - post)[:, 1:].norm()) > 1e-2 * float(post[:, 1:].norm())  # after BOS's massive activations


def test_hf_causal_lm_gives_the_same_logits(smollm):
    tokens = _tokens(smollm)
    hf = fwd.hf_model_from_tl(smollm, causal_lm=True)
    with torch.inference_mode():
        ours = hf(input_ids=tokens, use_cache=False).logits
        theirs = smollm(tokens)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-3)
    assert hf.model.embed_tokens.weight.data_ptr() == smollm.embed.W_E.data_ptr()  # shared, not copied


def test_unsupported_hooks_fall_back_to_hooked_transformer(gemma):
    hooks = ["blocks.2.ln2.hook_normalized", "blocks.2.hook_resid_post"]
    assert not fwd.hf_supports_hook(hooks[0]) and fwd.hf_supports_hook(hooks[1])
    forward = fwd.hook_forward(gemma, hooks)
    assert forward.path == "hooked_transformer"
    out = forward(_tokens(gemma))
    assert set(out) == set(hooks) and out[hooks[0]].shape[-1] == gemma.cfg.d_model
    with pytest.raises(ValueError, match="ln2.hook_normalized"):
        fwd.hook_forward(gemma, hooks, prefer="hf")
    with pytest.raises(ValueError, match="n_layers must be in 1..18"):
        fwd.hf_model_from_tl(gemma, n_layers=19)


def test_a_wrong_mapping_is_caught_and_falls_back(gemma, monkeypatch):
    """The build-time check compares with HookedTransformer: a hook read at the wrong HF site is refused."""
    gemma.__dict__.pop("_workbench_hf_checked", None)  # forget what earlier tests verified for these weights
    gemma.__dict__.pop("_workbench_hf_forwards", None)  # and the HF builds they kept, so this one is built afresh
    original = fwd._hf_site
    monkeypatch.setattr(fwd, "_hf_site", lambda layer, point, gemma_: original(
        layer, "hook_resid_pre" if point == "hook_resid_mid" else point, gemma_))
    hooks = ["blocks.1.hook_resid_mid"]
    with pytest.warns(UserWarning, match="disagrees"):
        forward = fwd.hook_forward(gemma, hooks)
    assert forward.path == "hooked_transformer"
    with pytest.raises(RuntimeError, match="disagrees"):
        fwd.hook_forward(gemma, hooks, prefer="hf")
    monkeypatch.undo()
    assert fwd.hook_forward(gemma, hooks).path == "hf"  # the right mapping passes, and is remembered
    assert set(hooks) <= set().union(*gemma.__dict__["_workbench_hf_checked"].values())


def test_the_hf_build_is_kept_for_the_same_weights_and_rebuilt_when_they_change(smollm):
    """Repeated harvests reuse one HF copy of the weights; an in-place edit of any weight forces a rebuild."""
    hooks = ["blocks.1.hook_resid_post"]
    first = fwd.hook_forward(smollm, hooks)
    assert first.path == "hf" and fwd.hook_forward(smollm, hooks) is first
    w = smollm.blocks[0].mlp.W_out
    tokens = _tokens(smollm)
    before = first(tokens)[hooks[0]]
    with torch.no_grad():
        w.mul_(2.0)
    try:
        rebuilt = fwd.hook_forward(smollm, hooks)
        assert rebuilt is not first
        after = rebuilt(tokens)[hooks[0]]
        expect = fwd.tl_forward(smollm, hooks)(tokens)[hooks[0]]
        assert not torch.allclose(after, before)
        assert fwd.max_relative_error({"x": after}, {"x": expect})["x"] < fwd.CHECK_RTOL
    finally:
        with torch.no_grad():
            w.div_(2.0)


def test_harvest_uses_hf_path_and_cached_stores_stay_valid(gemma, tmp_path, monkeypatch):
    """Same spec, same key, stored bf16 values equal within one bf16 step whichever forward ran, for every hook kind
    the project harvests (their widths taken from the config, d_model or d_mlp)."""
    spec = HarvestSpec(n_tokens=256, context_size=32, corpus=CorpusSpec(source="wiki"),
                       hooks=("blocks.4.hook_resid_post", "blocks.4.hook_mlp_out", "blocks.4.hook_resid_mid",
                              "blocks.3.hook_resid_pre", "blocks.3.hook_attn_out", "blocks.3.mlp.hook_post"))
    config = HarvestConfig(batch_contexts=4, shard_contexts=8, progress=False)
    new = harvest(spec, tmp_path / "hf", model=gemma, config=config)
    assert new.manifest["extra"]["forward"] == "hf"

    real = harvest_mod.hook_forward
    monkeypatch.setattr(harvest_mod, "hook_forward",
                        lambda model, hooks: real(model, hooks, prefer="hooked_transformer"))
    old = harvest(spec, tmp_path / "tl", model=gemma, config=config)
    assert old.manifest["extra"]["forward"] == "hooked_transformer"
    assert np.array_equal(new.token_ids(), old.token_ids())
    for hook in spec.hooks:
        a = torch.cat([new.activations(i, hook=hook, dtype=None) for i in range(new.n_contexts)])
        b = torch.cat([old.activations(i, hook=hook, dtype=None) for i in range(old.n_contexts)])
        assert a.dtype == torch.bfloat16 and a.shape == b.shape
        assert a.shape[-1] == (gemma.cfg.d_mlp if hook.endswith("mlp.hook_post") else gemma.cfg.d_model), hook
        assert _bf16_agree(a.float(), b.float()) == 1.0, hook
        assert float((a.float() - b.float()).abs().max()) <= 2.0**-7 * float(b.float().abs().max())


# ----------------------------------------------------------------------------------------------------------------
# Generation on the HF model (workbench.intervene.generation with backend="hf")
# ----------------------------------------------------------------------------------------------------------------


def test_generation_backends_agree_with_and_without_steering(smollm):
    from workbench.intervene.generation import GenerationConfig, cache_offset, generate

    cfg = dict(max_new_tokens=8, n_samples=2, temperature=0, stop_at_eos=False)
    hook = "blocks.10.hook_resid_post"
    vector = torch.randn(smollm.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 4.0

    def run(backend: str, steer: bool):
        seen = []

        def hooks(cache):
            def fn(act, hook):
                seen.append((cache_offset(cache, act.shape[1]), act.shape[1]))
                return act + vector if steer else None
            return [(hook, fn)]

        out = generate(smollm, "The capital of France is", GenerationConfig(**cfg, backend=backend), fwd_hooks=hooks)
        return out.ids, seen

    for steer in (False, True):
        (a, seen_a), (b, seen_b) = run("hf", steer), run("hooked_transformer", steer)
        assert torch.equal(a, b), (steer, a, b)
        assert seen_a == seen_b and seen_a[0][0] == 0 and seen_a[1] == (seen_a[0][1], 1)
    assert not torch.equal(run("hf", True)[0], run("hf", False)[0])  # the steering hook did act on the HF path


def test_generation_hf_path_sampling_is_seeded_and_falls_back(smollm):
    from workbench.intervene.generation import GenerationConfig, generate

    cfg = GenerationConfig(max_new_tokens=6, n_samples=3, temperature=1.0, top_p=0.95, seed=5, stop_at_eos=False)
    a, b = generate(smollm, "Once upon a time", cfg), generate(smollm, "Once upon a time", cfg)
    assert torch.equal(a.ids, b.ids) and len({tuple(r) for r in a.ids.tolist()}) > 1
    mid = [("blocks.3.hook_resid_mid", lambda act, hook: None)]  # no faithful HF site: HookedTransformer runs it
    out = generate(smollm, "Once upon a time", GenerationConfig(max_new_tokens=2, n_samples=1), fwd_hooks=mid)
    assert out.ids.shape == (1, 2)
    with pytest.raises(ValueError, match="backend='hf' cannot run"):
        generate(smollm, "Once", GenerationConfig(max_new_tokens=2, n_samples=1, backend="hf"), fwd_hooks=mid)


def test_harvest_runs_one_hf_forward_per_batch_for_several_hooks(gemma, tmp_path, monkeypatch):
    calls = []
    real = harvest_mod.hook_forward

    def counting(model, hooks):
        forward = real(model, hooks)
        run = forward._run
        forward._run = lambda tokens: calls.append((sorted(forward.hooks), tuple(tokens.shape))) or run(tokens)
        return forward

    monkeypatch.setattr(harvest_mod, "hook_forward", counting)
    hooks = ("blocks.2.hook_resid_post", "blocks.9.hook_resid_post")
    spec = HarvestSpec(hooks=hooks, n_tokens=6 * 16, context_size=16, corpus=CorpusSpec(source="wiki"))
    store = harvest(spec, tmp_path / "two", model=gemma,
                    config=HarvestConfig(batch_contexts=4, shard_contexts=8, progress=False))
    assert calls == [(sorted(hooks), (4, 16)), (sorted(hooks), (2, 16))]  # 6 contexts, batch 4, both hooks at once
    assert store.manifest["extra"]["forward"] == "hf"
    assert not torch.allclose(store.activations(3, hook=hooks[0]), store.activations(3, hook=hooks[1]))
