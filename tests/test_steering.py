"""Steering: clamping keeps the SAE error term (only the clamped feature changes), the generation loop with its
key-value cache, diff-of-means vectors, matched strengths, the measures, and the playground widget.

A tiny random TransformerLens model with the real SmolLM2 tokenizer keeps these fast; one test (max activations)
uses the small real store.
"""
from __future__ import annotations

import math

import pytest
import torch

from workbench.intervene.generation import GenerationConfig, generate, prepare_for_decoding, prompt_tokens
from workbench.sae.model import SAE, SAEConfig, SAEMetadata
from workbench.intervene.steering import (AddVector, ConceptCheck, SweepRow, best_within_cost, FeatureClamp, Steering, SteeringExample, clamp_feature,
                                concept_rate, diff_of_means, generation_nll, max_activations, mean_activation,
                                steered_generate, steered_loss, steering_methods, sweep)

from helpers import assert_balanced

D = 32
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def tiny(one_torch_thread):
    """A 3-layer random model over SmolLM2's vocabulary (tokenizer only; no weights loaded)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    cfg = HookedTransformerConfig(n_layers=3, d_model=D, n_ctx=128, d_head=8, n_heads=4, d_mlp=64, act_fn="gelu",
                                  d_vocab=len(tok), normalization_type="LN", seed=0)
    model = HookedTransformer(cfg, tokenizer=tok)
    model.eval()
    return model


def make_sae(arch: str = "relu", d_sae: int = 48, seed: int = 0) -> SAE:
    sae = SAE(SAEConfig(arch, D, d_sae, k=8), SAEMetadata(hook_name=HOOK), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(D, generator=g))
        sae.W_dec.mul_(torch.rand(d_sae, 1, generator=g) + 0.5)  # unequal decoder norms
    return sae


# ----------------------------------------------------------------------------------------------------------------
# Clamping on tensors
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_clamp_to_current_value_changes_nothing(arch):
    sae = make_sae(arch)
    x = torch.randn(3, 5, D) * 3
    f = sae.encode(x)
    for i in (int(f[0, 0].argmax()), int(f.sum((0, 1)).argmin())):  # an active and a mostly silent feature
        out = clamp_feature(x, sae, i, f[..., i])
        torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_clamp_moves_only_along_the_decoder_direction(arch):
    sae = make_sae(arch)
    x = torch.randn(4, 6, D) * 3
    i, value = 5, 7.5
    out = clamp_feature(x, sae, i, value)
    delta = out - x
    expected_coef = value - sae.encode(x)[..., i]
    torch.testing.assert_close(delta, expected_coef[..., None] * sae.W_dec[i].detach(), atol=1e-4, rtol=1e-5)
    # and the SAE error term is untouched: x' - SAE'(x') == x - SAE(x) where SAE' has f_i replaced by the value
    f = sae.encode(x)
    f_clamped = f.clone()
    f_clamped[..., i] = value
    torch.testing.assert_close(out - sae.decode(f_clamped), x - sae.decode(f), atol=1e-4, rtol=1e-5)


def test_clamp_rejects_bad_feature_and_width():
    sae = make_sae()
    with pytest.raises(ValueError, match="unknown feature index 48"):
        clamp_feature(torch.zeros(2, D), sae, 48, 1.0)
    with pytest.raises(ValueError, match="d_model mismatch"):
        clamp_feature(torch.zeros(2, D + 1), sae, 0, 1.0)
    with pytest.raises(ValueError, match="was trained on"):
        FeatureClamp(hook="blocks.0.hook_resid_post", sae=sae, feature=0, value=1.0)


# ----------------------------------------------------------------------------------------------------------------
# Clamping in the model
# ----------------------------------------------------------------------------------------------------------------


class _OwnValue(Steering):
    """Clamp to the feature's own current activation: must be the identity."""

    def __init__(self, sae, feature):
        super().__init__(hook=HOOK)
        self.sae, self.feature = sae, feature

    def apply(self, x):
        return clamp_feature(x, self.sae, self.feature, self.sae.encode(x)[..., self.feature])


def _logits_and_resid(model, tokens, steering):
    grabbed = {}

    def grab(act, hook):
        grabbed["x"] = act.detach().clone()

    hooks = (steering.hooks() if steering else []) + [(HOOK, grab)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens)
    return logits, grabbed["x"]


def test_clamp_in_the_model_keeps_logits_at_own_value_and_changes_only_that_direction(tiny):
    model, sae = tiny, make_sae("relu")
    tokens = prompt_tokens(model, "The bridge over the bay was painted red.")[None]
    clean, x = _logits_and_resid(model, tokens, None)
    f = sae.encode(x)
    i = int(f[0, 1:].sum(0).argmax())
    same, _ = _logits_and_resid(model, tokens, _OwnValue(sae, i))
    torch.testing.assert_close(same, clean, atol=1e-4, rtol=1e-4)

    value = 20.0
    steered, x_new = _logits_and_resid(model, tokens, FeatureClamp(hook=HOOK, sae=sae, feature=i, value=value))
    assert (steered - clean).abs().max() > 1e-2
    torch.testing.assert_close(x_new[:, 0], x[:, 0])  # the first token (BOS) is not steered by default
    expected = (value - f[0, 1:, i])[:, None] * sae.W_dec[i].detach()
    torch.testing.assert_close(x_new[0, 1:] - x[0, 1:], expected, atol=1e-4, rtol=1e-5)


def test_steering_reaches_every_generated_position(tiny):
    seen = []

    class Recorder(Steering):
        def apply(self, x):
            seen.append(x.shape[1])
            return x

    ids = prompt_tokens(tiny, "one two three four")
    cfg = GenerationConfig(max_new_tokens=5, n_samples=2, temperature=0, stop_at_eos=False)
    out = steered_generate(tiny, ids, Recorder(hook=HOOK, skip_first=1), cfg)
    # the prompt pass steers every position but the first, then each fed-back generated token (the last one
    # sampled is never fed back)
    assert seen == [len(ids) - 1] + [1] * (cfg.max_new_tokens - 1)
    assert out.ids.shape == (2, 5)

    seen.clear()
    steered_generate(tiny, ids, Recorder(hook=HOOK, skip_first=len(ids) + 2), cfg)
    assert seen == [1, 1]  # positions before skip_first, prompt and generated alike, are left alone


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


def test_greedy_generation_matches_full_forward_and_relayout_is_exact(tiny):
    ids = prompt_tokens(tiny, "Once upon a time")
    with torch.no_grad():
        before = tiny(ids[None])
    prepare_for_decoding(tiny)
    with torch.no_grad():
        after = tiny(ids[None])
    assert torch.equal(before, after)
    out = generate(tiny, ids, GenerationConfig(max_new_tokens=6, n_samples=1, temperature=0, stop_at_eos=False))
    seq = ids.clone()
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, tiny(seq[None])[0, -1].argmax()[None]])
    assert out.ids[0].tolist() == seq[len(ids):].tolist()


def test_sampling_is_seeded(tiny):
    cfg = GenerationConfig(max_new_tokens=8, n_samples=3, temperature=1.0, top_p=1.0, seed=3, stop_at_eos=False)
    a = generate(tiny, "Hello there", cfg)
    b = generate(tiny, "Hello there", cfg)
    c = generate(tiny, "Hello there", GenerationConfig(**{**cfg.__dict__, "seed": 4}))
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, c.ids)
    assert len({tuple(r) for r in a.ids.tolist()}) > 1  # the samples of one call differ from each other


def test_prompt_tokens_bos_once_and_errors(tiny):
    bos = tiny.tokenizer.bos_token_id
    ids = prompt_tokens(tiny, "hi")
    assert ids[0] == bos and (ids == bos).sum() == 1
    templated = tiny.tokenizer.bos_token + "system\nhi"
    assert (prompt_tokens(tiny, templated) == bos).sum() == 1
    with pytest.raises(ValueError, match="empty"):
        prompt_tokens(tiny, "")
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)


def test_generation_nll_matches_a_direct_computation(tiny):
    gen = generate(tiny, "The cat", GenerationConfig(max_new_tokens=4, n_samples=2, seed=1, stop_at_eos=False))
    nll = generation_nll(tiny, gen)
    seq = torch.cat([gen.prompt_ids, gen.ids[1]])
    with torch.no_grad():
        logp = tiny(seq[None])[0].log_softmax(-1)
    n_p = len(gen.prompt_ids)
    direct = -torch.stack([logp[n_p - 1 + t, seq[n_p + t]] for t in range(4)]).mean()
    assert float(nll[1]) == pytest.approx(float(direct), rel=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Diff of means, matched strengths, measures
# ----------------------------------------------------------------------------------------------------------------


def test_diff_of_means_averages_completion_tokens_only(tiny):
    pos = [SteeringExample("The weather is", " sunny and warm"), SteeringExample("Today it is", " bright")]
    neg = [SteeringExample("The weather is", " cold and grey today")]
    v = diff_of_means(tiny, HOOK, pos, neg)

    def manual(examples):
        rows = []
        for ex in examples:
            n_p = len(prompt_tokens(tiny, ex.prompt))
            _, cache = tiny.run_with_cache(prompt_tokens(tiny, ex.text)[None], names_filter=HOOK)
            rows.append(cache[HOOK][0, n_p:])
        return torch.cat(rows).mean(0)

    torch.testing.assert_close(v, manual(pos) - manual(neg), atol=1e-5, rtol=1e-5)
    assert float(diff_of_means(tiny, HOOK, pos, pos).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="no examples"):
        mean_activation(tiny, HOOK, [])
    with pytest.raises(ValueError, match="unknown hook"):
        diff_of_means(tiny, "blocks.9.hook_resid_post", pos, neg)


def test_methods_add_vectors_of_matched_norm():
    sae = make_sae()
    i, mx, c = 3, 2.5, -4.0
    v = torch.randn(D)
    methods = steering_methods(sae, i, mx, vectors={"diff of means": v})
    target = abs(c) * mx * float(sae.W_dec[i].detach().norm())
    added = methods["add feature"](c).vector
    assert float(added.norm()) == pytest.approx(target, rel=1e-5)
    w = sae.W_dec[i].detach()
    torch.testing.assert_close(added / added.norm(), -w / w.norm())
    dom = methods["diff of means"](c).vector
    assert float(dom.norm()) == pytest.approx(target, rel=1e-5)
    assert float(torch.cosine_similarity(dom, v, dim=0)) == pytest.approx(-1.0, abs=1e-5)
    clamp = methods["clamp"](c)
    assert clamp.value == pytest.approx(c * mx) and clamp.feature == i
    # where the feature is off, clamping and adding its direction are the same intervention
    x = torch.randn(4, D)
    off = sae.encode(x)[:, i] == 0
    if off.any():
        torch.testing.assert_close(clamp.apply(x)[off], x[off] + added, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="never fires"):
        steering_methods(sae, i, 0.0)
    with pytest.raises(ValueError, match="d_model mismatch"):
        steering_methods(sae, i, 1.0, vectors={"bad": torch.ones(D + 1)})


def test_concept_check_and_rate():
    gg = ConceptCheck("golden gate", r"golden gate|san francisco")
    texts = ["I walked across the Golden Gate.", "Paris is lovely", "SAN FRANCISCO fog", "golden retriever"]
    assert [gg(t) for t in texts] == [True, False, True, False]
    assert concept_rate(texts, gg) == 0.5
    with pytest.raises(ValueError, match="bad regular expression"):
        ConceptCheck("bad", "(unclosed")
    with pytest.raises(ValueError, match="no texts"):
        concept_rate([], gg)


def test_steered_loss_and_sweep(tiny):
    sae = make_sae()
    tokens = torch.stack([prompt_tokens(tiny, "a b c d e f g h i j")] * 2)
    base = steered_loss(tiny, tokens)
    with torch.no_grad():
        direct = tiny(tokens, return_type="loss", loss_per_token=True)[:, 1:].mean()
    assert base == pytest.approx(float(direct), rel=1e-5)
    big = AddVector(hook=HOOK, vector=torch.randn(D) * 50)
    assert steered_loss(tiny, tokens, big) != pytest.approx(base, rel=1e-3)

    cfg = GenerationConfig(max_new_tokens=3, n_samples=2, seed=0, stop_at_eos=False)
    methods = steering_methods(sae, 0, 1.0)
    rows = sweep(tiny, ["x y", "z"], methods, [2.0, -2.0], ConceptCheck("any", r"\S"), cfg, neutral=tokens)
    assert [(r.method, r.strength) for r in rows] == [("none", 0.0), ("clamp", 2.0), ("clamp", -2.0),
                                                     ("add feature", 2.0), ("add feature", -2.0)]
    assert rows[0].neutral_ppl_ratio == pytest.approx(1.0)
    assert rows[0].neutral_ppl == pytest.approx(math.exp(base), rel=1e-5)
    assert all(r.n == 4 for r in rows) and all(0 < r.distinct <= 1 for r in rows)
    # the unsteered row reproduces a plain generation with the same seed
    assert rows[0].texts[:2] == generate(tiny, "x y", cfg).texts


# ----------------------------------------------------------------------------------------------------------------
# Max activations over a real store
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_max_activations_match_per_context_encoding(small_store, tmp_path):
    from workbench.analysis.features import encode_contexts

    sae = SAE(SAEConfig("relu", small_store.d_model, 16), SAEMetadata(hook_name=small_store.hooks[0]), seed=0)
    with torch.no_grad():  # scale to raw activations so that some features fire and others do not
        sae.W_enc.mul_(1e-3)
        sae.b_enc.copy_(torch.linspace(-8, 2, 16))
    n_ctx = 8
    max_tokens = n_ctx * (small_store.context_size - 1)
    mx = max_activations(small_store, sae, max_tokens=max_tokens, batch_size=100)
    _, acts = encode_contexts(small_store, sae, range(n_ctx))
    torch.testing.assert_close(mx, acts.amax((0, 1)), atol=1e-4, rtol=1e-4)
    assert (mx > 0).any() and (mx == 0).any()
    cached = max_activations(small_store, sae, max_tokens=max_tokens, cache=tmp_path)
    assert torch.equal(cached, mx) and len(list(tmp_path.glob("*.safetensors"))) == 1
    with torch.no_grad():
        sae.b_enc.add_(1.0)  # another SAE: the cache must not answer for it
    assert not torch.equal(max_activations(small_store, sae, max_tokens=max_tokens, cache=tmp_path), mx)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


# ----------------------------------------------------------------------------------------------------------------
# The playground
# ----------------------------------------------------------------------------------------------------------------


def test_playground_runs_side_by_side(tiny):
    from widgets.steering_playground import SteeringPlayground

    sae = make_sae()
    mx = torch.full((sae.cfg.d_sae,), 2.0)
    mx[7] = 0.0
    pg = SteeringPlayground(tiny, sae, mx, explanations={3: "bridges and <ships>", 4: "the weather"},
                            config=GenerationConfig(max_new_tokens=4, n_samples=2, stop_at_eos=False), chat=False)
    assert pg.search("ships") == [3]
    assert pg.search("12") == [12]
    assert pg.search("F5") == [5]
    by_text = pg.search("harbour lights at dawn")  # no explanation matches: the features firing on the text
    assert by_text and all(float(mx[i]) > 0 for i in by_text)
    with pytest.raises(ValueError, match="unknown feature index"):
        pg.search("999")
    with pytest.raises(ValueError, match="no prompt"):
        pg.run()
    pg.set_prompt("The harbour at dawn")
    with pytest.raises(ValueError, match="no feature"):
        pg.run()
    with pytest.raises(ValueError, match="never fired"):
        pg.set_feature(7)
    with pytest.raises(ValueError, match="outside"):
        pg.set_strength(1000)
    pg.set_feature(3)
    pg.set_strength(0.0)
    plain, zero = pg.run()
    assert pg.steering().value == 0.0
    pg.set_method("add feature")
    plain2, same = pg.run()
    assert plain2 == plain and same == plain  # adding 0 x the direction changes nothing
    pg.set_strength(20.0)
    _, steered = pg.run()
    assert steered != plain
    assert pg.steered.ids.shape == (2, 4)
    page = pg.to_html()
    assert_balanced(page)
    assert "unsteered" in page and "add feature F3 at +20x" in page and "&lt;ships&gt;" in page
    with pytest.raises(ValueError, match="unknown method"):
        pg.set_method("ablate")
    with pytest.raises(ValueError, match="max_activations"):
        SteeringPlayground(tiny, sae, torch.ones(5))
    box = pg.widget  # the ipywidgets view builds and mirrors the state
    assert pg._ui["feature"].value == 3


def test_best_within_cost_compares_at_matched_perplexity():
    def row(method, c, rate, ratio):
        return SweepRow(method, c, rate, 10 * ratio, ratio, 5.0, 0.9, 4)

    rows = [row("none", 0, 0.1, 1.0), row("clamp", 2, 0.5, 1.5), row("clamp", 5, 0.9, 3.0),
            row("dom", 2, 0.2, 1.2), row("dom", 5, 0.6, 1.9), row("add", 9, 1.0, 9.0)]
    best = best_within_cost(rows, max_ppl_ratio=2.0)
    assert {m: (r.strength, r.concept_rate) for m, r in best.items()} == {"none": (0, 0.1), "clamp": (2, 0.5),
                                                                          "dom": (5, 0.6)}
    low = best_within_cost(rows, max_ppl_ratio=2.0, goal="decrease")
    assert low["dom"].strength == 2 and low["clamp"].strength == 2
    with pytest.raises(ValueError, match="goal"):
        best_within_cost(rows, goal="up")


def test_screen_features_ranks_alive_candidates(tiny):
    from workbench.intervene.steering import screen_features

    sae = make_sae()
    mx = torch.full((sae.cfg.d_sae,), 1.5)
    mx[2] = 0.0
    cfg = GenerationConfig(max_new_tokens=3, n_samples=2, seed=0, stop_at_eos=False)
    check = ConceptCheck("a", r"a")
    rows = screen_features(tiny, sae, [1, 2, 3, 4], mx, ["hello"], check, 5.0, cfg)
    assert sorted(r.method for r in rows) == ["F1", "F3", "F4"]  # F2 never fired
    same = screen_features(tiny, sae, [4, 3, 1], mx, ["hello"], ConceptCheck("never", r"\d{9}"), 5.0, cfg,
                           max_gen_ppl_ratio=float("inf"))
    assert [r.method for r in same] == ["F4", "F3", "F1"]  # all tied at rate 0: the candidates' order is kept
    rates = [r.concept_rate for r in rows]
    low = screen_features(tiny, sae, [1, 3, 4], mx, ["hello"], check, 5.0, cfg, goal="decrease",
                          max_gen_ppl_ratio=float("inf"))
    low_rates = [r.concept_rate for r in low]
    assert low_rates == sorted(low_rates) and sorted(low_rates) == sorted(rates)
    with pytest.raises(ValueError, match="ever fired"):
        screen_features(tiny, sae, [2], mx, ["hello"], check, 5.0, cfg)


def test_contrast_completions_finds_the_feature_that_separates_completions(tiny):
    from workbench.intervene.steering import completion_features, contrast_completions

    sae = make_sae("relu")
    pos = [SteeringExample("The weather is", " sunny and warm"), SteeringExample("Today it is", " bright")]
    neg = [SteeringExample("The weather is", " cold and grey today")]
    fa, fb = completion_features(tiny, sae, pos), completion_features(tiny, sae, neg)
    assert fa.shape[0] == sum(len(prompt_tokens(tiny, e.text)) - len(prompt_tokens(tiny, e.prompt)) for e in pos)
    hits = contrast_completions(tiny, sae, pos, neg, by="diff", top_n=5)
    diff = fa.mean(0) - fb.mean(0)
    assert [h.feature for h in hits] == [i for i in diff.topk(5).indices.tolist() if diff[i] > 0]
    assert hits[0].diff == pytest.approx(float(diff.max()), rel=1e-5)
    by_score = contrast_completions(tiny, sae, pos, neg, top_n=3)
    assert all(a.score >= b.score for a, b in zip(by_score, by_score[1:]))
    with pytest.raises(ValueError, match="needs max_activations"):
        contrast_completions(tiny, sae, pos, neg, by="relative")
