"""The analysis bundle: built only when SAE, store and results belong together, and accepted in place of the loose
pieces by the scorer and the report with the same outcome."""
from __future__ import annotations

import copy

import pytest
import torch

from workbench.analysis.bundle import AnalysisBundle, unpack
from workbench.analysis.explain import explain_features, heldout_contexts, score_features


def test_bundle_refuses_another_sae(real_sae, small_store, real_results):
    other = copy.deepcopy(real_sae)
    with torch.no_grad():
        other.W_dec[0].mul_(1.5)
    with pytest.raises(ValueError, match="another SAE"):
        AnalysisBundle(other, small_store, real_results)


def test_bundle_refuses_another_width(real_sae, small_store, real_results):
    narrow = type("Cfg", (), {"d_sae": real_results.d_sae + 1})()
    with pytest.raises(ValueError, match="d_sae"):
        AnalysisBundle(type("S", (), {"cfg": narrow})(), small_store, real_results)


def test_bundle_refuses_another_store(real_sae, small_store, real_results, monkeypatch):
    class Elsewhere:
        path = small_store.path.parent / "another-store"
        manifest = {"created": "never"}
        hooks = small_store.hooks

    with pytest.raises(ValueError, match="computed on the store"):
        AnalysisBundle(real_sae, Elsewhere(), real_results)


def test_scoring_a_bundle_equals_scoring_the_pieces(real_sae, small_store, real_results):
    feats = real_results.alive()[:12].tolist()
    contexts = list(heldout_contexts(real_results, small_store))
    loose = score_features(explain_features(real_results, feats), small_store, real_sae, contexts,
                           results=real_results)
    bundle = AnalysisBundle(real_sae, small_store, real_results, explain_features(real_results, feats))
    bundled = score_features(bundle)  # default contexts: the ones the feature pass did not see
    assert sorted(loose.items) == sorted(bundled.items) == sorted(feats)
    for f in feats:
        a, b = loose.items[f].score, bundled.items[f].score
        assert a is not None and b is not None
        assert a.to_dict() == b.to_dict()


def test_scoring_a_bundle_without_explanations_names_the_fix(real_sae, small_store, real_results):
    with pytest.raises(ValueError, match="with_explanations"):
        score_features(AnalysisBundle(real_sae, small_store, real_results))


def test_unpack_fills_what_the_bundle_lacks(real_sae, small_store, real_results):
    bundle = AnalysisBundle(real_sae, small_store, real_results)
    parts = unpack(bundle, explanations="given", store=None)
    assert parts["results"] is real_results and parts["sae"] is real_sae and parts["store"] is small_store
    assert parts["explanations"] == "given"
    assert unpack(real_results, store=small_store) == {"results": real_results, "store": small_store}


def test_the_boundary_protocols_describe_the_real_objects(gemma, real_sae, small_store):
    from workbench.core.protocols import ModelLike, SAELike, StoreLike

    assert isinstance(gemma, ModelLike) and isinstance(real_sae, SAELike) and isinstance(small_store, StoreLike)
    assert not isinstance(small_store, SAELike) and not isinstance(real_sae, StoreLike)


def test_exporting_a_bundle_writes_the_same_files_as_the_pieces(real_sae, small_store, real_results, tmp_path):
    from workbench.report.export import export_neuronpedia

    feats = real_results.alive()[:6].tolist()
    expl = explain_features(real_results, feats)
    loose = export_neuronpedia(tmp_path / "loose", real_results, expl, model_id="m", features=feats)
    bundled = export_neuronpedia(tmp_path / "bundle", AnalysisBundle(real_sae, small_store, real_results, expl),
                                 model_id="m", features=feats)
    names = sorted(p.name for p in loose.iterdir())
    assert "explanations.json" in names and names == sorted(p.name for p in bundled.iterdir())
    for name in names:
        assert (loose / name).read_text() == (bundled / name).read_text(), name
