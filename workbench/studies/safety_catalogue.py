"""Safety-relevant and self features on the persona-selection SAE (notebook 15's last part, docs/methods.md §36).

    from workbench.studies.safety_catalogue import safety_study
    result = safety_study(model, selection_sizes())   # {"concepts": {name: row}, "sae": ..., "found": [...]}

Per shipped concept (:mod:`workbench.persona.safety_features`): each text's max code per feature; the feature chosen
on the first half of the contrast set; its held-out separation on the second half, beside a random alive feature's;
its top examples in the SAE's store; and clamps on neutral chat questions (none, the feature at 1x and 2x its max
activation, a random alive feature at 2x), judged by the concept's lexicon. A concept counts as found when the
held-out AUC is at least 0.8 with permutation p < 0.05 and a clamp of the feature scores above both the unclamped
model and the random-feature clamp by more than twice its standard error. Cached as JSON.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from workbench.core.protocols import ModelLike
from workbench.persona.steer import SteerConfig
from workbench.studies.persona_selection import LAYER, SelectionSizes, cached_json, selection_sae, top_examples

__all__ = ["safety_study"]

CLAMP_COEFS = (1.0, 2.0)


def _found(row: dict) -> bool:
    sep = row["heldout"]
    if row["feature"] is None or sep["auc"] < 0.8 or sep["p"] >= 0.05:
        return False
    base = max(row["clamp"]["none"]["trait"], row["clamp"]["random"]["trait"])
    for c in CLAMP_COEFS:
        t = row["clamp"][f"feature_x{c:g}"]
        sem = t["trait_sem"] if math.isfinite(t["trait_sem"]) else 0.0
        if t["trait"] - base > max(2 * sem, 1e-9):
            return True
    return False


def _safety(model: ModelLike, sizes: SelectionSizes, clamp: SteerConfig, progress: bool) -> dict:
    from workbench.analysis.catalogue_concepts import text_max_codes
    from workbench.persona.reuse import FeatureSetClamp, clamp_trial, random_features
    from workbench.persona.safety_features import (ConceptJudge, choose_feature, heldout_separation,
                                                   load_safety_concepts)

    data = load_safety_concepts()
    study = selection_sae(model, sizes, progress)
    sae = study.sae
    hook = f"blocks.{LAYER}.hook_resid_post"
    mx = torch.as_tensor(study.features().arrays["max"]).float()
    alive = [i for i in range(len(mx)) if float(mx[i]) > 0]
    qs = list(data.clamp_questions[: clamp.n_questions])
    out: dict[str, Any] = {"concepts": {}, "layer": LAYER, "d_sae": int(sae.cfg.d_sae)}
    for i, (name, c) in enumerate(data.concepts.items()):
        pos, neg = text_max_codes(model, sae, hook, c.positive), text_max_codes(model, sae, hook, c.negative)
        half = len(c.positive) // 2
        pick = choose_feature(pos[:half], neg[:half])
        row: dict[str, Any] = {"description": c.description, **pick, "n_select": half,
                               "n_heldout": len(c.positive) - half}
        rnd = random_features(int(sae.cfg.d_sae), 1, exclude=pick["top"], pool=alive, seed=100 + i)[0]
        row["random_feature"] = rnd
        row["heldout_random"] = heldout_separation(pos[half:, rnd], neg[half:, rnd])
        f = pick["feature"]
        if f is None:
            row["heldout"] = {"auc": float("nan"), "p": 1.0}
            row["found"] = False
            out["concepts"][name] = row
            continue
        row["heldout"] = heldout_separation(pos[half:, f], neg[half:, f])
        row["max_act"] = round(float(mx[f]), 4)
        row["top_examples"] = top_examples(study, f, 4)
        judge = ConceptJudge(c)
        trials = {"none": clamp_trial(model, None, qs, judge, clamp)}
        for coef in CLAMP_COEFS:
            st = FeatureSetClamp(hook=hook, sae=sae, features=(f,), values=(coef * float(mx[f]),))
            trials[f"feature_x{coef:g}"] = clamp_trial(model, st, qs, judge, clamp)
        st = FeatureSetClamp(hook=hook, sae=sae, features=(rnd,), values=(CLAMP_COEFS[-1] * float(mx[rnd]),))
        trials["random"] = clamp_trial(model, st, qs, judge, clamp)
        row["clamp"] = trials
        row["found"] = _found(row)
        out["concepts"][name] = row
    out["found"] = [n for n, r in out["concepts"].items() if r["found"]]
    return out


def safety_study(model: ModelLike, sizes: SelectionSizes | None = None, *, clamp: SteerConfig | None = None,
                 progress: bool = False) -> dict:
    """The safety-feature search (module docstring) on ``sizes``' SAE; ``clamp``: sampling of the clamp trials
    (default: ``sizes.clamp``, the persona clamps' sampling)."""
    from workbench.studies.persona_selection import selection_sizes

    sizes = sizes or selection_sizes()
    clamp = clamp or sizes.clamp
    return cached_json("safety", sizes, {"model": str(getattr(model, "workbench_name", "model")), "v": 1,
                                          "clamp": asdict(clamp)},
                        lambda: _safety(model, sizes, clamp, progress))
