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

    card = FeatureCard(synthetic_report())
    w = card.widget
    assert isinstance(w, W.VBox) and len(w.children) == 5
    assert "click a bar" in card._bucket_html.value
    (plot, _), = [c.children for c in w.children if isinstance(c, W.HBox)]
    plot.click([{"curve": 0, "point": 3, "customdata": 1}])  # the last bar lies in bucket 1
    assert card.bucket == 1 and "bucket 1: activations in [2, 4]" in card._bucket_html.value
    assert "Gate" in card._bucket_html.value
    with pytest.raises(ValueError, match="out of range"):
        card.show_bucket(5)


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
    assert len(fig.data[0].z) == len(res.hits) and len(fig.data[0].x) == len(res.tokens) - 1  # no BOS column
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


# ----------------------------------------------------------------------------------------------------------------
# What a user tripped over in JupyterLab (issue 16), on the browser gallery's tiny synthetic data
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gallery_data(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "browser"))
    import gallery

    return gallery.build(tmp_path_factory.mktemp("gallery"), widgets=False)


def test_plot_widget_carries_the_figure_not_plotly_js():
    import json

    import plotly.graph_objects as go
    from widgets.plot import PlotWidget

    fig = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]))
    w = PlotWidget(fig)
    state = json.dumps(w.get_state())
    assert len(state) < 50_000, len(state)  # plotly's FigureWidget state is ~5 MB (the whole library)
    assert w.figure["data"][0]["z"] == [[1, 2], [3, 4]]
    got = []
    w.on_click(got.append)
    w._on_front_end_msg(w, {"type": "click", "points": [{"curve": 0, "point": [1, 0], "customdata": None}]}, [])
    assert got == [[{"curve": 0, "point": [1, 0], "customdata": None}]]
    sent = []
    w.send = lambda content, buffers=None: sent.append((content, buffers))
    w._on_front_end_msg(w, {"type": "plotly-js"}, [])
    assert sent[0][0] == {"type": "plotly-js"} and len(sent[0][1][0]) > 1_000_000 and w.n_library_sends == 1


def test_browser_search_says_no_matches_and_keeps_the_open_card(gallery_data):
    res, expl = gallery_data.results["topk-64"], gallery_data.explanations["topk-64"]
    b = FeatureBrowser(res, expl, page_size=5)
    ui = b.widget
    first = b.visible[0]
    b.select(first)
    card = b.card
    assert b.search("zzzz-no-such-thing") == []
    assert "no matches for 'zzzz-no-such-thing'" in b.message and b._ui["page"].value == "0/0"
    assert "no matches" in b._ui["message"].value and "no matches" in b.listing_html()
    assert b.card is card and b.selected == first  # the search did not replace the open card
    b.search("")
    b.sort_by("max_activation")
    b.next_page()
    assert b.card is card and b.selected == first
    word = expl[first].explanation.text.split('"')[1].strip() or expl[first].explanation.text
    hits = b.search(word)
    assert hits and b.sort_key == "relevance" and b._ui["sort"].value == "relevance"  # the menu says it
    assert b.card is card
    b._ui["list"].value = b.visible[-1]  # a user's pick does open a card
    assert b.selected == b.visible[-1] and b.card is not card
    assert ui is b.widget


def test_inspector_leaves_bos_out_and_its_menu_names_the_token(gallery_data):
    sae, res = gallery_data.saes["topk-64"], gallery_data.results["topk-64"]
    insp = PromptInspector(gallery_data.model, sae, results=res, top_n=6, text="Paris is the capital of France")
    fig = insp.figure()
    assert insp.result.span[0] == 1 and not any(x.startswith("0:") for x in fig.data[0].x)
    assert len(fig.data[0].x) == len(insp.result.tokens) - 1
    insp.widget
    assert all(v >= 1 for _, v in insp._ui["token"].options) and insp._ui["token"].value is None
    insp.select_token(2)
    assert insp._ui["token"].value == 2 and "token 2 " in insp._ui["table"].value
    insp._on_click([{"curve": 0, "point": [0, 1], "customdata": 3}])  # a click on column 1 is token 3
    assert insp.selected_token == 3 and insp._ui["token"].value == 3
    insp.run("Berlin is a city")  # a new prompt: no token picked by itself
    assert insp.selected_token is None and insp._ui["token"].value is None


def test_steering_search_keeps_the_feature_and_the_menu_explains(gallery_data):
    from workbench.intervene.generation import GenerationConfig
    from widgets.steering_playground import SteeringPlayground

    name = "topk-64"
    sae, res, expl = gallery_data.saes[name], gallery_data.results[name], gallery_data.explanations[name]
    pg = SteeringPlayground(gallery_data.model, sae, res.max_activation, explanations=expl,
                            config=GenerationConfig(max_new_tokens=2, n_samples=1), chat=False)
    ui = pg.widget
    alive = res.alive().tolist()
    explained = [i for i in alive if i in expl]
    pg.set_feature(explained[0])
    matches = pg.search("the")
    assert matches and pg.feature == explained[0] and pg._ui["feature"].value == explained[0]
    labels = dict((v, k) for k, v in pg._ui["feature"].options)
    assert labels[explained[0]].startswith(f"F{explained[0]}: ") and len(labels[explained[0]]) > 6
    assert f"{len(matches)} features for &#x27;the&#x27;: pick one" in pg._ui["out"].value
    assert pg._ui["strength"].layout.width == "100%"
    assert ui is pg.widget


def test_map_tooltips_quote_plainly_wrap_and_the_legend_clears_the_colour_bar(gallery_data):
    import numpy as np

    from workbench.analysis.neighborhoods import FeatureLayout
    from widgets.neighborhood_map import HOVER_WIDTH, NeighborhoodMap

    n = 6
    layout = FeatureLayout(["topk-16"], np.zeros(n, dtype=np.int64), np.arange(n), np.random.default_rng(0).random((n, 2)),
                           np.zeros((n, 2)), np.array([0, 0, 0, 1, 1, -1]), np.tile(np.arange(n), (n, 1)),
                           np.ones((n, n)), cluster_labels={0: '" Paris" (3)', 1: '"la" (2)'})
    long = 'fires on " Gate", " Bridge", " San", " Francisco", " Golden", " suspension", " orange"'
    m = NeighborhoodMap(layout, {"topk-16": gallery_data.results["topk-16"]}, {"topk-16": {0: long}})
    hover = m.hover_text(0)
    assert "&quot;" not in hover and '" Gate"' in hover  # plotly shows &quot; literally
    lines = hover.replace("<b>", "").replace("</b>", "").replace("<i>", "").replace("</i>", "").split("<br>")
    assert len(lines) >= 3 and all(len(x) <= HOVER_WIDTH for x in lines)  # wrapped: not wider than the plot
    assert 'cluster 0: " Paris" (3)' in hover
    fig = m.colour_by("density")
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # below the plot
    assert fig.data[0].marker.colorbar.x >= 1.0  # the colour bar keeps the right edge to itself


def test_byte_split_tokens_are_spelled(gallery_data, tmp_path):
    from workbench.data.token_text import spell_tokens

    tok = gallery_data.model.tokenizer
    ids = tok("Über 500 espèces 東京")["input_ids"]
    alone = [tok.decode([i]) for i in ids]
    assert any("\ufffd" in t for t in alone)  # the bug: fragments shown alone
    spelled = spell_tokens(ids, tok)
    assert len(spelled) == len(ids) and not any("\ufffd" in t for t in spelled)
    assert "".join(spelled) == tok.decode(ids)
    # the inspector and the feature examples show spelled text
    sae, res = gallery_data.saes["topk-64"], gallery_data.results["topk-64"]
    insp = PromptInspector(gallery_data.model, sae, text="Über 500 espèces 東京")
    assert not any("\ufffd" in t for t in insp.result.tokens)
    assert res.token_bytes  # the fragments' bytes, kept with the results
    seen = 0
    for i in res.alive().tolist():
        for ex in res.top_examples(i):
            assert not any("\ufffd" in t for t in ex.tokens[1:-1]), ex.tokens  # the window may cut a character
            seen += any(t == "" for t in ex.tokens)
    assert seen  # some example did hold a byte-split character
    # saved results spell them without a tokenizer
    from workbench.analysis.features import FeatureResults

    back = FeatureResults.load(res.save(tmp_path / "res"))
    assert back.token_bytes == res.token_bytes
    i = res.alive().tolist()[0]
    assert [ex.tokens for ex in back.top_examples(i)] == [ex.tokens for ex in res.top_examples(i)]


def test_browser_order_lists_the_given_features_in_that_order(gallery_data):
    res, expl = gallery_data.results["topk-64"], gallery_data.explanations["topk-64"]
    alive = res.alive().tolist()
    default = FeatureBrowser(res, expl, page_size=4)
    assert default.sort_key == "density" and FeatureBrowser(res, expl, order=None).order == default.order
    given = alive[::-1][:7] + [int(i) for i in range(res.d_sae) if i not in alive][:1]  # a dead one may be asked for
    b = FeatureBrowser(res, expl, page_size=3, order=given)
    assert b.sort_key == "given" and b.order == given and b.visible == given[:3] and b.n_pages == 3
    assert b.next_page() == given[3:6] and b.go_to_page(9) == given[6:]
    by_density = b.sort_by("density")
    dens = [float(res.density[i]) for i in b.order]
    assert set(b.order) == set(given) and dens == sorted(dens, reverse=True) and by_density == b.order[:3]
    assert b.sort_by("given") == given[:3]
    ui = b.widget
    assert "given" in b._ui["sort"].options and b._ui["sort"].value == "given"
    text = expl[next(i for i in alive if i in expl)].explanation.text
    assert b.search(text.split('"')[1].strip() or text) and b.sort_key == "relevance"
    b.search("")  # cleared: back to the given order
    assert b.sort_key == "given" and b.order == given and ui is b.widget
    assert "given" not in FeatureBrowser(res, expl).widget.children[0].children[1].options
    with pytest.raises(ValueError, match="more than once"):
        FeatureBrowser(res, expl, order=[given[0], given[1], given[0]])
    with pytest.raises(ValueError, match="out of range"):
        FeatureBrowser(res, expl, order=[res.d_sae])
    with pytest.raises(ValueError, match="order is empty"):
        FeatureBrowser(res, expl, order=[])
    with pytest.raises(ValueError, match="unknown sort key 'given'"):
        default.sort_by("given")
