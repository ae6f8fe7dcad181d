"""How readable a trained dictionary is, computed once per SAE and cached beside its feature results: explanations
of every alive feature scored on held-out text (what ranks the report), and the interpretability scorecard
(features vs MLP neurons vs random directions). The demo and the whole-corpus profile both run these.

    expl = scored_explanations(results, sae, heldout_store, features_dir)
    card = cached_scorecard(results, store, sae, model, heldout_store, features_dir, ScorecardConfig(n_units=200))
"""
from __future__ import annotations

import json
from pathlib import Path

from workbench.analysis.explain import ExplanationSet, explain_features, score_features
from workbench.analysis.features import FeatureResults, sae_fingerprint
from workbench.analysis.scorecard import Scorecard, ScorecardConfig, find_scorecard, scorecard
from workbench.core.hardware import torch_threads

__all__ = ["cached_scorecard", "load_explanations", "scored_explanations"]

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
