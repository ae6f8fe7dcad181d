"""Tests for workbench.analysis.explain, workbench.analysis.search and workbench.analysis.neurons.

Planted features with a known answer (one that fires exactly on one token id, one on a bigram) for the explainer
and scorer; a tiny local HTTP server for the optional LLM explainer; the real model and small store for search and
the neuron comparison.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from workbench.analysis.explain import (
    Background,
    Explanation,
    ExplanationSet,
    ScoreAccumulator,
    TokenExplainer,
    UnitExamples,
    examples_for_feature,
    examples_from_activations,
    explain_features,
    heldout_contexts,
    score_explanation,
    score_features,
)
from workbench.analysis.explain_llm import OpenAIExplainer, parse_key_tokens
from workbench.analysis.features import ActivationExample, FeatureConfig, compute_features
from workbench.analysis.search import contrast_features, features_for_text, hook_activations, search_explanations

from helpers import ChatStub, identity_sae, write_store

T_UNI, T_A, T_B = 7, 3, 9  # feature 0 fires on token 7; feature 1 on token 9 right after token 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------------------------
# Predictors and scores (pure)
# ----------------------------------------------------------------------------------------------------------------


def test_predict_matches_unigrams_and_ngrams_ending_at_the_position():
    ids = torch.tensor([[1, 3, 9, 9, 3, 9, 7], [7, 3, -1, 9, 3, 3, 9]])
    e = Explanation("x", [(7,), (3, 9)])
    assert e.predict(ids).int().tolist() == [[0, 0, 1, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0, 1]]
    assert Explanation("none", []).predict(ids).sum() == 0
    assert Explanation("long", [(1, 2, 3, 4, 5, 6, 7, 8)]).predict(ids).sum() == 0


def test_score_explanation_counts_and_buckets_by_hand():
    ids = torch.tensor([[5, 7, 7, 2, 7, 3]])
    acts = torch.tensor([[0.0, 1.0, 0.2, 0.0, 0.0, 0.9]])
    s = score_explanation(Explanation("7", [(7,)]), ids, acts, max_activation=1.0, n_buckets=2)
    assert (s.n_tokens, s.n_firing, s.n_predicted, s.n_true_positive) == (6, 3, 3, 2)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert s.bucket_counts == [1, 2] and s.bucket_predicted == [1, 1]
    assert s.bucket_positive_rate == [1.0, 0.5]
    assert s.false_positive_rate == pytest.approx(1 / 3)
    valid = torch.tensor([[True, False, True, True, True, True]])
    s2 = score_explanation(Explanation("7", [(7,)]), ids, acts, max_activation=1.0, n_buckets=2, valid=valid)
    assert s2.n_tokens == 5 and s2.n_true_positive == 1
    acc = ScoreAccumulator(1.0, 2)
    acc.update(torch.tensor([True]), torch.tensor([0.0]))
    assert acc.result().bucket_positive_rate == [None, None]


# ----------------------------------------------------------------------------------------------------------------
# Planted features: the explainer must find the token
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_tokens(tmp_path_factory):
    rng = np.random.default_rng(0)
    n_ctx, ctx = 40, 32
    tokens = rng.integers(10, 40, size=(n_ctx, ctx)).astype(np.int64)
    tokens[rng.random((n_ctx, ctx)) < 0.08] = T_UNI
    tokens[rng.random((n_ctx, ctx)) < 0.08] = T_A
    tokens[rng.random((n_ctx, ctx)) < 0.08] = T_B
    tokens[:, 0] = 1
    acts = np.zeros((n_ctx, ctx, 3), dtype=np.float32)
    acts[..., 0] = np.where(tokens == T_UNI, rng.integers(1, 9, size=tokens.shape) * 0.5, 0)
    prev = np.concatenate([np.zeros((n_ctx, 1), dtype=np.int64), tokens[:, :-1]], 1)
    acts[..., 1] = np.where((tokens == T_B) & (prev == T_A), 2.0 + rng.integers(0, 4, size=tokens.shape) * 0.25, 0)
    acts[..., 2] = rng.integers(0, 3, size=tokens.shape) * 0.5  # fires on ~2/3 of all tokens: unexplainable
    root = tmp_path_factory.mktemp("planted-tokens")
    store = write_store(root / "store", acts, tokens, shard_contexts=8)
    sae = identity_sae(3)
    cfg = FeatureConfig(max_tokens=30 * ctx, top_k=10, per_bucket=4, progress=False)
    res = compute_features(store, sae, root / "features", cfg, tokenizer=False)
    return {"store": store, "sae": sae, "res": res, "tokens": tokens, "acts": acts}


def test_token_explainer_finds_the_planted_token_and_it_scores_precision_one(planted_tokens):
    res, store, sae = planted_tokens["res"], planted_tokens["store"], planted_tokens["sae"]
    seen = examples_for_feature(res, 0)
    assert seen.kind == "feature" and seen.max_activation == float(res.max_activation[0])
    assert len(seen.examples) == len(res.top_examples(0)) + sum(len(b.examples) for b in res.buckets(0))
    expl = explain_features(res, [0, 1, 2])
    assert expl[0].explanation.patterns == [(T_UNI,)]
    assert expl[1].explanation.patterns == [(T_A, T_B)]
    held = heldout_contexts(res, store)
    assert list(held) == list(range(30, 40))
    score_features(expl, store, sae, held, results=res)
    s0, s1, s2 = (expl[i].score for i in range(3))
    assert s0.n_firing > 0 and s0.precision == 1.0 and s0.recall == 1.0
    assert all(r == 1.0 for r in s0.bucket_positive_rate if r is not None)
    assert s1.n_firing > 0 and s1.precision == 1.0 and s1.recall == 1.0
    assert s2.f1 < 0.9  # a feature with no token explanation does not score well
    # without results the bucket scale comes from the held-out max: the same precision and recall
    again = score_features(ExplanationSet({0: expl[0]}), store, sae, held)
    assert again[0].score.precision == 1.0 and again[0].score.recall == 1.0


def test_explanation_set_saves_loads_and_is_searchable(planted_tokens, tmp_path):
    res, store, sae = planted_tokens["res"], planted_tokens["store"], planted_tokens["sae"]
    expl = score_features(explain_features(res, [0, 1]), store, sae, heldout_contexts(res, store), results=res)
    path = expl.save(tmp_path)
    back = ExplanationSet.load(path)
    assert back.texts() == expl.texts()
    assert back[0].explanation.patterns == [(T_UNI,)] and back[0].score == expl[0].score
    path.write_text("{broken")
    with pytest.raises(ValueError, match=r"explanations\.json is corrupt"):
        ExplanationSet.load(tmp_path)

    texts = {0: "the word Paris and French cities", 1: "Paris-based companies", 2: "numbers in dates",
             3: "the city of Parisians"}
    hits = search_explanations(texts, "paris")
    assert [h.feature for h in hits] == [0, 1, 3]  # whole-word matches first, then the part of a word
    assert hits[0].score > hits[2].score
    assert [h.feature for h in search_explanations(texts, "dates numbers")] == [2]
    assert [h.feature for h in search_explanations(texts, "French city")][:2] == [0, 3]
    with pytest.raises(ValueError, match="empty"):
        search_explanations(texts, "  ")


def test_heldout_contexts_errors_when_everything_was_analysed(planted_tokens):
    res = compute_features(planted_tokens["store"], planted_tokens["sae"], None,
                           FeatureConfig(top_k=2, progress=False), tokenizer=False)
    with pytest.raises(ValueError, match="none are held out"):
        heldout_contexts(res, planted_tokens["store"])


def test_examples_from_activations_follow_the_streaming_rules(planted_tokens):
    acts = torch.from_numpy(planted_tokens["acts"][:30])
    acts[:, 0] = 0
    ids = torch.from_numpy(planted_tokens["tokens"][:30])
    res = planted_tokens["res"]
    exs = examples_from_activations(acts, ids, top_k=10, per_bucket=4)
    for f in (0, 1):
        want = res.top_examples(f)
        got = [e for e in exs[f].examples][: len(want)]
        assert [(e.context_idx, e.position, e.activation) for e in got] == \
            [(e.context_idx, e.position, e.activation) for e in want]
        bucket_tokens = sorted((e.context_idx, e.position) for b in res.buckets(f) for e in b.examples)
        dense_bucket = sorted((e.context_idx, e.position) for e in exs[f].examples[len(want):])
        assert dense_bucket == bucket_tokens
    assert TokenExplainer().explain(exs[0]).patterns == [(T_UNI,)]


def test_fitting_on_every_training_token_prefers_the_precise_bigram():
    """A unit fires on token 9 only right after token 3; token 9 is common elsewhere, but outside the windows the
    unit fired in. The windows alone cannot tell "9" from "3 9"; every token of the training contexts can."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(20, 40, (64, 32), generator=gen)
    ids[:32, 10] = 3
    ids[:32, 11] = 9  # fires here
    ids[32:, 5::6] = 9  # never fires here
    acts = torch.zeros(ids.shape)
    acts[:32, 11] = 2.0
    windows = examples_from_activations(acts[..., None], ids, top_k=20, per_bucket=0, context_before=3,
                                        context_after=0)[0]
    fitted = examples_from_activations(acts[..., None], ids, top_k=20, per_bucket=0, context_before=3,
                                       context_after=0, background=True)[0]
    assert isinstance(fitted.background, Background)
    assert torch.equal(fitted.background.acts, acts)
    assert TokenExplainer().explain(windows).patterns == [(T_B,)]
    expl = TokenExplainer().explain(fitted)
    assert expl.patterns == [(T_A, T_B)]
    assert expl.meta["train_precision"] == 1.0 and expl.meta["train_recall"] == 1.0
    # tokens outside ``valid`` are neither candidates nor negatives
    valid = torch.ones(ids.shape, dtype=torch.bool)
    valid[:, 11] = False
    masked = examples_from_activations(acts[..., None], ids, top_k=20, per_bucket=0, background=True,
                                       valid=valid)[0]
    assert TokenExplainer().explain(masked).patterns == []
    with pytest.raises(ValueError, match="same"):
        Background(ids, acts[:, :5])


# ----------------------------------------------------------------------------------------------------------------
# The optional LLM explainer against a local server
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def llm_server():
    with ChatStub('Explanation: the token "Paris" in running text.\nKey tokens: "Paris", "France"') as stub:
        yield stub


class _FakeTokenizer:
    vocab = {"Paris": [50], " Paris": [51], "France": [60], " France": [61]}

    def encode(self, text, add_special_tokens=False):
        return self.vocab.get(text, [99, 98, 97, 96, 95])


def _example_units() -> UnitExamples:
    ex = ActivationExample(context_idx=0, position=2, activation=3.0, tokens=["I", " love", " Paris"],
                           token_ids=[10, 11, 51], acts=[0.0, 0.0, 3.0], index=2, start=0)
    return UnitExamples(unit=4, kind="feature", max_activation=3.0, examples=[ex])


def test_openai_explainer_talks_to_a_local_endpoint(llm_server, monkeypatch):
    monkeypatch.setenv("WORKBENCH_LLM_API_KEY", "sekret")
    explainer = OpenAIExplainer(base_url=llm_server.url, model="tiny", tokenizer=_FakeTokenizer())
    e = explainer.explain(_example_units())
    req = llm_server.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sekret"
    assert req["body"]["model"] == "tiny" and req["body"]["messages"][0]["role"] == "system"
    assert "[[ Paris]](3.00)" in req["body"]["messages"][1]["content"]
    assert e.text == 'the token "Paris" in running text.'
    assert e.meta["key_tokens"] == ["Paris", "France"] and e.source == "llm:tiny"
    assert {(50,), (51,), (60,), (61,)} <= set(e.patterns)
    assert e.predict(torch.tensor([[10, 51, 61, 12]])).tolist() == [[False, True, True, False]]


def test_openai_explainer_config_and_errors(monkeypatch):
    monkeypatch.delenv("WORKBENCH_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="WORKBENCH_LLM_BASE_URL"):
        OpenAIExplainer()
    monkeypatch.setenv("WORKBENCH_LLM_BASE_URL", "http://127.0.0.1:9/v1")  # discard port: nothing listens
    explainer = OpenAIExplainer(timeout=2)
    assert explainer.base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(ValueError, match="cannot reach the LLM endpoint http://127.0.0.1:9/v1/chat/completions"):
        explainer.explain(_example_units())


def test_parse_key_tokens_fallbacks():
    assert parse_key_tokens('Explanation: dates\nKey tokens: "1990", "May"') == ("dates", ["1990", "May"])
    assert parse_key_tokens("Explanation: x\nKey tokens: of, the") == ("x", ["of", "the"])
    assert parse_key_tokens('fires on "bank" near money') == ('fires on "bank" near money', ["bank"])


# ----------------------------------------------------------------------------------------------------------------
# Search on the real model
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_features_for_text_ranks_by_span_activation(gemma, real_sae, real_results):
    text = "The Eiffel Tower is in Paris, the capital of France."
    r = features_for_text(gemma, real_sae, text, top_n=8)
    assert r.tokens[0] == gemma.tokenizer.bos_token and r.span == (1, len(r.token_ids))
    scores = [h.score for h in r.hits]
    assert scores == sorted(scores, reverse=True) and r.acts.shape == (len(r.token_ids), len(r.hits))
    x = hook_activations(gemma, torch.tensor([r.token_ids]), real_sae.metadata.hook_name)[0]
    with torch.no_grad():
        dense = real_sae.encode(x)[1:]
    best = int(dense.max(0).values.argmax())
    assert r.hits[0].feature == best and r.hits[0].max_activation == pytest.approx(float(dense[:, best].max()),
                                                                                    rel=1e-4)
    span = features_for_text(gemma, real_sae, text, span="Paris", by="mean", top_n=3)
    lo, hi = span.span
    assert "Paris" in "".join(span.tokens[lo:hi])
    assert span.hits[0].mean_activation == pytest.approx(float(dense[lo - 1:hi - 1].mean(0).max()), rel=1e-4)
    rel = features_for_text(gemma, real_sae, text, relative=True, results=real_results, top_n=3)
    assert all(h.relative is not None and h.score == pytest.approx(h.relative) for h in rel.hits)
    with pytest.raises(ValueError, match="does not occur"):
        features_for_text(gemma, real_sae, text, span="Berlin")
    with pytest.raises(ValueError, match="relative=True needs results"):
        features_for_text(gemma, real_sae, text, relative=True)


@pytest.mark.slow
def test_contrast_features_finds_what_set_a_has_more_of(gemma, real_sae):
    a = ["Paris is the capital of France.", "I took the train to Paris."]
    b = ["The cat sat on the mat.", "Two plus two equals four."]
    hits = contrast_features(gemma, real_sae, a, b, top_n=5)
    assert hits and all(h.diff > 0 for h in hits)
    assert [h.diff for h in hits] == sorted((h.diff for h in hits), reverse=True)
    f = hits[0].feature
    means = []
    for texts in (a, b):
        vals = []
        for t in texts:
            toks = gemma.to_tokens(t)
            with torch.no_grad():
                vals.append(real_sae.encode(hook_activations(gemma, toks, real_sae.metadata.hook_name)[0])[1:, f])
        means.append(float(torch.cat(vals).mean()))
    assert hits[0].mean_a == pytest.approx(means[0], rel=1e-4) and hits[0].mean_b == pytest.approx(means[1], abs=1e-5)
    by_text = contrast_features(gemma, real_sae, a, b, top_n=5, by="score", unit="text")
    assert by_text and all(h.diff > 0 for h in by_text)


# ----------------------------------------------------------------------------------------------------------------
# Features against neurons
# ----------------------------------------------------------------------------------------------------------------


def test_streaming_correlation_matches_corrcoef():
    from workbench.analysis.neurons import StreamingCorrelation

    gen = torch.Generator().manual_seed(0)
    n, F, N = 600, 5, 7
    neurons = torch.randn(n, N, generator=gen) * 3 + 10
    feats = torch.relu((neurons[:, :F] - 10) * torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0]) + torch.randn(n, F, generator=gen))
    feats[:, 3] = 0  # never fires: undefined
    acc = StreamingCorrelation(F, N, entry_chunk_bytes=64)
    for lo in range(0, n, 128):
        acc.update_dense(feats[lo:lo + 128], neurons[lo:lo + 128])
    want = torch.corrcoef(torch.cat([feats, neurons], 1).T.double())[:F, F:]
    got = acc.correlations()
    ok = ~torch.isnan(want)
    assert torch.allclose(got[ok].double(), want[ok], atol=1e-4)
    assert torch.isnan(got[3]).all()
    best, arg = acc.best()
    assert torch.isnan(best[3]) and arg[3] == -1
    wb = torch.nan_to_num(want, nan=-2).max(1)
    for f in (0, 1, 2, 4):
        assert arg[f] == wb.indices[f] and best[f] == pytest.approx(float(wb.values[f]), abs=1e-4)
    assert arg[0] == 0 and best[0] > 0.5 and best[1] < 0.3  # feature 1 is anti-correlated with its neuron
    best_abs, arg_abs = acc.best(absolute=True)
    assert arg_abs[1] == 1 and best_abs[1] < -0.5


@pytest.mark.slow
def test_neuron_correlations_on_the_real_model(gemma, real_sae, small_store, real_results, tmp_path):
    from workbench.analysis.neurons import NeuronConfig, NeuronCorrelations, default_neuron_layers, neuron_correlations

    hook = real_sae.metadata.hook_name
    assert default_neuron_layers(hook) == list(range(10)) and default_neuron_layers("blocks.3.hook_resid_pre") == [0, 1, 2]
    held = list(heldout_contexts(real_results, small_store))[:4]
    feats = real_results.alive()[:40]
    nc = neuron_correlations(gemma, real_sae, small_store, held, features=feats,
                             config=NeuronConfig(batch_contexts=2, progress=False))
    assert nc.n_tokens == 4 * (small_store.context_size - 1) and nc.layers == list(range(10))
    ok = nc.defined
    assert ok.sum() > 10 and (nc.best_corr[ok].abs() <= 1).all()
    frac = nc.fraction_below(0.3)
    assert 0.0 <= frac <= 1.0 and nc.summary()["fraction_best_corr_below_threshold"] == frac
    # brute force for one feature on the same tokens
    toks = torch.from_numpy(np.array(small_store.token_ids()[held], dtype=np.int64))
    _, cache = gemma.run_with_cache(toks, names_filter=lambda n: n == hook or n.endswith("mlp.hook_post"),
                                    stop_at_layer=10)
    x = cache[hook][:, 1:].reshape(-1, gemma.cfg.d_model)
    neu = torch.cat([cache[f"blocks.{l}.mlp.hook_post"][:, 1:].reshape(x.shape[0], -1) for l in range(10)], 1)
    j = int(ok.nonzero()[0])
    with torch.no_grad():
        f = real_sae.encode(x)[:, int(feats[j])]
    fc, nc_ = f.double() - f.double().mean(), neu.double() - neu.double().mean(0)
    corr = (fc @ nc_) / (fc.norm() * nc_.norm(dim=0))
    corr = torch.nan_to_num(corr, nan=-2)
    assert nc.best_corr[j] == pytest.approx(float(corr.max()), abs=2e-3)
    layer, neuron = divmod(int(corr.argmax()), gemma.cfg.d_mlp)
    assert (int(nc.best_layer[j]), int(nc.best_neuron[j])) == (layer, neuron)
    back = NeuronCorrelations.load(nc.save(tmp_path))
    assert torch.equal(back.best_corr.nan_to_num(-9), nc.best_corr.nan_to_num(-9))


@pytest.mark.slow
def test_compare_explanations_runs_features_and_neurons_side_by_side(gemma, real_sae, small_store):
    from workbench.analysis.neurons import compare_explanations

    out = compare_explanations(gemma, real_sae, small_store, range(0, 8), range(120, 123), n_features=4,
                               n_neurons=4, batch_contexts=4)
    assert len(out["features"]) == 4 and len(out["neurons"]) == 4
    for row in out["features"] + out["neurons"]:
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 and isinstance(row["explanation"], str)
    assert out["neurons"][0]["label"].startswith("L")
    assert set(out["summary"]) >= {"features", "neurons", "fire_fraction"}
