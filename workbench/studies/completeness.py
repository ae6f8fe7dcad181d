"""The completeness study of notebook 05: the profile's standard SAE and SAEs of other sizes trained exactly like it,
scored by :func:`workbench.analysis.completeness.completeness` on the concepts that have an embedded article.

    study = completeness_study()                 # standard_sae() of $WORKBENCH_PROFILE, sizes d/4, d, 4d
    study.result.summary()                       # one row per SAE: coverage and the sigmoid midpoints
    CompletenessResult.load(study.path)          # the saved result
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from workbench.analysis.completeness import CompletenessConfig, CompletenessResult, completeness
from workbench.analysis.concepts import Category, corpus_categories
from workbench.sae.model import SAE
from workbench.sae.train import RunSpec, train, training_dir
from workbench.studies.profile import Profile, StandardSAE, standard_sae, standard_training

__all__ = ["CompletenessStudy", "completeness_study", "study_sizes", "train_sizes"]

RESULT_NAME = "completeness.json"  # saved in the standard SAE's run folder


def study_sizes(profile: Profile, factor: int = 4) -> list[int]:
    """The dictionary sizes scored besides the standard SAE's: ``factor`` times smaller and ``factor`` times larger
    (smoke: 256 and 4096 around 1024; full: 4096 and 65536 around 16384)."""
    if factor < 2:
        raise ValueError(f"factor={factor} must be >= 2 (the sizes must differ from the standard SAE's)")
    if profile.d_sae // factor < 1:
        raise ValueError(f"the profile's d_sae={profile.d_sae} is too small to divide by factor={factor}")
    return [profile.d_sae // factor, profile.d_sae * factor]


def train_sizes(standard: StandardSAE, d_saes: Sequence[int]) -> dict[str, SAE]:
    """SAEs of other sizes trained exactly like ``standard``'s (same store, held-out split, architecture, k, batches
    and token count), in one pass of the multi-SAE trainer and cached next to it. Returns ``{"<arch>-<d_sae>": sae}``
    for ``d_saes`` plus the standard SAE, ordered by size."""
    prof, sae = standard.profile, standard.sae
    arch = sae.cfg.architecture
    extra = sorted({int(d) for d in d_saes} - {int(sae.cfg.d_sae)})
    out = {f"{arch}-{sae.cfg.d_sae}": sae}
    if extra:
        (base,), config = standard_training(prof, standard.store, arch)
        specs = [RunSpec(arch, d, k=base.k, options=dict(base.options)) for d in extra]
        run_dir = training_dir(standard.run_dir.parent, specs, config, standard.source)
        trained = train(specs, config, standard.source, run_dir, progress=prof.progress)
        out.update({f"{arch}-{s.d_sae}": trained.runs[s.resolved_name].sae for s in specs})
    return dict(sorted(out.items(), key=lambda kv: int(kv[1].cfg.d_sae)))


@dataclass
class CompletenessStudy:
    """What :func:`completeness_study` ran: the standard SAE, every scored SAE (name -> SAE, by size), the
    categories scanned, the result and where it was saved."""

    standard: StandardSAE
    saes: dict[str, SAE]
    categories: list[Category]
    result: CompletenessResult
    path: Path


def completeness_study(standard: StandardSAE | None = None, *, sizes: Sequence[int] | None = None,
                       categories: Sequence[Category] | None = None,
                       config: CompletenessConfig | None = None) -> CompletenessStudy:
    """Train (or reuse) the SAEs of ``sizes`` (default :func:`study_sizes` of the profile) next to ``standard``
    (default :func:`~workbench.studies.profile.standard_sae` of the current profile), score them all on
    ``categories`` (default :func:`~workbench.analysis.concepts.corpus_categories`) and save the result as
    ``completeness.json`` in the standard SAE's run folder. ``config`` defaults to the profile's progress setting."""
    std = standard if standard is not None else standard_sae()
    saes = train_sizes(std, study_sizes(std.profile) if sizes is None else sizes)
    cats = corpus_categories() if categories is None else list(categories)
    cfg = config if config is not None else CompletenessConfig(progress=std.profile.progress)
    path = std.run_dir / RESULT_NAME
    result = completeness(std.store, saes, cats, cfg, tokenizer=std.model.tokenizer, out_path=path)
    return CompletenessStudy(standard=std, saes=saes, categories=cats, result=result, path=path)
