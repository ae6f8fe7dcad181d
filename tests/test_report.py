"""The HTML report: one self-contained file with the metrics table, the density histogram, the scorecard and the
feature cards of the most readable features.

Ranking and special-token skipping run on a planted toy (an identity SAE over a store whose features fire on known
tokens, among them BOS and a newline), with hand-set held-out scores; the full report on the real small store.
"""
from __future__ import annotations

import html.parser
import re

import numpy as np
import pytest
import torch

from helpers import identity_sae, write_store
from workbench.analysis.explain import (ExplainedUnit, Explanation, ExplanationScore, ExplanationSet, explain_features,
                                        heldout_contexts, score_features)
from workbench.analysis.features import FeatureConfig, compute_features
from workbench.analysis.scorecard import Scorecard, UnitScores
from workbench.report.card import HIST_WIDTH, StaticFeatureCard
from workbench.report.html import STYLE
from workbench.analysis.reading_order import ReadingOrderConfig, reading_order
from workbench.report.page import (metrics_rows, pick_features, probing_html, rank_features, scorecard_html,
                                   write_report)
from workbench.sae.evaluate import evaluate_activations


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.count = [], {}

    def handle_starttag(self, tag, attrs):
        self.count[tag] = self.count.get(tag, 0) + 1
        if tag not in ("meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()


def _section(text: str, heading: str, until: str | None = None) -> str:
    """The HTML from ``<h2>heading</h2>`` to the next ``<h2>until</h2>`` (or the end)."""
    start = text.index(f"<h2>{heading}</h2>")
    return text[start: text.index(f"<h2>{until}</h2>", start) if until else len(text)]


def _shown(fragment: str) -> list[int]:
    return [int(i) for i in re.findall(r"<h3>Feature (\d+)</h3>", fragment)]


def test_metrics_rows_flatten_scalars():
    rows = metrics_rows({"fvu": 0.2, "l0": 16.0, "hist": {"bin_edges": [1], "counts": [2]}, "down": {"kl": 0.1},
                         "density": torch.zeros(3)})
    assert rows == [("fvu", 0.2), ("l0", 16.0), ("down.kl", 0.1)]


@pytest.mark.slow
def test_write_report(tmp_path, real_results, real_sae, small_store):
    metrics = evaluate_activations(real_sae, small_store.iter_batches(4096, shuffle=False, exclude_bos=True),
                                   max_tokens=4096).to_dict()
    expl = explain_features(real_results, real_results.alive()[:30].tolist())
    score_features(expl, small_store, real_sae, list(heldout_contexts(real_results, small_store))[:16],
                   results=real_results)
    feats = pick_features(real_results, expl, n=5)
    assert len(feats) == 5 and all(float(real_results.density[i]) <= 0.01 for i in feats)
    f1 = [expl[i].score.f1 if i in expl and expl[i].score.n_firing >= 5 else -1.0 for i in feats]
    assert f1 == sorted(f1, reverse=True)

    path = write_report(tmp_path / "sub" / "report.html", real_results, metrics, expl, n_features=5, title="Tiny <SAE>",
                        store=small_store, n_sample=3)
    text = path.read_text(encoding="utf-8")
    p = _Tags()
    p.feed(text)
    p.close()
    assert p.stack == [] and text.startswith("<!DOCTYPE html>")
    assert "<title>Tiny &lt;SAE&gt;</title>" in text
    assert "explained_variance" in text and "dead_fraction" in text and "log10 density" in text
    order = reading_order(real_results, store=small_store, config=ReadingOrderConfig(sample_size=3))
    lead = _section(text, "Features that carry a concept", "Detectors")
    assert _shown(lead) == order.lead[:5] and not set(order.lead[:5]) & set(order.detectors.features())
    assert _shown(_section(text, "A random sample of features")) == order.sample
    assert text.count("Plotly.newPlot") == 1 + len(_shown(text))  # density + one histogram per card
    assert p.count["script"] >= 2 and "<script src=" not in text  # JS inlined, no CDN link
    assert text.count("plotly.js v") <= 2  # inlined once (its banner)
    with pytest.raises(ValueError, match=".html"):
        write_report(tmp_path / "report.txt", real_results, metrics)


# ----------------------------------------------------------------------------------------------------------------
# Ranking, special-token skipping and the scorecard section, on a planted toy
# ----------------------------------------------------------------------------------------------------------------

BOS, NL = 2, 3
PLANTED = {0: 7, 1: 8, 2: BOS, 3: NL, 4: 9}  # feature -> the token it fires on; feature 5 is dead


class _Tokenizer:
    all_special_ids = [0, 1, BOS]

    def batch_decode(self, seqs):
        names = {0: "<pad>", 1: "<eos>", BOS: "<bos>", NL: "\n"}
        return ["".join(names.get(int(i), f" w{int(i)}") for i in s) for s in seqs]


@pytest.fixture(scope="module")
def planted_results(tmp_path_factory):
    rng = np.random.default_rng(1)
    n_ctx, ctx = 24, 24
    tokens = rng.integers(10, 40, size=(n_ctx, ctx)).astype(np.int64)
    for tok in PLANTED.values():
        tokens[rng.random(tokens.shape) < 0.06] = tok
    tokens[:, 0] = BOS
    acts = np.full((n_ctx, ctx, 6), -1.0, dtype=np.float32)
    for f, tok in PLANTED.items():
        acts[..., f] = np.where(tokens == tok, 1.0 + f, -1.0)
    root = tmp_path_factory.mktemp("report-planted")
    store = write_store(root / "store", acts, tokens, shard_contexts=8)
    return compute_features(store, identity_sae(6), root / "features", FeatureConfig(progress=False),
                            tokenizer=_Tokenizer())


def _scored(f1_and_firing: dict[int, tuple[float, int]]) -> ExplanationSet:
    def score(f1: float, n: int) -> ExplanationScore:
        return ExplanationScore(precision=f1, recall=f1, f1=f1, n_tokens=100, n_firing=n, n_predicted=n,
                                n_true_positive=int(f1 * n), false_positive_rate=0.0, bucket_edges=[0.0, 1.0],
                                bucket_counts=[n], bucket_predicted=[n])

    return ExplanationSet({i: ExplainedUnit(Explanation(f"feature {i}", [(PLANTED[i],)]), score(f1, n))
                           for i, (f1, n) in f1_and_firing.items()})


def test_features_rank_by_heldout_f1_and_special_token_detectors_are_skipped(planted_results):
    res = planted_results
    expl = _scored({0: (0.5, 20), 1: (0.9, 20), 2: (1.0, 20), 4: (0.99, 3)})
    rk = rank_features(res, expl, n=10, max_density=1.0)
    # 2 (BOS) and 3 (newline) are special-token detectors; 4's F1 rests on 3 held-out tokens: after the scored ones
    assert rk.features == [1, 0, 4]
    assert rk.special == [2, 3] and rk.n_special_alive == 2 and rk.n_alive == 5 and rk.n_candidates == 5
    assert rk.n_scored == 2
    assert pick_features(res, expl, n=2, max_density=1.0) == [1, 0]
    assert rank_features(res, expl, n=10, max_density=1.0, skip_special=False).features == [2, 1, 0, 4, 3]
    assert rank_features(res, expl, n=10, max_density=1.0, min_heldout_firing=1).features == [4, 1, 0]
    # without scores: by max activation (feature f peaks at 1 + f)
    assert rank_features(res, None, n=10, max_density=1.0).features == [4, 1, 0]
    # a precomputed special-token mask replaces the detection
    none = torch.zeros(res.d_sae, dtype=torch.bool)
    assert rank_features(res, expl, n=10, max_density=1.0, special=none).features == [2, 1, 0, 4, 3]


def _toy_scorecard() -> Scorecard:
    def kind(name: str, f1: list[float | None]) -> UnitScores:
        n = len(f1)
        return UnitScores(name, list(range(n)), [f"{name[0]}{i}" for i in range(n)], ["x"] * n, [0.01] * n,
                          [0.0] * n, [0 if f is None else 10 for f in f1], f1, f1, f1)

    special = {"n_alive_features": 5, "n_alive": 2, "fraction_alive": 0.4, "n_sample": 1, "fraction_sample": 0.25,
               "features": [2, 3]}
    langs = {"languages": ["en", "es"], "min_languages": 2, "token_share": {"en": 0.5, "es": 0.5},
             "fraction_alive": 0.6, "fraction_sample": 0.5}
    return Scorecard({"features": kind("features", [0.8, 0.6, 0.7, None]), "neurons": kind("neurons", [0.2, 0.3, 0.1]),
                      "random": kind("random", [0.05, 0.0, 0.1])}, special, langs,
                     {"explainer": "tokens", "n_train_tokens": 1000, "n_train_contexts": 8, "heldout": "toy <store>",
                      "n_heldout_tokens": 500, "neuron_layers": [9]})


def test_report_shows_the_scorecard_and_the_detectors(planted_results, tmp_path):
    res = planted_results
    expl = _scored({0: (0.5, 20), 1: (0.9, 20), 2: (1.0, 20)})
    card = _toy_scorecard()
    frag = scorecard_html(card)
    assert "SAE features" in frag and "MLP neurons" in frag and "random directions" in frag
    assert "<td>0.700</td>" in frag and "<td>0.200</td>" in frag and "<td>0.050</td>" in frag  # the medians
    assert "40.0%" in frag and "60.0%" in frag and "toy &lt;store&gt;" in frag
    path = write_report(tmp_path / "r.html", res, {"fvu": 0.1}, expl, n_features=3, max_density=1.0,
                        scorecard=card.save(tmp_path))
    text = path.read_text(encoding="utf-8")
    p = _Tags()
    p.feed(text)
    p.close()
    assert p.stack == []
    assert "Explainer F1 (token predictability)" in text and "<td>0.700</td>" in text
    # every planted feature fires on one token: all are detectors, none leads; the sample still shows cards
    det = _section(text, "Detectors", "A random sample of features")
    assert "<td>special</td><td>1</td>" in det and "<td>whitespace</td><td>1</td>" in det
    assert "<td>token</td><td>3</td>" in det and "5 of 5 alive features (100.0%)" in det
    assert _shown(_section(text, "Features that carry a concept", "Detectors")) == []
    sample = _shown(_section(text, "A random sample of features"))
    assert sample == sorted(sample) and set(sample) <= {0, 1, 2, 3, 4} and len(sample) == 5
    assert text.count("Plotly.newPlot") == 2 + len(sample)  # density, scorecard, one histogram per card
    without = write_report(tmp_path / "plain.html", res, {}, None, max_density=1.0).read_text(encoding="utf-8")
    assert "Explainer F1" not in without and "Concept probing" not in without


def test_report_sections_come_in_reading_order(tmp_path):
    """On hand-built results with known detectors (tests/test_reading_order.py): metrics, probing, scorecard,
    the lead (no detector in it), the detectors, the random sample; the probing rows render generically."""
    from test_reading_order import CONCEPT, ENGLISH, build_results

    res, store = build_results(logits={CONCEPT: [100, 200, 999], ENGLISH: [998, 997]})
    probing = {"rows": [{"setting": "en", "k": 1, "features": 0.83, "neurons": 0.79, "random": 0.61},
                        {"setting": "all", "k": 4, "features": 0.9, "pca": 0.78, "extra": "x<y"}],
               "note": "held-out topic probes <k features>"}
    path = write_report(tmp_path / "r.html", res, {"fvu": 0.1}, None, n_features=5, max_density=0.5,
                        scorecard=_toy_scorecard(), probing=probing, store=store, n_sample=4)
    text = path.read_text(encoding="utf-8")
    p = _Tags()
    p.feed(text)
    p.close()
    assert p.stack == []
    heads = re.findall(r"<h2>([^<]+)</h2>", text)
    assert heads == ["SAE metrics", "Feature density", "Concept probing", "Explainer F1 (token predictability)",
                     "Features that carry a concept", "Detectors", "A random sample of features"]
    order = reading_order(res, store=store, config=ReadingOrderConfig(max_density=0.5, sample_size=4))
    lead = _section(text, "Features that carry a concept", "Detectors")
    assert _shown(lead) == order.lead == [CONCEPT, ENGLISH]
    assert "3 language(s)" in lead and "20 distinct tokens" in lead and "reads/writes agreement 0.67" in lead
    det = _section(text, "Detectors", "A random sample of features")
    assert _shown(det) == [] and "7 of 10 alive features" in det
    for i in order.detectors.features():
        assert f"<tr><td>{i}</td><td>{order.detectors.kinds[i]}</td>" in det
    assert _shown(_section(text, "A random sample of features")) == order.sample
    table = _section(text, "Concept probing", "Explainer F1 (token predictability)")
    assert "<th>setting</th><th>k</th><th>features</th><th>neurons</th><th>random</th><th>pca</th><th>extra</th>" \
        in table
    assert "<td>0.830</td>" in table and "<td>x&lt;y</td>" in table and "<k features>" not in table
    assert probing_html({"rows": []}).startswith("<p>no probing rows")
    with pytest.raises(ValueError, match="rows"):
        probing_html({"table": []})
    # chosen features replace the lead; the detector list and the sample stay
    chosen = write_report(tmp_path / "c.html", res, {}, features=[CONCEPT], max_density=0.5).read_text("utf-8")
    assert _shown(_section(chosen, "Features that carry a concept", "Detectors")) == [CONCEPT]


def test_card_histogram_has_a_fixed_width_box_beside_the_logit_table(planted_results):
    """The layout bug: a histogram drawn before the table after it was parsed came out as wide as the whole row and
    covered the table. Its box and the figure now have the same fixed width, and the table has its own column."""
    html_ = StaticFeatureCard.from_results(planted_results, 0).to_html(include_plotlyjs=False)
    box = re.search(r'<div class="wb-fig" style="width:(\d+)px">', html_)
    assert box and int(box.group(1)) == HIST_WIDTH
    assert f'"width":{HIST_WIDTH}' in html_.replace(" ", "")  # plotly draws at that width, whatever the box measures
    assert ".wb-fig{flex:0 0 auto;max-width:100%;overflow:hidden}" in STYLE  # and the box never lets it spill
    assert html_.index('class="wb-fig"') < html_.index('class="wb-side"') < html_.index("top examples")


def test_neuronpedia_export_loads_with_saedashboard(planted_results, tmp_path):
    import json

    from workbench.report.export import export_neuronpedia, hook_layer_index

    expl = _scored({0: (0.5, 20), 1: (0.9, 20)})
    out = export_neuronpedia(tmp_path / "np", planted_results, expl, model_id="planted-model", sae_set="toy",
                             features_per_batch=2)
    man = json.loads((out / "manifest.json").read_text())
    alive = planted_results.alive().tolist()
    assert man["n_features"] == len(alive) and len(man["batches"]) == -(-len(alive) // 2)
    assert man["layer"] == hook_layer_index(planted_results.meta["hook"]) == 0
    batch = json.loads((out / "batch-0.json").read_text())
    f = batch["features"][0]
    rep = planted_results.feature(f["feature_index"])
    assert f["frac_nonzero"] == pytest.approx(rep.density)
    assert f["freq_hist_data_bar_heights"] == [float(c) for c in rep.histogram.counts]
    top = f["activations"][0]
    assert top["tokens"] == rep.top[0].tokens and top["qualifying_token_index"] == rep.top[0].index
    assert max(top["values"]) == pytest.approx(rep.top[0].activation, abs=1e-3)
    records = json.loads((out / "explanations.json").read_text())
    assert [(r["index"], r["description"]) for r in records] == [("0", "feature 0"), ("1", "feature 1")]
    assert records[1]["scores"] == [{"method": "heldout_f1", "value": 0.9}]
    npd = pytest.importorskip("sae_dashboard.neuronpedia.neuronpedia_dashboard",
                              reason="SAEDashboard's reader (pip install --no-deps sae-dashboard) is not installed")
    loaded = npd.NeuronpediaDashboardBatch(**batch)
    assert loaded.model_id == "planted-model" and loaded.sae_set == "toy"
    assert [x.feature_index for x in loaded.features] == [x["feature_index"] for x in batch["features"]]
    assert loaded.features[0].activations[0].tokens == rep.top[0].tokens
    assert loaded.to_dict()["features"][0] == batch["features"][0]  # their writer gives back what we wrote


def test_result_objects_show_compact_offline_html(planted_results):
    """What a notebook cell ending with a result shows: a small table with the real values, no scripts."""
    from html import escape
    from pathlib import Path

    from workbench.sae.train import RunResult, TrainResult

    res = planted_results
    page = res._repr_html_()
    assert f"{int(res.alive().numel())} of {res.d_sae} features alive" in page
    strongest = int(res.alive()[torch.argmax(res.max_activation[res.alive()])])
    assert f"<td style='padding:2px 8px'>{strongest}</td>" in page

    expl = explain_features(res, res.alive().tolist())
    html_ = expl._repr_html_()
    assert f"ExplanationSet({len(expl)} explanations, 0 scored)" in html_
    assert all(escape(u.explanation.text) in html_ for u in expl.items.values())

    card_html = _toy_scorecard()._repr_html_()
    assert "median F1" in card_html and "<script" not in card_html + page + html_

    run = RunResult("topk-8", sae=None, path=Path("runs/x"), metrics={"explained_variance": 0.91, "l0": 8.0,
                                                                      "dead_fraction": 0.0})
    tr = TrainResult({"topk-8": run}, input_scale=1.0, tokens=4096, steps=4, dead_window_tokens=0, tokens_per_s=1e3)
    assert repr(tr) == "TrainResult(1 SAE(s): topk-8; 4,096 tokens, 4 steps)"
    assert "0.91" in tr._repr_html_() and "Linear" not in tr._repr_html_()
