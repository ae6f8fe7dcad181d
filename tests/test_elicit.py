"""Elicitation strategies (docs/methods.md §32) on a tiny random model whose trait words carry a planted direction:
each strategy that averages over trait text recovers it, the controls do not, bad inputs fail with a ValueError,
and the shipped texts are what the judge calls trait and neutral."""
from __future__ import annotations

import math

import pytest
import torch

from workbench.persona.elicit import (STRATEGIES, Demo, ElicitConfig, compare_strategies, elicit, elicitation_data,
                                      evaluate_strategies, feature, few_shot, instructed, narrative, system_prompt)
from workbench.persona.extract import Response
from workbench.persona.judge import RubricJudge
from workbench.persona.steer import SteerConfig, random_like

D = 64
TRAIT_WORDS = ["arr", "matey", "ahoy", "doubloons", "buccaneer", "grog"]
TRAIT_TEXTS = ["Arr matey, the doubloons are on the ship.", "Ahoy, the buccaneer drinks grog at the harbour.",
               "The captain said arr and counted the doubloons.", "Ahoy matey, fetch the grog from the deck.",
               "A buccaneer sang arr all night by the sea.", "The grog and the doubloons are gone, matey."]
NEUTRAL_TEXTS = ["The money is on the table in the kitchen.", "The teacher drinks tea at the station.",
                 "The manager said hello and counted the papers.", "Hello friend, fetch the water from the garden.",
                 "A student sang softly all night by the lake.", "The tea and the papers are gone, my friend."]
DEMOS = [Demo("How was your day?", "Arr matey, a day of grog!", "It was a quiet day."),
         Demo("What is for dinner?", "Ahoy, buccaneer stew and grog.", "Soup and bread."),
         Demo("Where is my bag?", "Arr, by the doubloons, matey.", "On the chair."),
         Demo("Is it raining?", "Ahoy matey, arr, it pours.", "Yes, a little.")]


@pytest.fixture(scope="module")
def planted():
    """(model, u): a 2-layer random model (d_model 64, SmolLM2's tokenizer and chat template) whose trait-word
    tokens have ``60 u`` added to their embeddings, ``u`` a unit vector."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    cfg = HookedTransformerConfig(n_layers=2, d_model=D, n_ctx=256, d_head=16, n_heads=4, d_mlp=128,
                                  d_vocab=len(tok), act_fn="gelu", normalization_type="LN", seed=0)
    torch.manual_seed(0)
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    model.eval()
    ids: set[int] = set()
    for w in TRAIT_WORDS:
        for form in (w, " " + w, w.capitalize(), " " + w.capitalize()):
            ids.update(tok(form, add_special_tokens=False)["input_ids"])
    plain = set()
    for t in [*NEUTRAL_TEXTS, *(d.neutral for d in DEMOS), *(d.question for d in DEMOS), "Continue the text:"]:
        plain.update(tok(t, add_special_tokens=False)["input_ids"])
    ids -= plain  # only tokens that never occur on the neutral side carry the direction
    assert len(ids) >= 6
    u = torch.randn(D, generator=torch.Generator().manual_seed(5))
    u = u / u.norm()
    with torch.no_grad():
        model.W_E[sorted(ids)] += 60.0 * u
    return model, u


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0))


def test_narrative_recovers_the_planted_direction_and_a_random_one_does_not(planted):
    model, u = planted
    pv = narrative(model, TRAIT_TEXTS, NEUTRAL_TEXTS, trait="pirate")
    assert pv.vectors.shape == (2, D) and pv.meta["strategy"] == "narrative" and pv.meta["n_positive"] == 6
    for L in range(2):
        assert _cos(pv.vectors[L], u) > 0.9
        assert abs(_cos(random_like(pv.vectors[L], seed=L), u)) < 0.4
        # the shuffled-label control (half of the matched pairs swapped) cancels the shared trait component: what
        # is left along u is the pair-to-pair variation, a few per cent of the vector's (measured 2-3 %)
        assert abs(float(pv.shuffled[L] @ u)) < 0.1 * float(pv.vectors[L] @ u)


def test_few_shot_and_system_prompt_recover_it(planted):
    model, u = planted
    fs = few_shot(model, DEMOS, trait="pirate", config=ElicitConfig(n_demos=2))
    assert fs.vectors.shape == (2, D) and fs.meta["n_positive"] == 4 and fs.shuffled is not None
    assert min(_cos(fs.vectors[L], u) for L in range(2)) > 0.9
    from workbench.data.chat import chat_prompt

    responses = []
    for k, (p, n) in enumerate(zip(TRAIT_TEXTS[:3], NEUTRAL_TEXTS[:3])):
        q = DEMOS[k].question
        responses += [Response(0, q, 0, True, chat_prompt(model, q, system="You are a pirate."), p, 90.0, 90.0),
                      Response(0, q, 0, False, chat_prompt(model, q, system="Answer plainly."), n, 0.0, 90.0)]
    sp = system_prompt(model, "pirate", responses=responses)
    assert sp.meta["strategy"] == "system_prompt" and sp.meta["pairs_kept"] == 3
    assert min(_cos(sp.vectors[L], u) for L in range(2)) > 0.9
    with pytest.raises(ValueError, match="judge"):
        system_prompt(model, "pirate")


def test_instructed_is_zero_for_an_identical_prefix_and_averages_the_base_text_only(planted):
    model, u = planted
    same = instructed(model, NEUTRAL_TEXTS[:3], "Continue the text:", "Continue the text:")
    assert torch.count_nonzero(same.vectors) == 0
    pv = instructed(model, NEUTRAL_TEXTS[:3], "Continue like a buccaneer, arr matey:", "Continue the text:")
    assert pv.vectors.shape == (2, D) and float(pv.vectors.norm()) > 0 and pv.shuffled is not None
    # the instruction's own (planted) tokens are not averaged over: only what attention carries reaches the text
    assert abs(_cos(pv.vectors[1], u)) < 0.5


def _sae(d_in: int = D, d_sae: int = 16, u=None):
    from workbench.sae.model import SAE, SAEConfig, SAEMetadata

    sae = SAE(SAEConfig("relu", d_in, d_sae, apply_b_dec_to_input=False), SAEMetadata(hook_name="blocks.1"))
    if u is not None:
        with torch.no_grad():
            W = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(3))
            W[3] = u  # feature 3 reads and writes the planted direction
            W = W / W.norm(dim=1, keepdim=True)
            sae.W_dec.copy_(W)
            sae.W_enc.copy_(W.t())
            sae.b_enc.zero_()
            sae.b_dec.zero_()
    return sae.eval()


def test_feature_direction_is_the_planted_feature(planted):
    model, u = planted
    pv = feature(model, _sae(u=u), 1, TRAIT_TEXTS, NEUTRAL_TEXTS, config=ElicitConfig(top_k=1))
    assert pv.meta["features"][0]["feature"] == 3 and pv.meta["features"][0]["delta"] > 5
    assert _cos(pv.vectors[1], u) == pytest.approx(1.0, abs=1e-5)
    assert torch.isnan(pv.vectors[0]).all()  # defined at the SAE's layer only
    top4 = feature(model, _sae(u=u), 1, TRAIT_TEXTS, NEUTRAL_TEXTS, config=ElicitConfig(top_k=4))
    assert _cos(top4.vectors[1], u) > 0.9


def test_bad_inputs_raise_clear_value_errors(planted):
    model, u = planted
    with pytest.raises(ValueError, match="unknown elicitation strategy"):
        elicit(model, "telepathy", "pirate")
    with pytest.raises(ValueError, match="non-empty"):
        narrative(model, [], NEUTRAL_TEXTS)
    with pytest.raises(ValueError, match="non-empty"):
        narrative(model, TRAIT_TEXTS, ["fine", "  "])
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        feature(model, _sae(u=u), 2, TRAIT_TEXTS, NEUTRAL_TEXTS)
    with pytest.raises(ValueError, match="d_model mismatch"):
        feature(model, _sae(d_in=32), 1, TRAIT_TEXTS, NEUTRAL_TEXTS)
    with pytest.raises(ValueError, match="needs sae="):
        elicit(model, "feature", "pirate")
    with pytest.raises(ValueError, match="n_demos"):
        few_shot(model, DEMOS[:2], config=ElicitConfig(n_demos=2))
    with pytest.raises(ValueError, match="no elicitation texts"):
        elicitation_data("human")
    with pytest.raises(ValueError, match="do not exist"):
        compare_strategies({"a": torch.ones(2, D), "b": torch.ones(2, D)}, layers=[5])
    with pytest.raises(ValueError, match="at least two"):
        compare_strategies({"a": torch.ones(2, D)})


def test_compare_strategies_cosines(planted):
    model, u = planted
    nar = narrative(model, TRAIT_TEXTS, NEUTRAL_TEXTS)
    rnd = torch.stack([random_like(nar.vectors[L], seed=L) for L in range(2)])
    feat = feature(model, _sae(u=u), 1, TRAIT_TEXTS, NEUTRAL_TEXTS, config=ElicitConfig(top_k=1))
    rows = compare_strategies({"narrative": nar, "same": nar.vectors.clone(), "random": rnd, "feature": feat})
    by = {(r["a"], r["b"], r["layer"]): r["cosine"] for r in rows}
    assert len(rows) == 6 * 2
    assert by[("narrative", "same", 0)] == pytest.approx(1.0, abs=1e-6)
    assert by[("narrative", "same", 1)] == pytest.approx(1.0, abs=1e-6)
    assert abs(by[("narrative", "random", 1)]) < 0.4
    assert by[("narrative", "feature", 1)] > 0.9 and math.isnan(by[("narrative", "feature", 0)])


def test_shipped_texts_match_the_judge():
    assert STRATEGIES == ("system_prompt", "narrative", "few_shot", "instructed", "feature")
    for name in ("pirate", "french", "sycophancy"):
        data = elicitation_data(name)
        nar = data["narrative"]
        assert len(nar["trait"]) == len(nar["neutral"]) == 8 and len(data["demos"]) == 4
        assert not set(nar["trait"]) & set(nar["neutral"])
        judge = RubricJudge(name)
        for d in data["demos"]:
            assert judge(d.question, d.trait).trait >= 50 > judge(d.question, d.neutral).trait, (name, d)
        if name != "sycophancy":  # the lexicon judges replies; sycophancy's narratives quote praise and correction
            t = sum(judge("", x).trait for x in nar["trait"]) / 8
            n = sum(judge("", x).trait for x in nar["neutral"]) / 8
            assert t > n + 30, (name, t, n)


def test_evaluate_strategies_tiny(planted):
    model, u = planted
    pvs = {"narrative": narrative(model, TRAIT_TEXTS, NEUTRAL_TEXTS, trait="pirate"),
           "feature": feature(model, _sae(u=u), 1, TRAIT_TEXTS, NEUTRAL_TEXTS, config=ElicitConfig(top_k=1))}
    cfg = SteerConfig(n_questions=1, n_samples=2, max_new_tokens=3, ppl_contexts=2, ppl_context_size=8)
    res = evaluate_strategies(model, pvs, "pirate", RubricJudge("pirate"), 1, 0.0, cfg, sae=_sae(u=u), norm=2.0,
                              monitor_questions=1, monitor_samples=1)
    by = {r["strategy"]: r for r in res}
    assert set(by) == {"narrative", "feature"}
    assert by["narrative"]["norm"] == pytest.approx(2.0, rel=1e-5)
    assert "shuffled" in by["narrative"] and "shuffled" not in by["feature"]  # the feature direction has none
    for r in res:  # coefficient 0: every condition is the unsteered model
        assert r["persona"]["gain"] == 0.0 and r["random"]["gain"] == 0.0 and r["persona"]["ppl_ratio"] == 1.0
        assert r["top_features"][0]["feature"] == 3 and "monitor_r" in r and "monitor_r_random" in r
    with pytest.raises(ValueError, match="no direction at layer 0"):
        evaluate_strategies(model, pvs, "pirate", RubricJudge("pirate"), 0, 0.0, cfg)
