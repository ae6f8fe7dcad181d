"""The persona-vector study at the profile's size (``WORKBENCH_PROFILE=smoke`` for CI, ``full`` by hand): cached
persona vectors, the steering sweep, monitoring, fine-tuning checkpoints and tracing, each one call
(docs/methods.md §12, §16). Notebook 09 and ``benchmarks/bench_persona.py`` run through here.

    from workbench.studies.persona import persona_sizes, persona_vector
    sizes = persona_sizes()                       # by $WORKBENCH_PROFILE
    pv = persona_vector(model, "pirate", sizes=sizes)   # extracted once, then loaded from the cache
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from workbench.core.protocols import ModelLike
from workbench.core.cache import cached
from workbench.core.home import cache_dir
from workbench.persona.extract import (SHUFFLE_METHOD, ExtractConfig, PersonaVector, Response,
                                      extract_persona_vector, rejudge, stored_responses, vector_from_responses)
from workbench.persona.finetune import FinetuneConfig
from workbench.persona.judge import RubricJudge
from workbench.persona.steer import SteerConfig
from workbench.persona.traits import load_trait
from workbench.studies.profile import Profile, current_profile

__all__ = ["PersonaSizes", "persona_sizes", "persona_vector", "study_sae"]

PERSONA_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class PersonaSizes:
    """Counts for one profile. ``layer``/``coef``: where and how hard the notebook steers. On SmolLM2 the raw
    vectors are large (norm about 0.2 of the residual at layer 12 for sycophancy): coefficients of 4 and more cost a
    perplexity ratio far above 2 even for the random control (measured, see the notebook's closing cell)."""

    extract: ExtractConfig
    steer: SteerConfig       # the sweep: the vector alone, sampled only within the perplexity budget
    compare: SteerConfig     # the chosen setting vs unsteered and both controls (fresh seeds, more answers)
    finetune: FinetuneConfig
    monitor_questions: int
    monitor_samples: int
    trace_questions: int
    layer: int = 15
    coef: float = 1.5


def persona_sizes(profile: Profile | str | None = None) -> PersonaSizes:
    prof = profile if isinstance(profile, Profile) else current_profile(profile)
    if prof.smoke:
        return PersonaSizes(
            extract=ExtractConfig(n_pairs=3, n_questions=2, n_samples=4, max_new_tokens=24),
            steer=SteerConfig(layers=(12,), coefs=(1.5,), n_questions=1, n_samples=2, max_new_tokens=24,
                              ppl_contexts=2, controls=()),
            compare=SteerConfig(n_questions=1, n_samples=2, max_new_tokens=24, ppl_contexts=2, seed=7),
            finetune=FinetuneConfig(steps=2, batch_size=2, save_every=2, max_len=48, first_layer=24),
            monitor_questions=1, monitor_samples=1, trace_questions=1)
    return PersonaSizes(
        extract=ExtractConfig(n_pairs=5, n_questions=20, n_samples=4, max_new_tokens=48),
        steer=SteerConfig(layers=(3, 6, 9, 12, 15, 18, 21, 24, 27), coefs=(0.5, 1.0, 1.5), n_questions=4,
                          n_samples=4, max_new_tokens=32, controls=(), max_ppl_ratio=2.0),
        compare=SteerConfig(n_questions=20, n_samples=4, max_new_tokens=48, seed=7),
        finetune=FinetuneConfig(),
        monitor_questions=5, monitor_samples=2, trace_questions=10)


def persona_vector(model: ModelLike, trait, judge=None, *, sizes: PersonaSizes | None = None,
                   config: ExtractConfig | None = None,
                   progress: bool = True) -> PersonaVector:
    """The trait's vector on ``model``, extracted with ``config`` (default: the profile's) and cached under
    ``WORKBENCH_HOME/persona/vectors`` by (model, trait file hash, config, judge name). Nothing sampled is sampled
    twice: a cached vector whose shuffled control predates :data:`~workbench.persona.extract.SHUFFLE_METHOD` is
    rebuilt from its stored responses, and a vector for another judge (same model, trait file and config) lends its
    stored responses, judged again (teacher-forced, no sampling)."""
    trait = load_trait(trait)
    cfg = config or (sizes or persona_sizes()).extract
    judge = judge or RubricJudge(trait)
    judge_name = getattr(judge, "name", type(judge).__name__)
    name = getattr(model, "workbench_name", model.cfg.model_name)
    key = json.dumps({"model": name, "trait": trait.sha256, "config": asdict(cfg), "judge": judge_name},
                     sort_keys=True)
    folder = cache_dir("persona") / "vectors"
    prefix = f"{str(name).replace('/', '--')}-{trait.name}-"
    path = folder / f"{prefix}{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"

    def compute() -> PersonaVector:
        stale = _load_or_none(path)  # an older control: rebuilt from its stored judged responses (no generation)
        responses: list[Response] | None
        if stale is not None:
            responses = stored_responses(stale)
        else:
            donor = _same_samples(folder, prefix, trait, cfg)
            responses = rejudge(stored_responses(donor), judge) if donor is not None else None
        if responses is not None:
            pv = vector_from_responses(model, trait, responses, cfg, progress=progress)
        else:
            pv = extract_persona_vector(model, trait, judge, cfg, progress=progress)
        pv.meta["judge"] = judge_name
        return pv

    return cached(path, {**json.loads(key), "shuffle_method": SHUFFLE_METHOD}, compute, load=_load_current,
                  save=lambda v, p: v.save(p))


def _load_current(path) -> PersonaVector:
    pv = PersonaVector.load(path)
    if pv.meta.get("shuffle_method") != SHUFFLE_METHOD:
        raise ValueError(f"{path}: its shuffled control predates {SHUFFLE_METHOD!r}")
    return pv


def _load_or_none(path) -> PersonaVector | None:
    if not path.is_file():
        return None
    try:
        return PersonaVector.load(path)
    except ValueError:
        return None  # corrupt: extract again


def _same_samples(folder, prefix: str, trait, cfg: ExtractConfig) -> PersonaVector | None:
    """A cached vector of the same model, trait file and extraction config (under any judge) with stored
    responses: its samples can be judged again instead of drawn again."""
    for path in sorted(folder.glob(f"{prefix}*.safetensors")):
        pv = _load_or_none(path)
        if (pv is not None and pv.meta.get("responses") and pv.meta.get("trait_sha256") == trait.sha256
                and pv.meta.get("config") == json.loads(json.dumps(asdict(cfg)))):
            return pv
    return None


def study_sae(model: ModelLike, layer: int, profile: Profile | str | None = None, *, corpus=None, **overrides):
    """A TopK SAE on ``model``'s ``blocks.{layer}.hook_resid_post`` trained through the standard pipeline (cached;
    the middle layer shares the standard store): for decomposing persona vectors into features. The full profile
    uses notebook 08's SmolLM2 size (262k tokens, 4096 latents) unless ``overrides`` say otherwise. ``corpus``: a
    :class:`~workbench.data.corpus.CorpusSpec` instead of the wiki (its own store and SAE)."""
    from workbench.studies.profile import standard_sae

    prof = profile if isinstance(profile, Profile) else current_profile(profile)
    if not prof.smoke and not overrides:  # the size notebook 08 uses for SmolLM2 (shares its cache)
        overrides = dict(n_tokens=262_144, holdout_tokens=16_384, d_sae=4096, k=32, batch_size=2048)
    name = getattr(model, "workbench_name", PERSONA_MODEL)
    hook = None if int(layer) == model.cfg.n_layers // 2 else f"blocks.{int(layer)}.hook_resid_post"  # None: standard
    return standard_sae(name, profile=prof, model=model, hook=hook, corpus=corpus, **overrides)
