"""Safety-relevant and self features: for each concept, a project-written contrast set chooses a feature on one half
and tests it on the other, and a lexicon judge scores what clamping it makes the model say (docs/methods.md §36).

    from workbench.persona.safety_features import load_safety_concepts, choose_feature, heldout_separation
    concepts = load_safety_concepts()                  # workbench/resources/safety_concepts.json
    c = concepts.concepts["deception"]
    pos, neg = text_max_codes(model, sae, hook, c.positive), text_max_codes(model, sae, hook, c.negative)
    pick = choose_feature(pos[:8], neg[:8])            # {"feature", "score", "top"}: chosen on the first half
    heldout_separation(pos[8:, f], neg[8:, f])         # AUC, firing rates and a permutation p on the second half

The pieces are pure functions on per-text max codes (``[n_texts, d_sae]``, see
:func:`workbench.analysis.catalogue_concepts.text_max_codes`), so the same search runs on any SAE, and
:class:`ConceptJudge` scores a reply with the concept's lexicon (the trait rubric's ``lexicon`` kind) and the offline
coherence judge.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from workbench.core.resources import resource_or_file
from workbench.persona.judge import LexiconJudge

__all__ = ["ConceptJudge", "SafetyConcept", "SafetyConcepts", "choose_feature", "heldout_separation",
           "load_safety_concepts"]

RESOURCE = "safety_concepts.json"


@dataclass(frozen=True)
class SafetyConcept:
    name: str
    description: str
    positive: tuple[str, ...]  # texts that show the concept
    negative: tuple[str, ...]  # texts on the same topics that do not, matched by index
    lexicon: tuple[str, ...]   # regular expressions a reply showing the concept would match

    @property
    def rubric(self) -> dict:
        return {"kind": "lexicon", "lexicon": list(self.lexicon), "saturation": 2.0}


@dataclass(frozen=True)
class SafetyConcepts:
    concepts: dict[str, SafetyConcept]
    clamp_questions: tuple[str, ...]


def _check(d: Mapping, where: str) -> SafetyConcepts:
    try:
        qs = tuple(str(q) for q in d["clamp_questions"])
        concepts = {}
        for name, c in d["concepts"].items():
            concepts[name] = SafetyConcept(name, str(c["description"]), tuple(map(str, c["positive"])),
                                           tuple(map(str, c["negative"])), tuple(map(str, c["lexicon"])))
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{where}: not a safety-concepts file ({type(err).__name__}: {err}); it needs "
                         "'clamp_questions' and 'concepts' {name: {description, positive, negative, lexicon}}") from None
    if not qs or not concepts:
        raise ValueError(f"{where}: clamp_questions and concepts must be non-empty")
    for c in concepts.values():
        if len(c.positive) != len(c.negative) or len(c.positive) < 4:
            raise ValueError(f"{where}: concept {c.name!r} needs as many negative texts as positive ones (matched by "
                             f"index), at least 4 of each; it has {len(c.positive)} and {len(c.negative)}")
        for pattern in c.lexicon:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{where}: concept {c.name!r}: lexicon pattern {pattern!r} is not a regular "
                                 f"expression ({err})") from None
    return SafetyConcepts(concepts, qs)


def load_safety_concepts(path: str | Path | None = None) -> SafetyConcepts:
    """The shipped contrast sets (``workbench/resources/safety_concepts.json``), or a JSON file of the same form."""
    return _check(*resource_or_file(RESOURCE, path, "safety-concepts"))


def choose_feature(pos: Tensor, neg: Tensor, k: int = 5) -> dict:
    """On the selection half: the feature with the largest mean max-code on ``pos`` minus on ``neg``, among the
    features that fire on at least half of the ``pos`` texts; and the top ``k`` by the same score."""
    if pos.ndim != 2 or pos.shape[1:] != neg.shape[1:] or not len(pos) or not len(neg):
        raise ValueError(f"give [n_texts, d_sae] codes for both sets, got {tuple(pos.shape)} and {tuple(neg.shape)}")
    score = pos.float().mean(0) - neg.float().mean(0)
    fires = (pos > 0).float().mean(0) >= 0.5
    score = torch.where(fires, score, torch.full_like(score, float("-inf")))
    top = [int(i) for i in torch.argsort(score, descending=True)[:k] if torch.isfinite(score[i])]
    if not top:
        return {"feature": None, "score": float("nan"), "top": []}
    return {"feature": top[0], "score": round(float(score[top[0]]), 5), "top": top}


def _auc(a: Tensor, b: Tensor) -> float:
    diff = a.double()[:, None] - b.double()[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def heldout_separation(pos: Tensor, neg: Tensor, *, n_permutations: int = 2000, seed: int = 0) -> dict:
    """One feature's max codes on held-out ``pos`` and ``neg`` texts: the AUC of telling them apart (0.5: chance),
    each set's firing rate and mean, and a one-sided permutation p-value of the AUC (labels shuffled)."""
    pos, neg = pos.flatten().double(), neg.flatten().double()
    if not len(pos) or not len(neg):
        raise ValueError("give at least one held-out text on each side")
    auc = _auc(pos, neg)
    both = torch.cat([pos, neg])
    gen = torch.Generator().manual_seed(seed)
    hits = 0
    for _ in range(n_permutations):
        perm = both[torch.randperm(len(both), generator=gen)]
        hits += _auc(perm[:len(pos)], perm[len(pos):]) >= auc
    return {"auc": round(auc, 4), "p": round((hits + 1) / (n_permutations + 1), 4), "n": [len(pos), len(neg)],
            "pos_rate": round(float((pos > 0).double().mean()), 3), "neg_rate": round(float((neg > 0).double().mean()), 3),
            "pos_mean": round(float(pos.mean()), 4), "neg_mean": round(float(neg.mean()), 4)}


class ConceptJudge(LexiconJudge):
    """``judge(question, reply) -> JudgeScore``: ``trait`` is the concept lexicon's score (0-100), ``coherence``
    the offline judge's (version 2)."""

    def __init__(self, concept: SafetyConcept):
        self.concept = concept
        super().__init__(concept.rubric, f"lexicon:{concept.name}")
