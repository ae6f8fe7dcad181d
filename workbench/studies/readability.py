"""How readable a trained dictionary is, computed once per SAE and cached beside its feature results: explanations
of every alive feature scored on held-out text (what ranks the report), and the interpretability scorecard
(features vs MLP neurons vs random directions), the concept-probing scorecard on the wiki's topic labels and the
features-vs-neurons correlation statistic. The demo and the whole-corpus profile both run these.

    expl = scored_explanations(results, sae, heldout_store, features_dir)
    card = cached_scorecard(results, store, sae, model, heldout_store, features_dir, ScorecardConfig(n_units=200))
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from workbench.analysis.concept_probing import KIND_NAMES, PROBING_JSON, ProbeConfig, ProbeScorecard, concept_probing
from workbench.analysis.explain import ExplanationSet, explain_features, score_features
from workbench.analysis.features import FeatureResults, sae_fingerprint
from workbench.analysis.scorecard import Scorecard, ScorecardConfig, find_scorecard, scorecard
from workbench.analysis.neurons import NeuronConfig, NeuronCorrelations, default_neuron_layers, neuron_correlations
from workbench.core.hardware import torch_threads
from workbench.data.hooks import sae_hook

__all__ = ["cached_concept_probing", "cached_neuron_correlations", "cached_scorecard", "load_explanations",
           "probing_section", "scored_explanations"]

EXPLANATIONS_JSON = "explanations.json"


def _heldout_identity(store) -> dict:
    return {"path": str(Path(store.path).resolve()), "created": store.manifest.get("created"),
            "n_contexts": int(store.n_contexts)}


def load_explanations(path: str | Path, key: dict) -> ExplanationSet | None:
    """The explanations saved at ``path`` when every entry of ``key`` matches their metadata (the SAE's
    fingerprint, what they were scored on...); None when the file is missing, unreadable or stale."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        cached = ExplanationSet.load(path)
    except ValueError:
        return None  # unreadable: the caller explains again and overwrites
    return cached if all(cached.meta.get(k) == v for k, v in key.items()) else None


def scored_explanations(results: FeatureResults, sae, heldout, folder: str | Path, *, threads: int | None = 1,
                        progress: bool = False) -> ExplanationSet:
    """Offline explanations of every alive feature of ``results``, each scored on all contexts of the store
    ``heldout`` (text the SAE and the explainer never saw), saved as ``folder/explanations.json`` and reused while
    the SAE and the held-out store are the same. ``threads``: torch threads for the scoring (one is fastest for its
    many small ops on a busy machine)."""
    path = Path(folder) / EXPLANATIONS_JSON
    key = {"sae_fingerprint": sae_fingerprint(sae), "scored_on": _heldout_identity(heldout)}
    cached = load_explanations(path, key)
    if cached is not None:
        return cached
    expl = explain_features(results, progress=progress)
    with torch_threads(threads):
        score_features(expl, heldout, sae, range(heldout.n_contexts), results=results, progress=progress)
    expl.meta.update(key)
    expl.save(path)
    return expl


def cached_scorecard(results: FeatureResults, store, sae, model, heldout, folder: str | Path,
                     config: ScorecardConfig | None = None) -> Scorecard:
    """The :func:`~workbench.analysis.scorecard.scorecard` of ``sae``, saved in ``folder/scorecard.json`` and
    reused while the SAE, the held-out store and the settings are the same."""
    cfg = config or ScorecardConfig()
    card = None
    try:
        card = find_scorecard(folder)
    except ValueError:
        pass  # unreadable: compute again and overwrite
    if (card is not None and card.meta.get("sae_fingerprint") == sae_fingerprint(sae)
            and card.meta.get("config") == json.loads(json.dumps(cfg.to_dict()))
            and card.meta.get("heldout_identity") == _heldout_identity(heldout)):
        return card
    card = scorecard(results, store, sae, model, heldout=heldout, config=cfg)
    card.meta["heldout_identity"] = _heldout_identity(heldout)
    card.save(folder)
    return card


def cached_concept_probing(model, sae, folder: str | Path, config: ProbeConfig | None = None) -> ProbeScorecard:
    """The concept-probing scorecard of ``sae`` (topic probes on the embedded wiki, docs/methods.md §20), saved in
    ``folder/concept_probing.json`` and reused while the SAE and the settings are the same."""
    cfg = config or ProbeConfig()
    key = {"sae_fingerprint": sae_fingerprint(sae), "config": json.loads(json.dumps(asdict(cfg)))}
    path = Path(folder) / PROBING_JSON
    if path.is_file():
        try:
            card = ProbeScorecard.load(path)
            if card.config.get("key") == key:
                return card
        except (ValueError, KeyError, TypeError):
            pass  # unreadable or stale: compute again and overwrite
    card = concept_probing(model, sae, cfg)
    card.config["key"] = key
    card.save(folder)
    return card


def cached_neuron_correlations(model, sae, heldout, folder: str | Path, n_contexts: int = 64) -> NeuronCorrelations:
    """Each feature's best |Pearson r| with any neuron of the MLP just before the SAE's hook, over the first
    ``n_contexts`` contexts of the held-out store (the paper's features-vs-neurons statistic, docs/methods.md §20),
    saved under ``folder/neurons`` and reused while the SAE and the held-out store are the same."""
    hook = sae_hook(sae)
    layers = default_neuron_layers(hook)[-1:]  # the preceding MLP
    key = {"sae_fingerprint": sae_fingerprint(sae), "heldout": _heldout_identity(heldout), "layers": layers,
           "n_contexts": int(n_contexts)}
    out = Path(folder) / "neurons"
    try:
        cached = NeuronCorrelations.load(out)
        if cached.meta.get("key") == key:
            return cached
    except (ValueError, OSError, KeyError):
        pass
    corr = neuron_correlations(model, sae, heldout, range(min(n_contexts, heldout.n_contexts)),
                               config=NeuronConfig(layers=layers, absolute=True, progress=False))
    corr.meta["key"] = key
    corr.save(out)
    return corr


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
