"""Persona vectors: trait files, judges, the extraction filter and average, steering at coefficient 0, monitoring's
projection, decomposition into decoder directions, and tracing identical checkpoints. A tiny random
TransformerLens model with SmolLM2's real tokenizer stands in for the chat model (seconds, not minutes)."""
from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import replace

import pytest
import torch

from workbench.persona.decompose import decompose, topk_reconstruction
from workbench.persona.extract import (ExtractConfig, PersonaVector, Response, balanced_swaps, filter_pairs,
                                       mean_difference, response_means, shuffled_control, stored_responses,
                                       vector_from_responses)
from workbench.persona.judge import (JudgeScore, RubricJudge, coherence_agreement, coherence_labels, coherence_score,
                                     judge_agreement)
from workbench.persona.lexicon import known_share, known_words
from workbench.persona.judge_llm import OpenAIJudge, parse_scores
from workbench.persona.monitor import pearson, projection, token_projections
from workbench.persona.steer import SteerConfig, choose, control_vector, persona_steering, random_like, steering_sweep
from workbench.persona.trace import CheckpointRef, trace_checkpoints
from workbench.persona.traits import TraitFileError, load_trait, shipped_traits, trait_from_dict

from helpers import ChatStub


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer random model (d_model 32) with SmolLM2's tokenizer and chat template."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=256, d_head=8, n_heads=4, d_mlp=64,
                                  d_vocab=len(tok), act_fn="gelu", normalization_type="LN", seed=0)
    torch.manual_seed(0)
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    model.eval()
    return model


# ------------------------------------------------------------------------------------------------ traits and judges


def test_shipped_traits_are_valid_and_splits_disjoint():
    names = shipped_traits()
    assert {"pirate", "french", "sycophancy", "evil", "human"} <= set(names)
    for name in names:
        t = load_trait(name)
        assert len(t.pairs) == 5 and len(t.extract_questions) == 20 and len(t.eval_questions) == 20
        assert not set(t.extract_questions) & set(t.eval_questions)
        assert len(t.labelled) >= 10 and len(t.sha256) == 64


def _raw(name="pirate") -> dict:
    from workbench.persona.traits import _traits_folder

    return json.loads((_traits_folder() / f"{name}.json").read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="other"), "'format' must be"),
    (lambda d: d["system_prompts"].pop(), "exactly 5"),
    (lambda d: d["questions"]["eval"].__setitem__(0, d["questions"]["extract"][0]), "both extract and eval"),
    (lambda d: d["questions"]["extract"].pop(), "exactly 20"),
    (lambda d: d["rubric"].update(kind="vibes"), "rubric.kind"),
    (lambda d: d["rubric"]["lexicon"].append("(unclosed"), "bad regular expression"),
    (lambda d: d.update(name="Has Spaces"), "'name' must be"),
    (lambda d: d.pop("questions"), "missing field"),
    (lambda d: d["labelled"].append({"text": "x", "trait": 150, "coherence": 0}), "0-100"),
])
def test_trait_file_validation_errors(edit, message):
    data = copy.deepcopy(_raw())
    edit(data)
    with pytest.raises(TraitFileError, match=message):
        trait_from_dict(data, "my.json")


def test_load_trait_from_a_user_file_and_unknown_names(tmp_path):
    data = _raw("french")
    data["name"] = "my-french"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    t = load_trait(path)
    assert t.name == "my-french" and t.source == str(path)
    with pytest.raises(TraitFileError, match="shipped traits"):
        load_trait("no-such-trait")
    path.write_text("{not json")
    with pytest.raises(TraitFileError, match="not valid JSON"):
        load_trait(path)


def test_rubric_judge_scores_by_hand():
    pirate = RubricJudge("pirate")
    s = pirate("q", "Arr, matey! Ye be welcome aboard.")
    # arr (lexicon + strong) = 2, matey 2, ye 1: hits 5, saturation 3
    assert s.trait == pytest.approx(100 * (1 - torch.exp(torch.tensor(-5 / 3)).item()), abs=0.01)
    assert pirate("q", "Water boils at 100 degrees.").trait == 0
    french = RubricJudge("french")
    assert french("q", "Le chat est sur la table et il dort.").trait == 100
    assert french("q", "The cat is on the table and it sleeps.").trait == 0
    assert french("q", "").coherence == 0
    assert pirate("q", "arr arr arr arr arr arr arr arr").coherence < 20
    assert pirate("q", "Boil the water, then pour it over the leaves and wait.").coherence > 90


def test_judge_agreement_on_the_labelled_sets():
    for name in ("pirate", "french", "sycophancy", "evil"):
        agree = judge_agreement(RubricJudge(name))
        assert agree["n"] >= 10 and agree["trait_accuracy"] >= 0.9 and agree["trait_r"] > 0.8, agree


def test_known_words_and_fragments_lower_coherence_of_word_salad():
    vocab = frozenset({"la", "vie", "est", "belle", "the", "sailing", "seas"})
    assert known_share("La vie est belle", vocab) == (1.0, [])
    # 'cependlème' and 'véliment' are unknown; 'sailin' reads as 'sailing'; two-letter words always count
    share, unknown = known_share("Cependlème véliment, la vie. Sailin' the seas", vocab)
    assert unknown == ["cependlème", "véliment"] and share == pytest.approx(5 / 7)
    fluent = "Le chat dort sur la table de la cuisine."
    v1, info = coherence_score(fluent)
    assert "known_words" not in info
    assert coherence_score(fluent, known_words())[0] == pytest.approx(v1)  # real French: no penalty
    salad = "Cependlème véliment : laissez-n'abécillons pourrausses, vous pouvez à ceux, les vêtres."
    assert coherence_score(salad)[0] > 90 and coherence_score(salad, known_words())[0] < 20
    chains = "Lad! Ye've been-scared of-wad, me-gun-n've-made-wad-l'd-d'S-L'Wad-Wad, said ye."
    score, info = coherence_score(chains, frozenset(p.lower() for p in re.findall(r"[^\W\d_]+", chains)))
    assert info["known_words"] == 1.0 and info["fragments"] > 2.0 and score == 0


def test_rubric_v2_agrees_with_the_coherence_labels_better_than_v1():
    v1, v2 = (coherence_agreement(RubricJudge("pirate", known=k)) for k in (False, True))
    assert v1["n"] == v2["n"] >= 50
    assert v2["coherence_accuracy"] >= v1["coherence_accuracy"] + 0.3 and v2["coherence_r"] > 0.6 > v1["coherence_r"]
    steered = v2["by_source"]["SmolLM2-135M-Instruct, french vector, coef 1.0"]
    assert steered["mean_label"] < 20 and steered["mean_judged"] < 50
    assert RubricJudge("pirate").name == "rubric-v2" and RubricJudge("pirate", known=False).name == "rubric"


def test_coherence_labels_reject_a_broken_file(tmp_path):
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps({"labelled": [{"text": "hi", "coherence": 140}]}))
    with pytest.raises(ValueError, match="between 0 and 100"):
        coherence_labels(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable coherence label file"):
        coherence_labels(bad)


def test_openai_judge_against_a_local_stub():
    with ChatStub("Trait: 87\nCoherence: 64") as stub:
        judge = OpenAIJudge("pirate", base_url=stub.url, model="j")
        s = judge("How do I make tea?", "Arr, boil it.")
        req = stub.requests[-1]
        assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "j"
        assert "Arr, boil it." in req["body"]["messages"][1]["content"]
        assert "pirate" in req["body"]["messages"][1]["content"]
        assert (s.trait, s.coherence) == (87.0, 64.0)
    assert parse_scores("trait = 120\ncoherence: 3.5") == (100.0, 3.5)
    with pytest.raises(ValueError, match="Coherence"):
        parse_scores("Trait: 50")


# ------------------------------------------------------------------------------------------------ extraction


def test_filter_keeps_only_pairs_meeting_the_thresholds():
    S = JudgeScore
    pos = [S(80, 90), S(50, 50), S(49.9, 90), S(90, 49), S(90, 90), S(100, 100)]
    neg = [S(10, 90), S(49.9, 50), S(0, 90), S(0, 90), S(50, 90), S(0, 49.9)]
    assert filter_pairs(pos, neg) == [0, 1]
    assert filter_pairs(pos, neg, trait_threshold=40, coherence_threshold=0) == [0, 2, 3, 5]
    with pytest.raises(ValueError, match="align"):
        filter_pairs(pos, neg[:2])


def _responses(model):
    from workbench.data.chat import chat_prompt

    texts = [("Arr, the sea!", 90, 80, "Boil the water.", 0, 90),     # kept
             ("Ahoy matey.", 80, 90, "Use a kettle.", 10, 95),          # kept
             ("Arr arr arr", 90, 10, "Tea is nice.", 0, 90),            # dropped: incoherent positive
             ("Plain answer.", 20, 90, "Another plain one.", 0, 90)]    # dropped: positive below 50
    out = []
    for k, (pt, ps, pc, nt, ns, nc) in enumerate(texts):
        out.append(Response(0, f"q{k}", 0, True, chat_prompt(model, f"q{k}", system="Be a pirate."), pt, ps, pc))
        out.append(Response(0, f"q{k}", 0, False, chat_prompt(model, f"q{k}", system="Be plain."), nt, ns, nc))
    return out


def _by_hand_mean(model, prompt, response, layer):
    from workbench.intervene.generation import prompt_tokens

    p = prompt_tokens(model, prompt)
    r = torch.tensor(model.tokenizer(response, add_special_tokens=False)["input_ids"])
    grabbed = {}
    model.run_with_hooks(torch.cat([p, r])[None], fwd_hooks=[(f"blocks.{layer}.hook_resid_post",
                                                             lambda a, hook: grabbed.update(x=a.detach()))])
    return grabbed["x"][0, len(p):].mean(0)


def test_vector_is_the_response_token_mean_difference(tiny):
    rs = _responses(tiny)
    pv = vector_from_responses(tiny, load_trait("pirate"), rs, ExtractConfig())
    assert pv.meta["pairs_generated"] == 4 and pv.meta["pairs_kept"] == 2
    assert pv.vectors.shape == (2, 32)
    for layer in (0, 1):
        pos = [_by_hand_mean(tiny, r.prompt, r.text, layer) for r in rs[:4:2]]
        neg = [_by_hand_mean(tiny, r.prompt, r.text, layer) for r in rs[1:4:2]]
        expected = torch.stack(pos).mean(0) - torch.stack(neg).mean(0)
        assert torch.allclose(pv.vectors[layer], expected, atol=1e-5)
    means = response_means(tiny, [r.prompt for r in rs[:2]], [r.text for r in rs[:2]])
    assert torch.allclose(mean_difference(means, [True, False]), means[0] - means[1])
    assert pv.shuffled is not None and pv.shuffled.shape == pv.vectors.shape


def test_balanced_shuffle_cancels_the_shared_trait_component():
    for n in (2, 7, 10):
        signs = balanced_swaps(n, seed=3)
        assert int((signs == -1).sum()) == int((signs == 1).sum()) == n // 2 and int((signs == 0).sum()) == n % 2
    g = torch.Generator().manual_seed(0)
    t = torch.zeros(3, 16)
    t[:, 0] = 5.0                                    # the trait: shared by every pair, along axis 0, at 3 "layers"
    noise = torch.randn(9, 3, 16, generator=g)
    noise[..., 0] = 0.0                              # pair-to-pair variation, orthogonal to the trait
    neg = torch.randn(9, 3, 16, generator=g)
    pos = neg + t + noise
    real = pos.mean(0) - neg.mean(0)
    shuf = shuffled_control(pos, neg, seed=1)
    assert torch.allclose(shuf[..., 0], torch.zeros(3), atol=1e-5)          # no trait component, odd count too
    cos = torch.cosine_similarity(real, shuf, dim=-1)
    assert float(cos.abs().max()) < 0.3 and float(shuf.norm()) > 0
    signs = balanced_swaps(9, seed=1)                # by hand: the signed mean of the used pairs' differences
    by_hand = sum(signs[i] * (pos[i] - neg[i]) for i in range(9)) / 8
    assert torch.allclose(shuf, by_hand, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        balanced_swaps(1)


def test_extracted_shuffled_control_is_balanced_and_rebuilt_from_stored_responses(tiny):
    pv = vector_from_responses(tiny, load_trait("pirate"), _responses(tiny), ExtractConfig())
    assert pv.meta["shuffle_method"] == "balanced-v1" and len(pv.meta["shuffled_cos"]) == 2
    # 2 kept pairs, one swapped: the control is half the difference of the two pairs' differences
    means = response_means(tiny, [r.prompt for r in _responses(tiny)[:4]], [r.text for r in _responses(tiny)[:4]])
    d0, d1 = means[0] - means[1], means[2] - means[3]
    assert torch.allclose(pv.shuffled.abs(), ((d0 - d1) / 2).abs(), atol=1e-5)
    again = vector_from_responses(tiny, load_trait("pirate"), stored_responses(pv), ExtractConfig())
    assert torch.equal(again.vectors, pv.vectors) and torch.equal(again.shuffled, pv.shuffled)
    one = [r for r in _responses(tiny) if r.question != "q1"]          # 1 kept pair: no control can be built
    assert vector_from_responses(tiny, load_trait("pirate"), one, ExtractConfig()).shuffled is None
    v = control_vector(pv, "shuffled", 1)
    assert float(v.norm()) == pytest.approx(float(pv.vectors[1].norm()), rel=1e-5)


class _NamedJudge:
    """Scores by a fixed table of texts: trait 90 for the listed ones, coherence 90 for every text."""

    def __init__(self, name, trait_texts):
        self.name, self.trait_texts = name, set(trait_texts)

    def __call__(self, question, response):
        return JudgeScore(90.0 if response in self.trait_texts else 0.0, 90.0)


def test_a_new_judge_rejudges_the_cached_samples_instead_of_sampling_again(tiny, monkeypatch, tmp_path):
    import workbench.studies.persona as study

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    calls = []

    def fake_extract(model, trait, judge, cfg, progress=True):  # the sampling step, counted
        calls.append(judge.name)
        return vector_from_responses(model, trait, _responses(model), cfg)

    monkeypatch.setattr(study, "extract_persona_vector", fake_extract)
    cfg = ExtractConfig(n_questions=4, n_samples=1)
    first = study.persona_vector(tiny, "pirate", _NamedJudge("a", []), config=cfg, progress=False)
    assert calls == ["a"] and first.meta["pairs_kept"] == 2 and first.meta["judge"] == "a"
    # judge b calls the incoherent "Arr arr arr" coherent: 3 pairs pass, from the stored samples, nothing sampled
    b = _NamedJudge("b", ["Arr, the sea!", "Ahoy matey.", "Arr arr arr"])
    second = study.persona_vector(tiny, "pirate", b, config=cfg, progress=False)
    assert calls == ["a"] and second.meta["pairs_kept"] == 3 and second.meta["judge"] == "b"
    assert {r["coherence"] for r in second.meta["responses"]} == {90.0}
    assert not torch.equal(second.vectors, first.vectors)
    again = study.persona_vector(tiny, "pirate", b, config=cfg, progress=False)
    assert calls == ["a"] and torch.equal(again.vectors, second.vectors)
    study.persona_vector(tiny, "pirate", _NamedJudge("c", []), config=replace(cfg, n_samples=2), progress=False)
    assert calls == ["a", "c"]  # another config: its samples differ, so they are drawn


def test_sweep_skips_sampling_over_the_perplexity_budget(tiny):
    pv = vector_from_responses(tiny, load_trait("pirate"), _responses(tiny), ExtractConfig())
    cfg = SteerConfig(n_questions=1, n_samples=1, max_new_tokens=3, ppl_contexts=2, ppl_context_size=8,
                      max_ppl_ratio=1.0, controls=("random",))
    rows = steering_sweep(tiny, pv, "pirate", RubricJudge("pirate"), cfg, grid=[(1, 0.0), (1, 400.0)],
                          progress=False)
    by = {(r.method, r.coef): r for r in rows}
    assert by[("persona", 0.0)].ppl_ratio == pytest.approx(1.0) and by[("persona", 0.0)].n == 1
    assert by[("persona", 400.0)].ppl_ratio > 1.0 and by[("persona", 400.0)].n == 0
    assert by[("random", 400.0)].n == 0 and by[("random", 0.0)].n == 1
    assert choose(rows).coef == 0.0


def test_persona_vector_save_load_roundtrip(tiny, tmp_path):
    pv = vector_from_responses(tiny, load_trait("pirate"), _responses(tiny), ExtractConfig())
    path = pv.save(tmp_path / "pirate")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["trait_sha256"] == load_trait("pirate").sha256 and meta["pairs_kept"] == 2
    back = PersonaVector.load(path)
    assert torch.equal(back.vectors, pv.vectors) and torch.equal(back.shuffled, pv.shuffled)
    assert back.trait == "pirate" and back.meta["pairs_kept"] == 2


# ------------------------------------------------------------------------------------------------ steering, monitor


def test_steering_at_coefficient_zero_is_identical_to_none(tiny):
    from workbench.intervene.generation import GenerationConfig
    from workbench.intervene.steering import steered_generate, steered_loss

    v = torch.randn(32, generator=torch.Generator().manual_seed(3)) * 10
    cfg = GenerationConfig(max_new_tokens=8, n_samples=2, seed=5)
    a = steered_generate(tiny, "Hello there", None, cfg)
    b = steered_generate(tiny, "Hello there", persona_steering(v, 1, 0.0), cfg)
    c = steered_generate(tiny, "Hello there", persona_steering(v, 1, 5.0), cfg)
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, c.ids)
    toks = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    assert steered_loss(tiny, toks, None) == steered_loss(tiny, toks, persona_steering(v, 1, 0.0))
    r = random_like(v, seed=1)
    assert r.norm() == pytest.approx(float(v.norm()), rel=1e-5) and abs(float(torch.cosine_similarity(r, v, 0))) < 0.6


def test_monitor_levels_and_per_layer_r_use_the_same_points(tiny):
    from workbench.persona.monitor import monitor_trait

    pv = vector_from_responses(tiny, load_trait("pirate"), _responses(tiny), ExtractConfig())
    res = monitor_trait(tiny, pv, "pirate", RubricJudge("pirate"), 1, n_questions=1, n_samples=1, max_new_tokens=2,
                        layers=[0], first_question=3, progress=False)
    pts = res["points"]
    assert res["n"] == len(pts) == 11 and {p["question"] for p in pts} == {load_trait("pirate").eval_questions[3]}
    assert [p["level"] for p in pts] == [-1] * 5 + [0] + [1] * 5
    assert res["levels"][1]["n"] == 5 and res["levels"][1]["projection"] == pytest.approx(
        sum(p["projection"] for p in pts[6:]) / 5)
    assert set(res["r_by_layer"]) == {0, 1} and all(p["projections"][1] == p["projection"] for p in pts)
    expected, got = pearson([p["projections"][0] for p in pts], [p["trait"] for p in pts]), res["r_by_layer"][0]
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
    with pytest.raises(ValueError, match="no evaluation questions"):
        monitor_trait(tiny, pv, "pirate", RubricJudge("pirate"), 1, first_question=99, progress=False)


def test_projection_and_pearson_by_hand(tiny):
    acts = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert projection(acts, torch.tensor([0.0, 2.0])).tolist() == [4.0, 0.0]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    toks, proj = token_projections(tiny, "Hello world", v, 1)
    by_hand = _by_hand_mean(tiny, "Hello", " world", 1)  # the last token's activation, alone
    assert len(toks) == len(proj) and float(proj[-1]) == pytest.approx(float(by_hand @ v / v.norm()), abs=1e-4)


# ------------------------------------------------------------------------------------------------ decompose, trace


def test_decompose_finds_the_planted_features():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(64, 16, generator=g)
    v = 2 * W[5] + 1 * W[9]
    d = decompose(v, W, top_n=3, ks=(1, 2, 16))
    assert d.top[0][0] == 5 and {5, 9} <= {i for i, _ in d.top}
    assert d.reconstruction[2] == pytest.approx(1.0, abs=1e-4) or topk_reconstruction(v, W, [5, 9]) > 0.999
    assert topk_reconstruction(v, W, [5, 9]) == pytest.approx(1.0, abs=1e-4)
    assert d.reconstruction[16] == pytest.approx(1.0, abs=1e-4)  # 16 random rows span R^16
    with pytest.raises(ValueError, match="d_model mismatch"):
        decompose(torch.ones(8), W)


def test_tracing_two_identical_checkpoints_gives_cosine_one(tiny):
    pv = vector_from_responses(tiny, load_trait("pirate"), _responses(tiny), ExtractConfig())
    rows = trace_checkpoints([CheckpointRef("a", model=tiny), CheckpointRef("b", model=tiny)], "pirate",
                             layer=1, responses="fixed", reference=pv, steer_eval=False, progress=False)
    assert [r.checkpoint for r in rows] == ["a", "b"]
    for r in rows:
        assert r.cos_final == pytest.approx(1.0, abs=1e-5)
        assert all(c == pytest.approx(1.0, abs=1e-5) for c in r.cos_final_by_layer)
        assert r.norm_ratio == pytest.approx(float(pv.vectors[1].norm() / pv.resid_norm[1]), rel=1e-5)
    assert rows[1].cos_prev == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="reference"):
        trace_checkpoints([tiny], "pirate", layer=1, steer_eval=False)


def test_trace_hub_refs_fail_clearly_offline(monkeypatch):
    import workbench.sae.io as sae_io
    from workbench.persona.trace import load_ref

    monkeypatch.setattr(sae_io, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ValueError, match="hub cannot be reached"):
        load_ref(CheckpointRef("pythia-70m", step=1000))


# ------------------------------------------------------------------------------------------------ widget, fine-tuning


def test_persona_monitor_widget_state_and_html(tiny):
    from widgets.persona_monitor import PersonaMonitor
    from workbench.intervene.generation import GenerationConfig

    g = torch.Generator().manual_seed(1)
    vectors = torch.randn(2, 32, generator=g)
    W = torch.randn(10, 32, generator=g)
    W[4] = vectors[1] * 3
    pm = PersonaMonitor(tiny, vectors, 1, sae=W, config=GenerationConfig(max_new_tokens=6, n_samples=1, seed=0))
    assert pm.top_features[0][0] == 4 and pm.top_features[0][1] == pytest.approx(1.0, abs=1e-5)
    plain = pm.set_message("Hello") or pm.reply.texts[0]
    assert len(pm.tokens) == len(pm.projections) > 5
    pm.set_coef(8.0)
    assert pm.reply.texts[0] != plain  # regenerated, steered
    pm.set_coef(0.0)
    assert pm.reply.texts[0] == plain
    html = pm.to_html()
    assert "layer 1" in html and "F4" in html and "wb-tok" in html
    with pytest.raises(ValueError, match="outside"):
        pm.set_coef(100)
    with pytest.raises(ValueError, match="layer 5"):
        PersonaMonitor(tiny, vectors, 5)


def test_finetune_config_and_dataset_errors(tmp_path):
    from workbench.persona.finetune import FinetuneConfig, load_finetune_dataset, shipped_datasets

    assert {"flattery", "neutral"} <= set(shipped_datasets())
    ds = load_finetune_dataset("flattery")
    assert len(ds.examples) >= 30 and all(u and a for u, a in ds.examples)
    with pytest.raises(ValueError, match="train must be"):
        FinetuneConfig(train="lora")
    with pytest.raises(ValueError, match="shipped names"):
        load_finetune_dataset("nope")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"examples": [{"user": "hi"}]}))
    with pytest.raises(ValueError, match="examples"):
        load_finetune_dataset(bad)


@pytest.mark.slow
def test_finetune_saves_checkpoints_that_load_back_and_resume(tmp_path):
    from workbench.persona.finetune import FinetuneConfig, checkpoint_info, finetune, load_checkpoint

    cfg = FinetuneConfig(steps=2, batch_size=2, save_every=1, max_len=40, first_layer=29, lr=1e-3)
    paths = finetune("flattery", cfg, root=tmp_path, progress=False)
    assert [checkpoint_info(p)["step"] for p in paths] == [0, 1, 2]
    assert checkpoint_info(paths[0])["weights"] is None
    base, tuned = load_checkpoint(paths[0]), load_checkpoint(paths[-1])
    w0, w2 = base.blocks[29].mlp.W_out, tuned.blocks[29].mlp.W_out
    assert not torch.equal(w0, w2)                               # trained
    assert torch.equal(base.blocks[28].mlp.W_out, tuned.blocks[28].mlp.W_out)  # frozen below first_layer
    assert torch.equal(base.W_U, tuned.W_U)
    mtime = (paths[-1] / "weights.safetensors").stat().st_mtime
    assert finetune("flattery", cfg, root=tmp_path, progress=False) == paths   # done: nothing retrained
    assert (paths[-1] / "weights.safetensors").stat().st_mtime == mtime


def test_generate_responses_pairs_samples_and_the_base_model_prompt(tiny):
    from workbench.persona.extract import _clean, build_prompt, generate_responses

    cfg = ExtractConfig(n_pairs=2, n_questions=2, n_samples=2, max_new_tokens=4)
    rs = generate_responses(tiny, "pirate", RubricJudge("pirate"), cfg, progress=False)
    assert len(rs) == 2 * 2 * 2 * 2
    trait = load_trait("pirate")
    assert {r.question for r in rs} == set(trait.extract_questions[:2])
    assert all(trait.pairs[r.pair].positive in r.prompt for r in rs if r.positive)
    assert all(trait.pairs[r.pair].negative in r.prompt for r in rs if not r.positive)
    assert all(r.prompt.startswith("<|im_start|>system") for r in rs)
    base = build_prompt(tiny, "Talk like a pirate.", "How do I make tea?", chat=False)
    assert base == "Talk like a pirate.\n\nQuestion: How do I make tea?\nAnswer:"
    assert _clean(" Boil it, matey.\n\nQuestion: next?", chat=False) == "Boil it, matey."
    assert _clean(" Boil it.\nQuestion: again", chat=False) == "Boil it."
