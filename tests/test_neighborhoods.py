"""Tests for workbench.analysis.neighborhoods and widgets.neighborhood_map on planted directions with a known answer.

Two ReLU SAEs whose decoder rows are noisy copies of 12 planted concept directions (5 copies each in "A", 10 in
"B", plus a zero row in "A"): nearest neighbours, the exact kNN graph, the UMAP + HDBSCAN clusters (they must
recover the concepts), the cache, cluster labels, and the map widget (search, select, zoom, colouring).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import PLANT_HOOK, write_store
from workbench.analysis import neighborhoods as NB
from workbench.analysis.explain import Explanation
from workbench.analysis.features import FeatureConfig, compute_features
from workbench.analysis.neighborhoods import (
    FeatureLayout,
    LayoutConfig,
    cosine_matrix,
    joint_layout,
    knn_graph,
    label_clusters,
    nearest_neighbors,
    unit_directions,
)
from workbench.sae.model import SAE, SAEConfig, SAEMetadata
from widgets.neighborhood_map import NeighborhoodMap

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, N_CONCEPTS = 24, 12
COPIES = {"A": 5, "B": 10}


def planted() -> tuple[dict[str, SAE], dict[str, np.ndarray]]:
    """SAEs "A" and "B" (rows = concept + noise) and each row's concept (-1 for A's zero row, its last)."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(N_CONCEPTS, D, generator=gen)
    saes, concept = {}, {}
    for name, copies in COPIES.items():
        c = torch.arange(N_CONCEPTS).repeat_interleave(copies)
        rows = centres[c] + 0.25 * torch.randn(c.numel(), D, generator=gen)
        if name == "A":
            rows = torch.cat([rows, torch.zeros(1, D)])
            c = torch.cat([c, torch.tensor([-1])])
        sae = SAE(SAEConfig("relu", D, rows.shape[0], apply_b_dec_to_input=False),
                  SAEMetadata(model_name="planted", hook_name=PLANT_HOOK))
        with torch.no_grad():
            sae.W_dec.copy_(rows)
            sae.W_enc.copy_(rows.T)
            sae.b_enc.fill_(-2.0)
            sae.b_dec.zero_()
        saes[name], concept[name] = sae.eval(), c.numpy()
    return saes, concept


def planted_explanations(concept: dict[str, np.ndarray]) -> dict[str, dict[int, Explanation]]:
    return {name: {f: Explanation(f'fires on " word{c}"', [(100 + int(c),)], meta={"pattern_strings": [f" word{c}"]})
                   for f, c in enumerate(cs) if c >= 0} for name, cs in concept.items()}


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    saes, concept = planted()
    cache = tmp_path_factory.mktemp("layouts")
    layout = joint_layout(saes, config=LayoutConfig(progress=False), cache_dir=cache)
    return saes, concept, layout, cache


# ----------------------------------------------------------------------------------------------------------------
# Directions, cosines, neighbours
# ----------------------------------------------------------------------------------------------------------------


def test_unit_directions_and_cosines():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    u = unit_directions(w)
    assert torch.allclose(u, torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]]))
    cos = cosine_matrix(w, torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(cos.squeeze(1), torch.tensor([0.6, 0.0, 0.0]))
    with pytest.raises(ValueError, match="d_model mismatch"):
        cosine_matrix(w, torch.ones(2, 3))
    with pytest.raises(ValueError, match="matrix of directions"):
        unit_directions(torch.ones(3))


def test_knn_graph_is_exact():
    x = unit_directions(torch.randn(57, 8, generator=torch.Generator().manual_seed(3)))
    idx, cos = knn_graph(x, 6, chunk=10)
    full = x @ x.T
    full.fill_diagonal_(2.0)
    ref = full.topk(6, dim=1)
    assert torch.equal(idx, ref.indices) and torch.equal(idx[:, 0], torch.arange(57))
    assert torch.allclose(cos[:, 1:], ref.values[:, 1:]) and torch.allclose(cos[:, 0], torch.ones(57))
    with pytest.raises(ValueError, match="neighbours"):
        knn_graph(x, 58)


def test_nearest_neighbours_within_and_across_saes():
    saes, concept = planted()
    f = 7  # concept 1 in A
    found = nearest_neighbors(saes, "A", f, k=12)
    ref = []
    for name, sae in saes.items():
        cos = cosine_matrix(saes["A"].W_dec[f:f + 1], sae)[0]
        ref += [(float(c), name, j) for j, c in enumerate(cos.tolist()) if not (name == "A" and j == f)]
    ref.sort(reverse=True)
    assert [(n.sae, n.feature) for n in found] == [(name, j) for _, name, j in ref[:12]]
    assert {concept[n.sae][n.feature] for n in found} == {concept["A"][f]}  # all copies of its concept
    per = nearest_neighbors(saes, "A", f, k=3, per_sae=True)
    assert [n.sae for n in per] == ["A"] * 3 + ["B"] * 3
    only_b = nearest_neighbors(saes, "A", f, k=20, among=["B"])
    assert all(n.sae == "B" for n in only_b) and len(only_b) == 20
    assert all(n.feature != COPIES["A"] * N_CONCEPTS for n in nearest_neighbors(saes, "B", 0, k=70, among=["A"]))
    with pytest.raises(ValueError, match="out of range"):
        nearest_neighbors(saes, "A", 61)
    with pytest.raises(ValueError, match="unknown SAE"):
        nearest_neighbors(saes, "C", 0)


# ----------------------------------------------------------------------------------------------------------------
# The joint layout
# ----------------------------------------------------------------------------------------------------------------


def test_joint_layout_recovers_the_planted_concepts(mapped):
    saes, concept, layout, _ = mapped
    from sklearn.metrics import adjusted_rand_score

    assert layout.sae_names == ["A", "B"] and len(layout) == 60 + 120  # A's zero row is left out
    truth = np.array([concept[layout.label(p)[0]][layout.label(p)[1]] for p in range(len(layout))])
    assert (truth >= 0).all()
    assert layout.config["min_dist"] == 0.01 and layout.config["n_neighbors"] == 15  # joint map, docs/methods.md §6
    assert adjusted_rand_score(truth, layout.cluster) > 0.9
    # on the 2-d map, every point is nearer its concept's centroid than any other concept's
    cents = np.stack([layout.xy[truth == c].mean(0) for c in range(N_CONCEPTS)])
    nearest = np.linalg.norm(layout.xy[:, None] - cents[None], axis=2).argmin(1)
    assert (nearest == truth).mean() > 0.95
    # the stored graph gives the exact decoder-cosine neighbours
    got = layout.neighbors("B", 0, 5)
    ref = nearest_neighbors(saes, "B", 0, k=5)
    assert [(n.sae, n.feature) for n in got] == [(n.sae, n.feature) for n in ref]


def test_layout_is_cached_by_weights_and_settings(mapped, monkeypatch):
    saes, _, layout, cache = mapped
    assert (cache / f"layout-{layout.key}.npz").is_file() and (cache / f"layout-{layout.key}.json").is_file()

    def no_umap(*args, **kwargs):
        raise AssertionError("laid out again instead of loading the cache")

    monkeypatch.setattr(NB, "_umap", no_umap)
    again = joint_layout(saes, config=LayoutConfig(progress=False), cache_dir=cache)
    assert again.key == layout.key and np.array_equal(again.xy, layout.xy)
    assert np.array_equal(again.cluster, layout.cluster)
    with pytest.raises(AssertionError, match="laid out again"):
        joint_layout(saes, config=LayoutConfig(progress=False, min_cluster_size=4), cache_dir=cache)
    changed = {"A": saes["A"], "B": saes["B"].W_dec.detach() * torch.linspace(1, 2, 120)[:, None] + 0.01}
    with pytest.raises(AssertionError, match="laid out again"):
        joint_layout(changed, config=LayoutConfig(progress=False), cache_dir=cache)
    with pytest.raises(AssertionError, match="laid out again"):
        joint_layout(saes, {"A": range(10)}, config=LayoutConfig(progress=False), cache_dir=cache)


def test_layout_save_load_and_errors(mapped, tmp_path):
    saes, _, layout, _ = mapped
    path = layout.save(tmp_path)
    back = FeatureLayout.load(path)
    assert back.sae_names == layout.sae_names and np.array_equal(back.knn, layout.knn)
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="corrupt"):
        FeatureLayout.load(path)
    with pytest.raises(ValueError, match="not on the map"):
        layout.point("A", 60)  # the zero row
    with pytest.raises(ValueError, match="d_model mismatch"):
        joint_layout({"A": saes["A"], "C": torch.randn(5, D + 1)})
    with pytest.raises(ValueError, match="outside"):
        joint_layout(saes, {"A": [0, 99]})
    with pytest.raises(ValueError, match="metric"):
        LayoutConfig(metric="euclidean")


def test_cluster_labels_name_the_members_concept(mapped):
    _, concept, layout, _ = mapped
    expl = planted_explanations(concept)
    labels = label_clusters(layout, explanations=expl)
    assert set(labels) == set(layout.cluster_sizes())
    for c, text in labels.items():
        members = layout.members(c)
        majority = np.bincount([concept[s][f] for s, f in members]).argmax()
        assert text.startswith(f'"word{majority}" (')  # terms are stripped and lower-cased
    assert layout.cluster_labels == labels
    with pytest.raises(ValueError, match="explanations"):
        label_clusters(layout)


# ----------------------------------------------------------------------------------------------------------------
# The map widget
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def b_results(tmp_path_factory):
    """The analysis pass of SAE "B" over a small random store."""
    saes, _ = planted()
    rng = np.random.default_rng(0)
    acts = rng.standard_normal((8, 17, D)).astype(np.float32)
    tokens = rng.integers(2, 60, size=(8, 17)).astype(np.int64)
    store = write_store(tmp_path_factory.mktemp("nb-store"), acts, tokens)
    return compute_features(store, saes["B"], None, FeatureConfig(top_k=4, n_buckets=2, per_bucket=1,
                                                                 progress=False), tokenizer=False)


def test_map_search_select_zoom_and_colouring(mapped, b_results):
    saes, concept, layout, _ = mapped
    expl = planted_explanations(concept)
    m = NeighborhoodMap(layout, {"B": b_results}, expl)
    fig = m.figure()
    assert [t.name for t in fig.data] == ["A (60)", "B (120)"]
    hover = fig.data[1].text[0]
    assert "B F0" in hover and "word0" in hover

    hits = m.search("word3")
    assert sorted(hits) == sorted((s, f) for s in "AB" for f, c in enumerate(concept[s]) if c == 3)
    assert m.figure().data[-1].name == f"search: word3 ({len(hits)})"
    assert m.search("") == [] and len(m.figure().data) == 2

    card = m.select("B", 13)
    assert card.report.index == 13 and m.selected == layout.point("B", 13)
    assert "Feature 13" in m.to_html(include_plotlyjs=False)
    with pytest.raises(ValueError, match="no FeatureResults"):
        m.select("A", 0)

    nbrs = m.zoom_to("A", 7, k=6)
    assert [(n.sae, n.feature) for n in nbrs] == [(n.sae, n.feature) for n in nearest_neighbors(saes, "A", 7, k=6)]
    fig = m.figure()
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    for n in nbrs + [NB.Neighbor("A", 7, 1.0)]:
        x, y = layout.xy[layout.point(n.sae, n.feature)]
        assert x0 <= x <= x1 and y0 <= y <= y1
    m.reset_zoom()
    assert m.figure().layout.xaxis.range is None

    dens = m.colour_by("density").data[0].marker.color
    pts = [layout.point("B", f) for f in range(120)]
    assert np.allclose(np.asarray(dens)[pts], np.log10(np.maximum(b_results.density.numpy(), 1e-9)))
    clusters = m.colour_by("cluster").data[0].marker.color
    assert len(set(clusters)) == min(layout.n_clusters, 16) + (1 if (layout.cluster < 0).any() else 0)
    with pytest.raises(ValueError, match="colouring"):
        m.colour_by("size")
    assert m.widget is not None
    m.search("word5")  # with the widget built, the view follows the state
    assert m._ui["search"].value == "word5" and "word5" in m._ui["info"].value


def test_a_click_on_the_map_opens_the_feature_card(mapped, b_results):
    from widgets.plot import PlotWidget

    _, _, layout, _ = mapped
    m = NeighborhoodMap(layout, {"B": b_results})
    m.widget
    (fw,) = m._ui["plot"].children
    assert isinstance(fw, PlotWidget)  # one light chart for the map's lifetime (plotly.js once per page)
    fig = m.figure()
    p = int(fig.data[1].customdata[4])
    fw.click([{"curve": 1, "point": 4, "customdata": p}])  # what the browser sends on a click on B's 5th point
    assert m.selected == p and m.card.report.index == layout.label(p)[1]
    assert m._ui["card"].children == (m.card.widget,)
    assert m._ui["figure"] is fw  # redrawn in place, not replaced
    fw.click([{"curve": 0, "point": 0, "customdata": int(fig.data[0].customdata[0])}])  # SAE "A": no results
    assert m.selected == p
