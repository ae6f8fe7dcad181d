"""One SAE's analysis in one object: the SAE, the store it was read on, its feature results and (optionally) their
explanations, the model and a held-out store. The pieces are checked against each other once, when the bundle is
built, instead of by every function that takes them.

    bundle = AnalysisBundle(sae, store, results, explanations, model=model, heldout=heldout_store)
    score_features(bundle)               # the explanations, scored on the store's held-out contexts
    scorecard(bundle, config=...)        # features vs neurons vs random directions
    write_report("report.html", bundle, metrics)
    export_neuronpedia("np/", bundle)

Every one of those still takes the loose pieces as before; :func:`unpack` is how they accept either.
``StudySAEs.bundle(name)`` (:mod:`workbench.studies.profile`) builds one for a study's SAE.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.analysis.feature_results import FeatureResults
from workbench.core.protocols import ModelLike, SAELike, StoreLike

__all__ = ["AnalysisBundle", "unpack"]


@dataclass
class AnalysisBundle:
    """An SAE with its store, feature results and explanations (module docstring). Built only when they belong
    together: the results' width is the SAE's, their SAE fingerprint (when recorded) is this SAE's, and the store
    they record is this store (same folder and creation time)."""

    sae: SAELike
    store: StoreLike
    results: FeatureResults
    explanations: Any = None
    model: ModelLike | None = None
    heldout: StoreLike | None = None

    def __post_init__(self) -> None:
        check_together(self.sae, self.store, self.results)

    @property
    def hook(self) -> str:
        """The store hook the results were computed on."""
        return str(self.results.meta.get("hook") or self.store.hooks[0])

    def with_explanations(self, explanations) -> "AnalysisBundle":
        """The same bundle with ``explanations`` (checks nothing again)."""
        out = copy.copy(self)
        out.explanations = explanations
        return out


def check_together(sae: SAELike, store: StoreLike | None, results: FeatureResults) -> None:
    """ValueError, naming what differs and the fix, unless ``results`` were computed from ``sae`` on ``store``."""
    if results.d_sae != int(sae.cfg.d_sae):
        raise ValueError(f"the results have d_sae={results.d_sae} but the SAE has {sae.cfg.d_sae}: pass the SAE "
                         f"they were computed with (or recompute them with compute_features)")
    recorded = results.meta.get("sae_fingerprint")
    if recorded is not None:
        from workbench.analysis.features import sae_fingerprint  # hashes the weights: only when there is one to match

        if recorded != sae_fingerprint(sae):
            raise ValueError("the results were computed with another SAE (their sae_fingerprint differs): pass that "
                             "SAE, or recompute the results with compute_features(store, sae, ...)")
    own = results.meta.get("store") or {}
    if own.get("path") and store is not None:
        here = str(Path(store.path).resolve())
        if own["path"] != here or own.get("created") not in (None, store.manifest.get("created")):
            raise ValueError(f"the results were computed on the store {own['path']} (created {own.get('created')}), "
                             f"not on {here}: pass that store, or recompute the results on this one")


def unpack(first, **pieces) -> dict:
    """The pieces of an analysis, from a bundle passed first or from the loose arguments: a dict with ``results``,
    ``sae``, ``store``, ``explanations``, ``model`` and ``heldout``. Loose arguments given beside a bundle fill what
    the bundle lacks (the bundle wins where both say something)."""
    if isinstance(first, AnalysisBundle):
        got = {k: getattr(first, k) for k in ("results", "sae", "store", "explanations", "model", "heldout")}
        return {k: (got.get(k) if got.get(k) is not None else pieces.get(k)) for k in {*got, *pieces}}
    return {"results": first, **pieces}
