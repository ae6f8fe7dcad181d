"""Multilingual probes and measures: the pure measures on synthetic activations with a planted answer, the probe
data against the embedded corpus, the batched probe pass against a one-text-at-a-time path on the real model, and
the language heatmap driven through its methods."""
from __future__ import annotations

import itertools

import pytest
import torch

from workbench.analysis.multilingual import (
    concept_carrier,
    feature_scores,
    residual_similarity,
    shared_top_features,
    top_k_frequency,
    topk_overlap,
)
from workbench.analysis.multilingual_probes import (
    CONCEPT_SENTENCES,
    LANGUAGE_NAMES,
    WIKI_PARALLEL_TITLES,
    ProbeActivations,
    ProbeGroup,
    concept_probe_groups,
    first_sentence,
    probe_activations,
    shared_title_groups,
    wiki_probe_groups,
)


# ----------------------------------------------------------------------------------------------------------------
# Probe data
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, first", [
    ("The bridge opened in 1937. It is red.", "The bridge opened in 1937."),
    ("It carries U.S. Route 101 across. Next one.", "It carries U.S. Route 101 across."),
    ("J. R. R. Tolkien was a writer. He wrote.", "J. R. R. Tolkien was a writer."),
    ("Entre el siglo V a. C. y el siglo XVI. Otra frase.", "Entre el siglo V a. C. y el siglo XVI."),
    ("Il a vu St. Louis en 1990. Puis il est parti.", "Il a vu St. Louis en 1990."),
    ("Is it 1.6 km long? Yes.", "Is it 1.6 km long?"),
    ("  Only one\nsentence here ", "Only one sentence here"),
])
def test_first_sentence(text, first):
    assert first_sentence(text) == first


def test_first_sentence_rejects_empty_text():
    with pytest.raises(ValueError, match="empty"):
        first_sentence("   ")


def test_every_curated_title_is_in_the_corpus_and_golden_gate_is_aligned():
    groups = wiki_probe_groups()
    assert len(groups) == len(WIKI_PARALLEL_TITLES) >= 20
    gg = groups[[g.name for g in groups].index("Golden Gate Bridge")]
    assert gg.texts["en"].startswith("The Golden Gate Bridge is a suspension bridge")
    assert gg.texts["es"].startswith("El puente Golden Gate es un puente colgante")
    assert gg.texts["fr"].startswith("Le pont du Golden Gate est un pont suspendu")
    from workbench.data.corpus import wiki_article

    for g, entry in zip(groups, WIKI_PARALLEL_TITLES):  # each text opens its own article, in its own language
        for lang, text in g.texts.items():
            article = " ".join(wiki_article(lang, entry[lang]).text.split())
            assert article.startswith(text) and len(text) > 20
    two = wiki_probe_groups(WIKI_PARALLEL_TITLES[:1], sentences=2)[0]
    assert two.texts["en"].startswith(gg.texts["en"]) and len(two.texts["en"]) > len(gg.texts["en"])


def test_wiki_groups_name_a_missing_article_or_language():
    with pytest.raises(ValueError, match="no article 'Puente Inexistente'"):
        wiki_probe_groups([{"en": "Golden Gate Bridge", "es": "Puente Inexistente", "fr": "Pont du Golden Gate"}])
    with pytest.raises(ValueError, match="no title for fr"):
        wiki_probe_groups([{"en": "Golden Gate Bridge", "es": "Puente Golden Gate"}])


def test_shared_title_groups_use_identical_titles():
    groups = shared_title_groups(3, seed=1)
    assert len(groups) == 3
    assert groups == shared_title_groups(3, seed=1) and groups != shared_title_groups(3, seed=2)


def test_concept_sentences_cover_five_languages_and_differ():
    groups = concept_probe_groups()
    assert len(groups) == len(CONCEPT_SENTENCES) >= 10
    for g in groups:
        assert len(g.texts) >= 5
        assert len(set(g.texts.values())) == len(g.texts)  # no copy-pasted translation
    assert list(concept_probe_groups(languages=("en", "de"))[0].texts) == ["en", "de"]
    with pytest.raises(ValueError, match="no sentence in xx"):
        concept_probe_groups(languages=("en", "xx"))
    with pytest.raises(ValueError, match="empty"):
        ProbeGroup("x", {"en": " "})


def test_probe_tables_are_read_from_the_shipped_resource():
    from workbench.core.resources import load_resource

    data = load_resource("multilingual_probes.json")
    assert data["format"] == "workbench-resource/multilingual_probes" and data["format_version"] == 1
    assert WIKI_PARALLEL_TITLES[0] == {"en": "Golden Gate Bridge", "es": "Puente Golden Gate",
                                       "fr": "Pont du Golden Gate"}
    assert {"en": "Amazon River", "es": "Río Amazonas", "fr": "Amazone (fleuve)"} in WIKI_PARALLEL_TITLES
    assert len(WIKI_PARALLEL_TITLES) == 32 and len(CONCEPT_SENTENCES) == 14
    assert CONCEPT_SENTENCES["dog"]["en"] == "The dog barked at the stranger all night."
    assert CONCEPT_SENTENCES["golden_gate"]["de"] == "Wir fuhren über die Golden Gate Bridge nach San Francisco."
    assert list(CONCEPT_SENTENCES["dog"]) == ["en", "es", "fr", "de", "it", "pt"]
    assert LANGUAGE_NAMES["es"] == "Spanish" and set(LANGUAGE_NAMES) == {"en", "es", "fr", "de", "it", "pt"}
    assert data["concept_sentences"]["dog"] is not CONCEPT_SENTENCES["dog"]  # a copy: the cached resource is safe


# ----------------------------------------------------------------------------------------------------------------
# Measures on synthetic activations
# ----------------------------------------------------------------------------------------------------------------


def planted(G=6, L=3, d=40, seed=0, strength=5.0):
    """Mean activations where group g has features 2g, 2g+1 strong in every language, feature d-1 is as strong on
    every text (dense), and the rest is weak noise."""
    gen = torch.Generator().manual_seed(seed)
    acts = torch.rand(G, L, d, generator=gen) * 0.5
    for g in range(G):
        acts[g, :, 2 * g] += strength
        acts[g, :, 2 * g + 1] += strength - 1
    acts[:, :, d - 1] = 2 * strength
    return acts


def test_specific_scores_remove_a_feature_equal_on_every_text():
    acts = planted()
    spec = feature_scores(acts, "specific")
    assert torch.allclose(spec[:, :, -1], torch.zeros(6, 3))
    g, l, i = 2, 1, 7
    others = torch.cat([acts[:g, l, i], acts[g + 1:, l, i]]).mean()
    assert torch.isclose(spec[g, l, i], acts[g, l, i] - others)
    assert torch.equal(feature_scores(acts, "mean"), acts)
    with pytest.raises(ValueError, match="how must be"):
        feature_scores(acts, "median")


def test_shared_top_features_finds_the_planted_features():
    acts = planted()
    langs = ["en", "es", "fr"]
    shared = shared_top_features(acts[3], langs, k=3)
    assert [s.feature for s in shared] == [39, 6, 7]  # dense first (rank 0), then the planted pair
    assert shared[1].ranks == {"en": 1, "es": 1, "fr": 1} and shared[1].worst_rank == 1
    spec = shared_top_features(feature_scores(acts, "specific")[3], langs, k=2)
    assert [s.feature for s in spec] == [6, 7]
    # a feature at the top in two languages but absent in the third is not shared
    scores = torch.zeros(3, 5)
    scores[0, 4] = scores[1, 4] = 9.0
    scores[:, 0] = 1.0
    assert [s.feature for s in shared_top_features(scores, langs, k=2)] == [0]


def test_topk_overlap_against_the_shuffled_baseline():
    langs = ["en", "es", "fr"]
    spec = feature_scores(planted(), "specific")
    res = topk_overlap(spec, langs, k=2, names=[f"g{g}" for g in range(6)])
    assert res.matched == pytest.approx(1.0) and res.baseline == pytest.approx(0.0)
    assert res.p_value < 0.01 and set(res.per_pair) == {"en-es", "en-fr", "es-fr"}
    assert res.per_group == {f"g{g}": pytest.approx(1.0) for g in range(6)}
    # the raw mean puts the dense feature in every top-2: half of every set is shared, translations or not
    raw = topk_overlap(planted(), langs, k=2)
    assert raw.baseline == pytest.approx(0.5) and raw.matched == pytest.approx(1.0)
    # by hand, on random scores: one language pair, matched = mean |A_g ∩ B_g| / k
    gen = torch.Generator().manual_seed(3)
    rnd = torch.rand(5, 2, 30, generator=gen)
    k = 4
    top = rnd.topk(k, dim=-1).indices
    sets = [[set(top[g, li].tolist()) for li in range(2)] for g in range(5)]
    matched = sum(len(sets[g][0] & sets[g][1]) for g in range(5)) / (5 * k)
    base = sum(len(sets[g][0] & sets[h][1]) for g, h in itertools.permutations(range(5), 2)) / (20 * k)
    res = topk_overlap(rnd, ["a", "b"], k=k)
    assert res.matched == pytest.approx(matched) and res.baseline == pytest.approx(base)
    assert res.p_value > 0.05  # nothing planted: random pairings do as well
    with pytest.raises(ValueError, match="at least two groups"):
        topk_overlap(rnd[:1], ["a", "b"], k=2)


def test_topk_ignores_features_that_do_not_fire():
    acts = torch.zeros(2, 2, 10)
    acts[0, :, 3] = 1.0  # one active feature; the zeros must not count as shared "top" features
    res = topk_overlap(acts, ["a", "b"], k=5)
    assert res.per_group["0"] == pytest.approx(1 / 5) and res.per_group["1"] == 0.0


def test_residual_similarity_sees_the_concept_only_after_centring():
    gen = torch.Generator().manual_seed(0)
    G, L, d, n_layers = 8, 3, 32, 2
    shared = torch.randn(d, generator=gen) * 50  # the direction every token shares
    concept = torch.randn(G, 1, d, generator=gen)
    lang = torch.randn(1, L, d, generator=gen) * 2
    noise = torch.randn(n_layers, G, L, d, generator=gen) * 0.3
    resid = shared + noise + torch.stack([concept * 3 + lang, concept * 0.0 + lang])  # layer 1: no concept
    raw = residual_similarity(resid, ["a", "b", "c"], center="none")
    assert min(raw.matched + raw.baseline) > 0.95  # the shared direction dominates every cosine
    cen = residual_similarity(resid, ["a", "b", "c"], center="language")
    assert cen.retrieval[0] == 1.0 and cen.gap[0] > 0.5
    assert cen.retrieval[1] < 0.5 and abs(cen.gap[1]) < 0.2
    # "all" keeps the language direction, which here outweighs the concept on layer 1 only
    assert residual_similarity(resid, ["a", "b", "c"], center="all").retrieval[0] == 1.0
    with pytest.raises(ValueError, match="center must be"):
        residual_similarity(resid, ["a", "b", "c"], center="mean")


# ----------------------------------------------------------------------------------------------------------------
# The probe pass on the real model
# ----------------------------------------------------------------------------------------------------------------


def tiny_sae(d_in: int, hook: str, d_sae: int = 48, k: int = 6):
    from workbench.sae.model import SAE, SAEConfig, SAEMetadata

    return SAE(SAEConfig("topk", d_in, d_sae, k=k), SAEMetadata(hook_name=hook), seed=1).folded(1 / 300).eval()


@pytest.fixture(scope="module")
def probe_sae(gemma):
    return tiny_sae(gemma.cfg.d_model, "blocks.6.hook_resid_post")


@pytest.mark.slow
def test_batched_probes_match_one_text_at_a_time(gemma, probe_sae, one_torch_thread):
    from workbench.analysis.search import hook_activations

    groups = concept_probe_groups(languages=("en", "fr"))[:3]
    batched = probe_activations(gemma, probe_sae, groups, residual_layers=[2, 6], batch_size=6)
    single = probe_activations(gemma, probe_sae, groups, residual_layers=[2, 6], batch_size=1)
    acts = batched.feature_acts()
    assert acts.shape == (3, 2, 48) and batched.residuals.shape == (2, 3, 2, gemma.cfg.d_model)
    assert torch.allclose(acts, single.feature_acts(), atol=1e-4)
    assert torch.allclose(batched.residuals, single.residuals, rtol=1e-4, atol=1e-2)
    # an independent path: the search module's activations of one text
    text = groups[1].texts["fr"]
    ids = [gemma.tokenizer.bos_token_id] + gemma.tokenizer(text, add_special_tokens=False)["input_ids"]
    x = hook_activations(gemma, torch.tensor([ids]), "blocks.6.hook_resid_post")[0, 1:]
    assert int(batched.n_tokens[1, 1]) == len(ids) - 1
    assert torch.allclose(batched.residuals[1, 1, 1], x.mean(0), rtol=1e-4, atol=1e-2)
    assert torch.allclose(acts[1, 1], probe_sae.encode(x).mean(0), atol=1e-4)


@pytest.mark.slow
def test_probe_errors_name_the_problem(gemma, probe_sae):
    groups = concept_probe_groups(languages=("en", "fr"))[:2]
    with pytest.raises(ValueError, match="no text in de"):
        probe_activations(gemma, probe_sae, groups, languages=("en", "de"))
    with pytest.raises(ValueError, match="d_model mismatch"):
        probe_activations(gemma, tiny_sae(32, "blocks.6.hook_resid_post"), groups)
    with pytest.raises(ValueError, match="out of range"):
        probe_activations(gemma, None, groups, residual_layers=[99])
    with pytest.raises(ValueError, match="at least two languages"):
        probe_activations(gemma, probe_sae, groups, languages=("en",))


# ----------------------------------------------------------------------------------------------------------------
# The heatmap widget
# ----------------------------------------------------------------------------------------------------------------


def synthetic_results(d_sae: int):
    """A real FeatureResults over synthetic arrays: one example per feature."""
    from workbench.analysis.features import FeatureResults

    K, W, B, m, bins = 1, 3, 2, 1, 4
    arrays = {
        "count": torch.arange(1, d_sae + 1, dtype=torch.int64), "sum": torch.ones(d_sae, dtype=torch.float64),
        "max": torch.linspace(1.0, 2.0, d_sae), "top_val": torch.ones(d_sae, K),
        "top_tok": torch.full((d_sae, K), 5, dtype=torch.int64),
        "top_win_ids": torch.tensor([7, 8, 9]).expand(d_sae, K, W).clone(), "top_win_acts": torch.rand(d_sae, K, W),
        "bucket_val": torch.ones(d_sae, B, m), "bucket_tok": torch.full((d_sae, B, m), -1, dtype=torch.int64),
        "bucket_win_ids": torch.full((d_sae, B, m, W), -1, dtype=torch.int64),
        "bucket_win_acts": torch.zeros(d_sae, B, m, W), "bucket_count": torch.zeros(d_sae, B, dtype=torch.int64),
        "hist": torch.ones(d_sae, bins, dtype=torch.int64)}
    meta = {"n_tokens": 1000, "n_contexts": 10, "context_size": 16, "config": {"context_before": 1}}
    return FeatureResults(arrays, meta, {7: " the", 8: " Golden", 9: " Gate"})


def synthetic_probes() -> ProbeActivations:
    acts = planted()
    groups = [ProbeGroup(f"g{g}", {lang: f"text {g} {lang}" for lang in ("en", "es", "fr")}) for g in range(6)]
    return ProbeActivations(groups=groups, languages=["en", "es", "fr"], features={"blocks.9.hook_resid_post": acts},
                            residuals=None, layers=[], n_tokens=torch.ones(6, 3, dtype=torch.long))


def test_carrier_and_generality_tell_a_concept_feature_from_a_generic_one():
    probes, results = synthetic_probes(), synthetic_results(40)
    freq = top_k_frequency(probes.feature_acts(), k=3)
    assert float(freq[39]) == 1.0  # the dense feature is in every text's top 3
    assert float(freq[6]) == pytest.approx(1 / 6)  # group 3's feature: its group's 3 texts out of 18
    raw = concept_carrier(probes, "g3", k=3, how="mean", results=results)
    assert raw.feature == 39 and raw.shared and raw.generality == 1.0
    assert raw.density == pytest.approx(float(results.density[39]))
    spec = concept_carrier(probes, "g3", k=3, how="specific")
    assert spec.feature == 6 and spec.ranks == {"en": 0, "es": 0, "fr": 0} and spec.density is None
    assert "F6 ranks en #1, es #1, fr #1: in the top 3 of every language" in spec.describe()
    # a group whose best feature is top in two languages only is reported as not shared
    acts = probes.feature_acts().clone()
    acts[3, 2, 6] = acts[3, 2, 7] = 0.0
    acts[3, 2, 20:36] += 3.0  # sixteen features outrank everything else in French
    alt = ProbeActivations(probes.groups, probes.languages, {"h": acts}, None, [], probes.n_tokens)
    c = concept_carrier(alt, "g3", k=3, how="specific")
    assert not c.shared and "not in the top 3 of every language" in c.describe()
    with pytest.raises(ValueError, match="d_sae=12"):
        concept_carrier(probes, "g3", results=synthetic_results(12))


def test_language_heatmap_columns_and_card():
    from helpers import assert_balanced
    from widgets.language_heatmap import LanguageHeatmap

    probes, results = synthetic_probes(), synthetic_results(40)
    view = LanguageHeatmap(probes, "g2", results=results, top_n=5, k=3, how="specific")
    assert view.features[:2] == [4, 5] and [s.feature for s in view.shared] == [4, 5]
    assert view.column(4) == pytest.approx({lang: float(probes.features["blocks.9.hook_resid_post"][2, i, 4])
                                            for i, lang in enumerate(["en", "es", "fr"])})
    fig = view.figure()
    assert list(fig.data[0].y) == ["English", "Spanish", "French"] and list(fig.data[0].x)[:2] == ["F4", "F5"]
    card = view.select(5)
    assert view.selected == 5 and card.report.index == 5
    out = view.to_html(include_plotlyjs=False)
    assert_balanced(out)
    assert "Feature 5" in out and "text 2 es" in out
    rel = LanguageHeatmap(probes, 2, results=results, relative=True)
    j = rel.features.index(4)
    assert float(rel.values[0, j]) == pytest.approx(float(probes.features["blocks.9.hook_resid_post"][2, 0, 4])
                                                    / float(results.max_activation[4]))
    with pytest.raises(ValueError, match="out of range"):
        view.select(40)
    with pytest.raises(ValueError, match="needs results"):
        LanguageHeatmap(probes, "g2").select(4)
    with pytest.raises(ValueError, match="unknown probe group 'nope'"):
        LanguageHeatmap(probes, "nope")
    with pytest.raises(ValueError, match="d_sae=12"):
        LanguageHeatmap(probes, "g2", results=synthetic_results(12))


# ----------------------------------------------------------------------------------------------------------------
# The study's tables
# ----------------------------------------------------------------------------------------------------------------


def test_study_tables_on_synthetic_probes():
    from workbench.studies.multilingual import depth_table, headline_carriers, overlap_table, summary_lines

    probes = synthetic_probes()
    gen = torch.Generator().manual_seed(0)
    resid = torch.randn(2, 6, 3, 16, generator=gen) + torch.randn(1, 6, 1, 16, generator=gen) * 3
    with_resid = ProbeActivations(probes.groups, probes.languages, probes.features, resid, [4, 9], probes.n_tokens)
    sets = {"wiki": with_resid, "concepts": with_resid}
    overlap = overlap_table(sets, ks=(2, 3))
    assert len(overlap) == 2 * 2 * 2 and {r["ranking"] for r in overlap} == {"mean", "specific"}
    spec = next(r for r in overlap if r["probes"] == "wiki" and r["ranking"] == "specific" and r["k"] == 2)
    assert spec["matched"] == pytest.approx(1.0) and spec["baseline"] == pytest.approx(0.0) and spec["p"] < 0.01
    depth = depth_table(sets, centers=("all",))
    assert [(r["probes"], r["layer"]) for r in depth] == [("wiki", 4), ("wiki", 9), ("concepts", 4), ("concepts", 9)]
    assert all(r["retrieval"] == 1.0 for r in depth)  # the planted group direction dominates the noise
    carriers = headline_carriers(sets, k=3, groups={"wiki": "g3"})
    assert [(c.group, c.how, c.feature) for c in carriers] == [("g3", "mean", 39), ("g3", "specific", 6)]
    lines = summary_lines(overlap, depth, carriers, sae_layer=9, k=2)
    assert lines[0].startswith("top-2 overlap (wiki, specific): 1.000 vs shuffled 0.000")
    assert lines[-1] == "residual retrieval (concepts): best at layer 4 (1.00); at the SAE layer 1.00"
    assert any("F6 ranks en #1, es #1, fr #1" in line for line in lines)
