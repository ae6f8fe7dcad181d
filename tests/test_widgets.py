"""The widgets, driven programmatically: a synthetic FeatureReport for the card's rendering, and a small real SAE
on the real small store for the browser and the prompt inspector."""
from __future__ import annotations

import pytest

from workbench.analysis.explain import explain_features, heldout_contexts, score_features
from workbench.analysis.features import ActivationBucket, ActivationExample, FeatureReport, Histogram, LogitEffect
from widgets.feature_browser import FeatureBrowser
from widgets.feature_card import FeatureCard, histogram_figure
from widgets.prompt_inspector import PromptInspector, heatmap_figure
from workbench.report.html import token_spans

from helpers import assert_balanced


def synthetic_report(index: int = 7) -> FeatureReport:
    ex = ActivationExample(context_idx=3, position=10, activation=4.0, tokens=[" the", " Golden", " Gate", "<b>"],
                           token_ids=[1, 2, 3, 4], acts=[0.0, 1.0, 4.0, 0.5], index=2, start=8)
    low = ActivationExample(context_idx=5, position=2, activation=0.5, tokens=[" a", "\n"], token_ids=[5, 6],
                            acts=[0.5, 0.0], index=0, start=2)
    buckets = [ActivationBucket(0, 0.0, 2.0, 9, [low]), ActivationBucket(1, 2.0, 4.0, 1, [ex])]
    return FeatureReport(index=index, count=10, density=1e-3, max_activation=4.0, mean_activation=1.2, top=[ex],
                         buckets=buckets, histogram=Histogram(edges=[0.0, 1.0, 2.0, 3.0, 4.0], counts=[6, 3, 0, 1]),
                         logits=LogitEffect([" Bridge"], [2.5], [" cat"], [-1.5]))


# ----------------------------------------------------------------------------------------------------------------
# Static pieces
# ----------------------------------------------------------------------------------------------------------------


def test_token_spans_scale_escape_and_emphasise():
    out = token_spans(["a", "<b>", "c"], [0.0, 2.0, 1.0], 2.0, emphasis=1)
    assert out.count("<span") == 3 and "&lt;b&gt;" in out and "<b>" not in out
    assert "rgba(255,140,0,1.00)" in out and "rgba(255,140,0,0.50)" in out
    assert out.count("wb-max") == 1 and 'title="2.000"' in out
    assert "background" not in out.split("</span>")[0]  # zero activation: no highlight


def test_histogram_is_coloured_by_bucket():
    fig = histogram_figure(synthetic_report())
    bar = fig.data[0]
    assert list(bar.y) == [6, 3, 0, 1] and list(bar.customdata) == [0, 0, 1, 1]
    assert bar.marker.color[0] == bar.marker.color[1] != bar.marker.color[3]


def test_card_html_has_every_piece():
    card = FeatureCard(synthetic_report(), "fires on \"Gate\"")
    out = card.to_html(include_plotlyjs=False)
    assert_balanced(out)
    assert "Feature 7" in out and "0.001" in out and "fires on &quot;Gate&quot;" in out
    assert "&#x27; Bridge&#x27;" in out and "-1.5" in out  # logit table
    assert "wb-max" in out and "⏎" in out  # emphasised token, visible newline
    assert "Plotly.newPlot" in out and "<script src=" not in out  # the figure, without the library


def test_card_widget_builds():
    import ipywidgets as W

    w = FeatureCard(synthetic_report()).widget
    assert isinstance(w, W.VBox) and len(w.children) == 4


def test_card_without_logits_or_firing():
    rep = synthetic_report()
    rep.logits, rep.top = None, []
    out = FeatureCard(rep).to_html(False)
    assert "never fired" in out and "without model=" in out


# ----------------------------------------------------------------------------------------------------------------
# On a real SAE
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explained(real_results, real_sae, small_store):
    feats = real_results.alive()[:40].tolist()
    expl = explain_features(real_results, feats)
    return score_features(expl, small_store, real_sae, list(heldout_contexts(real_results, small_store))[:16],
                          results=real_results)


@pytest.mark.slow
def test_browser_sort_page_select(real_results, explained):
    b = FeatureBrowser(real_results, explained, page_size=5)
    alive = real_results.alive().tolist()
    assert len(b.visible) == 5 and b.n_pages == -(-len(alive) // 5)
    dens = [float(real_results.density[i]) for i in b.visible]
    assert dens == sorted(dens, reverse=True) and set(b.visible) <= set(alive)
    first = b.visible
    assert b.next_page() != first and b.page == 1
    assert b.prev_page() == first and b.prev_page() == first and b.page == 0  # clamped
    top = b.sort_by("max_activation")
    assert float(real_results.max_activation[top[0]]) == float(real_results.max_activation[alive].max())
    scored = b.sort_by("score")
    f1 = [explained[i].score.f1 for i in scored if i in explained]
    assert f1 == sorted(f1, reverse=True) and scored[0] in explained
    assert b.sort_by("index") == sorted(alive)[:5]
    card = b.select(scored[0])
    assert b.selected == scored[0] and isinstance(card, FeatureCard) and card.report.index == scored[0]
    assert "explanation:" in b.to_html(False)
    with pytest.raises(ValueError, match="unknown sort key"):
        b.sort_by("nonsense")


@pytest.mark.slow
def test_browser_search_text_and_id(real_results, explained):
    b = FeatureBrowser(real_results, explained, page_size=5)
    f = next(i for i in explained if explained[i].explanation.meta.get("pattern_strings"))
    word = explained[f].explanation.meta["pattern_strings"][0].strip() or explained[f].explanation.meta[
        "pattern_strings"][0]
    matches = b.search(word)
    assert f in matches and b.sort_key == "relevance" and b.visible == matches[:5]
    assert b.search("F3") == [3] and b.selected == 3 and b.card.report.index == 3
    assert b.search("") and b._matches is None and b.sort_key == "density"
    with pytest.raises(ValueError, match="out of range"):
        b.search(str(real_results.d_sae))
    with pytest.raises(ValueError, match="needs explanations"):
        FeatureBrowser(real_results).search("bridge")


@pytest.mark.slow
def test_browser_widget_follows_state(real_results, explained):
    b = FeatureBrowser(real_results, explained, page_size=4)
    w = b.widget
    assert len(b._ui["list"].options) == 4
    b._ui["next"].click()
    assert b.page == 1 and b._ui["page"].value.startswith("2/")
    b._ui["sort"].value = "max_activation"
    assert b.sort_key == "max_activation" and b.page == 0
    b._ui["list"].value = b.visible[1]
    assert b.selected == b.visible[1] and len(b._ui["card"].children) == 1
    b._ui["search"].value = "7"
    assert b.selected == 7
    assert w is b.widget


@pytest.mark.slow
def test_prompt_inspector(gemma, real_sae, real_results):
    insp = PromptInspector(gemma, real_sae, results=real_results, top_n=6)
    with pytest.raises(ValueError, match="run\\(text\\)"):
        insp.select_token(1)
    res = insp.run("The Golden Gate Bridge is a suspension bridge in San Francisco.")
    assert 0 < len(res.hits) <= 6 and res.acts.shape == (len(res.tokens), len(res.hits))
    fig = heatmap_figure(res)
    assert len(fig.data[0].z) == len(res.hits) and len(fig.data[0].x) == len(res.tokens)
    feats = insp.select_token(3)
    assert feats and all(a > 0 for _, a in feats)
    assert [a for _, a in feats] == sorted((a for _, a in feats), reverse=True)
    # a heatmap feature's activation on token 3 matches the per-token search
    by_feat = dict(feats)
    for k, h in enumerate(res.hits):
        if h.feature in by_feat:
            assert by_feat[h.feature] == pytest.approx(float(res.acts[3, k]), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        insp.select_token(len(res.tokens))
    out = insp.to_html(False)
    assert_balanced(out)
    assert "Golden Gate" in out and f"F{feats[0][0]}" in out and "token 3" in out
    w = insp.widget
    insp._ui["token"].value = 2
    assert insp.selected_token == 2 and "token 2" in insp._ui["table"].value
    assert w is insp.widget
    with pytest.raises(ValueError, match="empty"):
        insp.run("  ")
