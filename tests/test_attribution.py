"""Attribution and ablation on the real model with a small random SAE spliced in: the spliced run reproduces the
clean logits, attribution is the first-order change that a small ablation measures, batched ablations equal single
ones, and the agreement statistics on a synthetic ablation with a known answer."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench.intervene.attribution import (
    AblationResult,
    LogitDiff,
    ablate_one,
    ablation_effects,
    attribute,
    attribution_vs_ablation,
    compare_with_ablation,
    feature_trace,
    hop_chain,
)

from helpers import assert_balanced

PROMPT = "Fact: Dallas is a city in the state of"
METRIC = LogitDiff(" Texas", " California")
HOOK = "blocks.6.hook_resid_post"


@pytest.fixture(scope="module")
def sae(gemma):
    from workbench.sae.model import SAE, SAEConfig, SAEMetadata

    # random unit-norm decoder, folded so that activations and decoder contributions have residual-stream scale
    return SAE(SAEConfig("topk", gemma.cfg.d_model, 64, k=8), SAEMetadata(hook_name=HOOK), seed=2).folded(1 / 200)


@pytest.fixture(scope="module")
def attr(gemma, sae, one_torch_thread):
    return attribute(gemma, sae, PROMPT, METRIC)


@pytest.mark.slow
def test_spliced_run_keeps_the_clean_logits(gemma, attr):
    with torch.no_grad():
        clean = gemma(gemma.to_tokens(PROMPT))[0, -1].float()
    assert torch.allclose(attr.logits, clean, atol=1e-3, rtol=1e-4)
    t, c = gemma.to_single_token(" Texas"), gemma.to_single_token(" California")
    assert attr.metric_value == pytest.approx(float(clean[t] - clean[c]), abs=1e-3)
    assert attr.tokens[0] == "<bos>" and attr.tokens[3] == " Dallas" and attr.position_of(" Dallas") == 3
    assert float(attr.acts[0].abs().sum()) == 0.0  # the SAE is not spliced at BOS
    assert ((attr.acts[1:] > 0).sum(1) == 8).all()  # topk: k active features per token
    assert torch.equal(attr.attr, attr.acts * attr.grads)


@pytest.mark.slow
def test_attribution_is_the_first_order_ablation_effect(gemma, sae, attr):
    hits = attr.top(6)
    pairs = [[h.position, h.feature] for h in hits]
    eps = 1e-2  # remove 1% of each feature: the linear regime
    small = ablation_effects(gemma, sae, dataclasses.replace(attr, acts=attr.acts * eps), pairs)
    predicted = torch.tensor([h.attribution for h in hits])
    assert torch.allclose(small.effect / eps, predicted, rtol=0.1, atol=0.05 * float(predicted.abs().max()))


@pytest.mark.slow
def test_batched_ablations_equal_single_ones(gemma, sae, attr):
    pairs = attr.active_pairs()[::7][:6]
    batched = ablation_effects(gemma, sae, attr, pairs, batch_size=4)
    single = ablation_effects(gemma, sae, attr, pairs, batch_size=1)
    assert torch.allclose(batched.effect, single.effect, atol=2e-3)
    assert batched.metric_clean == pytest.approx(attr.metric_value, abs=1e-3)
    assert torch.allclose(batched.attribution, attr.attr[pairs[:, 0], pairs[:, 1]])
    p, i = pairs[0].tolist()
    one = ablate_one(gemma, sae, attr, p, i)
    assert one.metric_after == pytest.approx(float(batched.metric_ablated[0]), abs=2e-3)
    assert one.effect == pytest.approx(float(batched.effect[0]), abs=2e-3)
    assert one.top_before[0][1] == pytest.approx(attr.top_predictions[0][1], abs=1e-4)
    # by hand: subtract the feature's decoder contribution at that position and run the rest of the model
    x = attr.resid.clone()
    x[p] -= attr.acts[p, i] * sae.W_dec[i].detach()
    with torch.no_grad():
        logits = gemma(x[None], start_at_layer=7)[0, -1]
    t, c = gemma.to_single_token(" Texas"), gemma.to_single_token(" California")
    assert one.metric_after == pytest.approx(float(logits[t] - logits[c]), abs=2e-3)


@pytest.mark.slow
def test_errors_name_the_problem(gemma, sae, attr):
    with pytest.raises(ValueError, match="single tokens"):
        attribute(gemma, sae, PROMPT, LogitDiff(" Texas", " New Mexico"))
    with pytest.raises(ValueError, match="position 0 out of range"):
        ablate_one(gemma, sae, attr, 0, 1)
    with pytest.raises(ValueError, match="unknown feature 64"):
        ablation_effects(gemma, sae, attr, [[3, 64]])
    inactive = int((attr.acts[3] == 0).nonzero()[0])
    with pytest.raises(ValueError, match=f"feature {inactive} is not active at position 3"):
        ablate_one(gemma, sae, attr, 3, inactive)
    with pytest.raises(ValueError, match="resid"):
        attribute(gemma, sae, PROMPT, METRIC, hook="blocks.6.hook_mlp_out")
    with pytest.raises(ValueError, match="not in the prompt"):
        attr.position_of(" Austin")


@pytest.mark.slow
def test_full_check_and_feature_trace(gemma, sae, attr):
    check = attribution_vs_ablation(gemma, sae, PROMPT, METRIC, threads=1)
    assert torch.equal(check.ablation.pairs, attr.active_pairs())
    assert check.agreement.n_pairs == len(attr.active_pairs()) == 8 * (attr.n_tokens - 1)
    assert check.row()["spearman_attribution"] == check.agreement.spearman_attribution
    other = attribute(gemma, sae, "Fact: The capital of the state containing Dallas is the city of",
                      LogitDiff(" Austin", " Sacramento"))
    f = attr.top(1, position=3)[0].feature
    rows = feature_trace({"hop": attr, "composed": other}, [f], " Dallas")
    p = other.position_of(" Dallas")
    assert [r["prompt"] for r in rows] == ["hop", "composed"]
    assert rows[1]["activation at ' Dallas'"] == pytest.approx(float(other.acts[p, f]))
    assert rows[0]["attribution at ' Dallas'"] == pytest.approx(float(attr.attr[3, f]))
    assert rows[1]["total attribution"] == pytest.approx(float(other.attr[:, f].sum()), rel=1e-5)


def test_agreement_on_a_known_answer():
    gen = torch.Generator().manual_seed(0)
    effect = torch.randn(40, generator=gen)
    act = torch.rand(40, generator=gen)
    result = AblationResult(pairs=torch.zeros(40, 2, dtype=torch.long), metric_clean=1.0,
                            metric_ablated=1.0 - effect, effect=effect, activation=act, attribution=effect * 3 + 1)
    ag = compare_with_ablation(result)
    assert ag.spearman_attribution == pytest.approx(1.0) and ag.n_pairs == 40
    from scipy.stats import spearmanr

    assert ag.spearman_activation == pytest.approx(float(spearmanr(act, effect).statistic))
    truth = set(effect.abs().topk(10).indices.tolist())
    assert ag.top_activation == len(truth & set(act.topk(10).indices.tolist()))
    # attribution = 3 * effect + 1 ranks |.| differently from |effect| near zero; count by hand
    assert ag.top_attribution == len(truth & set((effect * 3 + 1).abs().topk(10).indices.tolist()))
    with pytest.raises(ValueError, match="at least 3"):
        compare_with_ablation(dataclasses.replace(result, effect=effect[:2], attribution=effect[:2],
                                                  activation=act[:2]))


@pytest.mark.slow
def test_hop_chain_reports_probability_and_rank(gemma):
    hops = hop_chain(gemma, [(PROMPT, " Texas"), (PROMPT, " California")])
    with torch.no_grad():
        probs = gemma(gemma.to_tokens(PROMPT))[0, -1].float().softmax(-1)
    for hop in hops:
        a = gemma.to_single_token(hop.answer)
        assert hop.probability == pytest.approx(float(probs[a]), rel=1e-4)
        assert hop.rank == int((probs > probs[a]).sum())
    assert hops[0].top[0][1] == pytest.approx(float(probs.max()), rel=1e-4)


@pytest.mark.slow
def test_attribution_view_ablates_the_selected_cell(gemma, sae, attr):
    from widgets.attribution_view import AttributionView

    view = AttributionView(gemma, sae, attr, top_n=6)
    assert len(view.features) == 6
    best = attr.top(1)[0]
    assert view.features[0] == best.feature
    fig = view.figure()
    assert list(fig.data[0].y)[0] == f"F{best.feature}" and len(fig.data[0].x) == attr.n_tokens
    out = view.select(best.position, best.feature)
    ref = ablate_one(gemma, sae, attr, best.position, best.feature, n_predictions=view.n_predictions)
    assert out.metric_after == pytest.approx(ref.metric_after, abs=1e-4)
    assert [t for t, _ in out.top_after] == [t for t, _ in ref.top_after]
    html = view.to_html(include_plotlyjs=False)
    assert_balanced(html)
    assert f"ablated F{best.feature} at {best.position}" in html
    inactive = int((attr.acts[best.position] == 0).nonzero()[0])
    view._try_select(best.position, inactive)  # what a click on an empty cell does
    assert "not active" in view.outcome_html()
    with pytest.raises(ValueError, match="not active"):
        view.select(best.position, inactive)
