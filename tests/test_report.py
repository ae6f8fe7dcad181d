"""The HTML report: one self-contained file with the metrics table, the density histogram and feature cards."""
from __future__ import annotations

import html.parser

import pytest
import torch

from workbench.sae.evaluate import evaluate_activations
from workbench.analysis.explain import explain_features, heldout_contexts, score_features
from workbench.report.page import metrics_rows, pick_features, write_report


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
    f1 = [expl[i].score.f1 if i in expl and expl[i].score.n_firing else -1.0 for i in feats]
    assert f1 == sorted(f1, reverse=True)

    path = write_report(tmp_path / "sub" / "report.html", real_results, metrics, expl, n_features=5, title="Tiny <SAE>")
    text = path.read_text(encoding="utf-8")
    p = _Tags()
    p.feed(text)
    p.close()
    assert p.stack == [] and text.startswith("<!DOCTYPE html>")
    assert "<title>Tiny &lt;SAE&gt;</title>" in text
    assert "explained_variance" in text and "dead_fraction" in text and "log10 density" in text
    assert all(f"Feature {i}</h3>" in text for i in feats)
    assert text.count("Plotly.newPlot") == 1 + len(feats)  # density + one histogram per card
    assert p.count["script"] >= 2 and "<script src=" not in text  # JS inlined, no CDN link
    assert text.count("plotly.js v") <= 2  # inlined once (its banner)
    with pytest.raises(ValueError, match=".html"):
        write_report(tmp_path / "report.txt", real_results, metrics)
