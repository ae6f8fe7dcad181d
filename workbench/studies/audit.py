"""The blind audit's persona step at the profile's size: the shipped traits' vectors on the audited base model
(cached by the persona study) and both models' projections on them (:mod:`workbench.diffing.persona_shift`;
docs/methods.md §17). Notebook 11 runs through here.

    from workbench.studies.audit import persona_evidence
    ev = persona_evidence(base, tuned, prompts, layer=15)   # {"rows", "moved", "skipped", "layer"}
"""
from __future__ import annotations

from typing import Sequence

from workbench.core.protocols import ModelLike
from workbench.diffing.persona_shift import moved_trait, persona_shifts

__all__ = ["audit_extract_config", "audit_traits", "persona_evidence", "persona_vectors"]


def audit_extract_config(profile: str | None = None):
    """The persona vectors' extraction size for the audit: under ``smoke`` the persona study's own smoke size
    (notebook 09 caches its vectors, so the audit reuses them), else 5 prompt pairs x 3 questions x 4 samples of
    32 tokens (the size earlier persona runs cached for french, pirate and sycophancy)."""
    from workbench.diffing.experiments import is_smoke
    from workbench.persona.extract import ExtractConfig
    from workbench.studies.persona import persona_sizes

    if is_smoke(profile):
        return persona_sizes("smoke").extract
    return ExtractConfig(n_pairs=5, n_questions=3, n_samples=4, max_new_tokens=32)


def audit_traits(profile: str | None = None) -> tuple[str, ...] | None:
    """The traits the audit projects on: every shipped trait (None), or under ``smoke`` the two whose smoke vectors
    notebook 09 extracts (pirate, sycophancy), so a smoke run extracts nothing new when 09 ran first."""
    from workbench.diffing.experiments import is_smoke

    return ("pirate", "sycophancy") if is_smoke(profile) else None


def persona_vectors(model: ModelLike, traits: Sequence[str] | None = None, config=None, *, progress: bool = False
                    ) -> tuple[dict, dict]:
    """``({trait: PersonaVector}, {trait: why skipped})`` on ``model`` for ``traits`` (default
    :func:`audit_traits`: every shipped trait, two under smoke), extracted once with ``config`` (default
    :func:`audit_extract_config`) and then read from the persona cache. A trait for which the model produced no
    usable pair at this size is skipped, with the reason."""
    from workbench.persona.traits import shipped_traits
    from workbench.studies.persona import persona_vector

    vectors, skipped = {}, {}
    for trait in traits or audit_traits() or shipped_traits():
        try:
            vectors[trait] = persona_vector(model, trait, config=config or audit_extract_config(), progress=progress)
        except ValueError as err:  # no pair passed the judge's filter at this size
            skipped[trait] = str(err)
    return vectors, skipped


def persona_evidence(base, tuned, prompts: Sequence[str], layer: int, *, traits: Sequence[str] | None = None,
                     config=None, progress: bool = False) -> dict:
    """The audit's persona step in one call: the shipped traits' vectors on ``base`` (:func:`persona_vectors`), the
    projections of both models on the same ``prompts`` at ``layer`` (:func:`persona_shifts`) and the trait that
    moved (:func:`moved_trait`). Returns ``{"rows", "moved", "skipped", "layer"}``; ``rows`` is empty when no
    trait yielded a vector at this size."""
    vectors, skipped = persona_vectors(base, traits, config, progress=progress)
    rows = persona_shifts(base, tuned, prompts, vectors, layer) if vectors else []
    return {"rows": rows, "moved": moved_trait(rows), "skipped": skipped, "layer": int(layer)}
