"""The DiffExplorer on a small crosscoder: the charts' data, selection by click, the side-by-side cards' fallback."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from widgets.diff_explorer import DiffExplorer, norm_histogram_figure, scaling_figure
from workbench.diffing.crosscoder import Crosscoder, CrosscoderConfig
from workbench.diffing.latent_scaling import latent_scaling


@pytest.fixture
def explorer():
    cc = Crosscoder(CrosscoderConfig("relu", 20, 12, d_models=(12, 8), a_only=2, b_only=2), seed=0)
    scaling = latent_scaling(cc, torch.randn(256, 20).split(64))
    return DiffExplorer(cc, scaling=scaling, names=("base", "tuned"))


def test_charts_hold_every_latent_once(explorer):
    hist = norm_histogram_figure(explorer.r)
    assert sum(hist.data[0].y) == 12
    scatter = scaling_figure(explorer.r.numpy(), np.zeros(12), explorer.kinds)
    shown = sorted(int(i) for trace in scatter.data for i in trace.customdata)
    assert shown == list(range(12))
    # the DFC's partition decides the kinds: 2 A-only (r = 0), 2 B-only (r = 1)
    assert list(explorer.kinds[:4]) == ["a_only", "a_only", "b_only", "b_only"]
    assert float(explorer.r[0]) == 0.0 and float(explorer.r[2]) == 1.0


def test_click_selects_and_steering_needs_models(explorer):
    explorer._on_click([{"curve": 0, "point": 1, "customdata": 5}])
    assert explorer.selected == 5
    html = explorer.to_html(include_plotlyjs=False)
    assert "latent 5" in html and "relative decoder norm" in html and "no results" in html
    assert explorer.own_side(2) == "b" and explorer.own_side(0) == "a"
    with pytest.raises(ValueError, match="needs models"):
        explorer.steer()
    with pytest.raises(ValueError, match="out of range"):
        explorer.select(12)


def test_html_links_plotly_once_and_the_display_has_a_static_fallback(explorer):
    from widgets.view import WIDGET_MIME

    html = explorer.to_html()  # two charts, one link to the library
    assert html.startswith('<div class="wb-diff">') and html.count("Plotly.newPlot") == 2
    assert len(re.findall(r"<script[^>]*\ssrc=", html)) == 1 and html.count("cdn.plot.ly") == 1
    scatter = scaling_figure(explorer.r.numpy(), np.zeros(12), explorer.kinds)
    assert {t.type for t in scatter.data} == {"scatter"}  # SVG points while few: a click lands on one anywhere
    rest = [f"{n} {k}" for k in ("shared", "mixed") if (n := int((explorer.kinds == k).sum()))]
    assert explorer.plain_text() == "DiffExplorer: 12 latents of base vs tuned (" + ", ".join(
        ["2 a_only", "2 b_only", *rest]) + ")"  # kinds without latents are left out
    explorer.select(3)
    bundle = explorer._repr_mimebundle_()
    assert WIDGET_MIME in bundle and "latent 3" in bundle["text/html"]
    assert not re.search(r"<script[^>]*\ssrc=", bundle["text/html"])
    assert bundle["text/plain"].endswith("latent 3 selected")
