"""Finding the feature to steer with, as notebook 08 does: contrast, then (full profile) screen by clamping.

    found = find_steering_feature(model, sae, max_acts, positive, negative, screen_prompts, check, strength=2.0)
    found.feature          # the feature index kept
    found.contrast         # the candidates, best contrast first (ContrastHit rows)
    found.screen           # the screening rows (SweepRow per candidate), empty when screening is skipped

Candidates are the features more active on the positive completions than on the negative ones (Cohen's d over
completion tokens, :func:`workbench.intervene.steering.contrast_completions`). With ``screen=True`` the best
``n_screen`` are clamped at one strength on screening prompts (kept apart from the prompt the notebook evaluates on)
and the one that moves the concept most while staying fluent is kept, ties going to the better contrast
(:func:`workbench.intervene.steering.screen_features`). With ``screen=False`` (the smoke profile) the top contrast is
kept. docs/methods.md §11 describes clamping and the controls.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

from torch import Tensor

from workbench.core.protocols import ModelLike, SAELike
from workbench.analysis.search import ContrastHit
from workbench.intervene.generation import GenerationConfig
from workbench.intervene.steering import (ConceptCheck, SteeringExample, SweepRow, contrast_completions,
                                          screen_features)

__all__ = ["FeatureSearch", "SCREEN_GENERATION", "find_steering_feature"]

# the screening samples: short, few, and seeded apart from the evaluation's seed 0
SCREEN_GENERATION = GenerationConfig(max_new_tokens=24, n_samples=4, temperature=0.7, top_p=0.9, seed=1)


@dataclass
class FeatureSearch:
    """What :func:`find_steering_feature` found: the kept ``feature``, the ``contrast`` candidates (best first) and
    the ``screen`` rows (empty without screening)."""

    feature: int
    contrast: list[ContrastHit]
    screen: list[SweepRow] = field(default_factory=list)

    def contrast_table(self) -> list[dict]:
        """The candidates as rows (feature, score, means), for a DataFrame."""
        return [asdict(h) for h in self.contrast]

    def screen_table(self) -> list[dict]:
        """The screening rows (method ``F<i>``, concept rate, fluency), for a DataFrame."""
        return [r.to_dict() for r in self.screen]


def find_steering_feature(model: ModelLike, sae: SAELike, max_activations: Tensor, positive: Sequence[SteeringExample],
                          negative: Sequence[SteeringExample], screen_prompts: Sequence[str], check: ConceptCheck,
                          strength: float, *, goal: str = "increase", screen: bool = True, n_candidates: int = 8,
                          n_screen: int = 5, generation: GenerationConfig | None = None,
                          progress: bool = False) -> FeatureSearch:
    """The feature to clamp for a concept (module docstring). ``goal``: ``"increase"`` (clamp up: keep the feature
    that raises ``check``'s rate most) or ``"decrease"`` (clamp down: lowers it most)."""
    hits = contrast_completions(model, sae, positive, negative, top_n=n_candidates)
    if not hits:
        raise ValueError("no feature is more active on the positive completions than on the negative ones: write "
                         "more (or more different) contrast examples")
    if not screen:
        return FeatureSearch(int(hits[0].feature), list(hits))
    rows = screen_features(model, sae, [h.feature for h in hits[:n_screen]], max_activations, screen_prompts, check,
                           strength, generation or SCREEN_GENERATION, goal=goal, progress=progress)
    return FeatureSearch(int(rows[0].method[1:]), list(hits), rows)
