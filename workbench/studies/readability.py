"""How readable a trained dictionary is, computed once per SAE and cached beside its feature results: explanations
of every alive feature scored on held-out text (what ranks the report), and the interpretability scorecard
(features vs MLP neurons vs random directions), the concept-probing scorecard on the wiki's topic labels and the
features-vs-neurons correlation statistic. The demo and the whole-corpus profile both run these.

    expl = scored_explanations(results, sae, heldout_store, features_dir)
    card = cached_scorecard(results, store, sae, model, heldout_store, features_dir, ScorecardConfig(n_units=200))
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from workbench.core.protocols import ModelLike, SAELike, StoreLike
from workbench.analysis.concept_probing import KIND_NAMES, PROBING_JSON, ProbeConfig, ProbeScorecard, concept_probing
from workbench.analysis.explain import ExplanationSet, explain_features, score_features
from workbench.analysis.features import FeatureResults, sae_fingerprint
from workbench.analysis.scorecard import SCORECARD_JSON, Scorecard, ScorecardConfig, scorecard
from workbench.analysis.neurons import NeuronConfig, NeuronCorrelations, default_neuron_layers, neuron_correlations
from workbench.core.cache import cached
from workbench.core.hardware import torch_threads
from workbench.data.hooks import sae_hook
from workbench.sae.model import SAE

__all__ = ["cached_concept_probing", "cached_explanations", "cached_neuron_correlations", "cached_scorecard",
           "probing_section", "scored_explanations"]

EXPLANATIONS_JSON = "explanations.json"


def _heldout_identity(store: StoreLike) -> dict:
    return {"path": str(Path(store.path).resolve()), "created": store.manifest.get("created"),
            "n_contexts": int(store.n_contexts)}


def cached_explanations(path: str | Path, key: dict, compute) -> ExplanationSet:
    """The explanations saved at ``path`` under ``key`` (the SAE's fingerprint, what they were scored on...), or
    ``compute()`` saved there (:func:`workbench.core.cache.cached`)."""
    return cached(path, key, compute, load=ExplanationSet.load, save=lambda e, p: e.save(p))


def scored_explanations(results: FeatureResults, sae: SAELike, heldout, folder: str | Path, *, threads: int | None = 1,
                        progress: bool = False) -> ExplanationSet:
    """Offline explanations of every alive feature of ``results``, each scored on all contexts of the store
    ``heldout`` (text the SAE and the explainer never saw), saved as ``folder/explanations.json`` and reused while
    the SAE and the held-out store are the same. ``threads``: torch threads for the scoring (one is fastest for its
    many small ops on a busy machine)."""
    key = {"sae_fingerprint": sae_fingerprint(sae), "scored_on": _heldout_identity(heldout)}

    def compute() -> ExplanationSet:
        expl = explain_features(results, progress=progress)
        with torch_threads(threads):
            score_features(expl, heldout, sae, range(heldout.n_contexts), results=results, progress=progress)
        expl.meta.update(key)
        return expl

    return cached_explanations(Path(folder) / EXPLANATIONS_JSON, key, compute)


def cached_scorecard(results: FeatureResults, store: StoreLike, sae: SAELike, model: ModelLike, heldout,
                     folder: str | Path,
                     config: ScorecardConfig | None = None) -> Scorecard:
    """The :func:`~workbench.analysis.scorecard.scorecard` of ``sae``, saved in ``folder/scorecard.json`` and
    reused while the SAE, the held-out store and the settings are the same."""
    cfg = config or ScorecardConfig()
    key = {"sae_fingerprint": sae_fingerprint(sae), "config": cfg.to_dict(),
           "heldout_identity": _heldout_identity(heldout)}

    def compute() -> Scorecard:
        card = scorecard(results, store, sae, model, heldout=heldout, config=cfg)
        card.meta["heldout_identity"] = key["heldout_identity"]
        return card

    return cached(Path(folder) / SCORECARD_JSON, key, compute, load=Scorecard.load, save=lambda c, p: c.save(p))


def cached_concept_probing(model: ModelLike, sae: SAELike, folder: str | Path,
                           config: ProbeConfig | None = None) -> ProbeScorecard:
    """The concept-probing scorecard of ``sae`` (topic probes on the embedded wiki, docs/methods.md §20), saved in
    ``folder/concept_probing.json`` and reused while the SAE and the settings are the same."""
    cfg = config or ProbeConfig()
    key = {"sae_fingerprint": sae_fingerprint(sae), "config": asdict(cfg)}  # cached() compares keys after a JSON round trip
    return cached(Path(folder) / PROBING_JSON, key, lambda: concept_probing(model, sae, cfg),
                  load=ProbeScorecard.load, save=lambda c, p: c.save(p.parent))


def cached_neuron_correlations(model: ModelLike, sae: SAE, heldout: StoreLike, folder: str | Path, n_contexts: int = 64
                               ) -> NeuronCorrelations:
    """Each feature's best |Pearson r| with any neuron of the MLP just before the SAE's hook, over the first
    ``n_contexts`` contexts of the held-out store (the paper's features-vs-neurons statistic, docs/methods.md §20),
    saved under ``folder/neurons`` and reused while the SAE and the held-out store are the same."""
    layers = default_neuron_layers(sae_hook(sae))[-1:]  # the preceding MLP
    key = {"sae_fingerprint": sae_fingerprint(sae), "heldout": _heldout_identity(heldout), "layers": layers,
           "n_contexts": int(n_contexts)}

    def compute() -> NeuronCorrelations:
        return neuron_correlations(model, sae, heldout, range(min(n_contexts, heldout.n_contexts)),
                                   config=NeuronConfig(layers=layers, absolute=True, progress=False))

    return cached(Path(folder) / "neurons", key, compute, load=NeuronCorrelations.load, save=lambda c, p: c.save(p))


def probing_section(probing: ProbeScorecard, neurons: NeuronCorrelations) -> dict:
    """The report's concept-probing table (``write_report(probing=...)``), with the features-vs-neurons statistic
    in its note."""
    s = probing.summary()
    note = (f"{s['note']}. Chance is 0.5. Features vs neurons: {neurons.fraction_below():.0%} of "
            f"{neurons.summary()['n_defined']} features have a best |r| <= 0.3 with any neuron of the preceding "
            f"MLP over {neurons.n_tokens} held-out tokens (Scaling Monosemanticity: 82%).")
    return {"rows": [{"setting": r["setting"], "k": r["k"], **{name: round(r[kind], 3) for kind, name in
                                                                KIND_NAMES.items()}} for r in s["rows"]],
            "note": note}
