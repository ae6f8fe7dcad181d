"""Run profiles and the SAEs every case-study notebook starts from.

A profile fixes the sizes a notebook uses: ``smoke`` keeps CI runs to minutes (a tiny, barely trained SAE),
``full`` is the whole-corpus profile: every training-split token of the embedded wiki (about 2.4M, en/es/fr),
a 16,384-latent TopK trained for several epochs over it, checkpointed as it goes (about an hour on 2 CPU cores,
``make full`` builds it once; minutes on a GPU). ``WORKBENCH_PROFILE`` picks one (default ``full``).

:func:`standard_sae` returns the model, its activation store, the training source (with held-out tokens) and a
TopK SAE on the middle-layer residual stream, each cached under ``WORKBENCH_HOME``, so notebooks share them
instead of each repeating the harvest → train cell. :func:`nested_saes` trains several dictionary sizes on the same
store in one pass (notebooks 03 and 04). Both return a :class:`StudySAEs`, whose analysis passes
(:meth:`StudySAEs.features`) are cached next to each SAE, in a folder keyed by the settings that change them.

    std = standard_sae()                     # one SAE: std.sae
    results = std.features()                 # run_dir/<name>/features (the study's default settings)
    whole = std.features(max_tokens=None)    # run_dir/<name>/features-<hash>: other settings, another folder
    nested = nested_saes()                   # nested.saes, smallest first; nested.features() -> {name: results}
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, overload

from torch import Tensor

from workbench.core.protocols import ModelLike, StoreLike
from workbench.analysis.bundle import AnalysisBundle
from workbench.analysis.explain import ExplanationSet, explain_features
from workbench.analysis.feature_results import analysis_tokens
from workbench.analysis.features import FeatureConfig, FeatureResults, compute_features, semantic_settings
from workbench.core.home import cache_dir
from workbench.data.corpus import CorpusSpec, whole_corpus_tokens
from workbench.data.harvest import HarvestSpec, harvest_cached
from workbench.data.models import load_model
from workbench.sae.model import SAE
from workbench.sae.train import RunSpec, StoreSource, TrainConfig, default_lr, train, training_dir
from workbench.studies.readability import cached_explanations

__all__ = [
    "NestedSAEs",
    "PROFILES",
    "PROFILE_ENV",
    "Profile",
    "SMOKE_BATCH_SIZE",
    "SMOKE_LR_SCALE",
    "StandardSAE",
    "StudySAEs",
    "current_profile",
    "default_sizes",
    "nested_saes",
    "runs_base",
    "standard_harvest_spec",
    "standard_sae",
    "standard_training",
    "train_nested",
]

PROFILE_ENV = "WORKBENCH_PROFILE"
FEATURES_DIR = "features"


@dataclass(frozen=True)
class Profile:
    """Sizes for one kind of run."""

    name: str = "full"
    n_tokens: int | None = None      # tokens harvested into the standard store; None: the corpus's whole train split
    holdout_tokens: int = 65_536     # kept out of training, for evaluation
    batch_size: int = 4096
    d_sae: int = 16_384
    k: int = 32
    epochs: int = 4                  # passes over the store's training tokens, each reshuffled
    checkpoint_every: int = 100      # training steps between checkpoints (0: none; a killed run then restarts)
    progress: bool = True            # tqdm bars (off in CI logs)

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", n_tokens=16_384, holdout_tokens=2_048, batch_size=256, d_sae=1024, k=16, epochs=1,
                     checkpoint_every=0, progress=False),
    "full": Profile("full"),
}


def current_profile(name: str | None = None) -> Profile:
    """The profile named ``name``, else by ``$WORKBENCH_PROFILE``, else ``full``."""
    name = name or os.environ.get(PROFILE_ENV) or "full"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (from ${PROFILE_ENV} or the argument): choose one of "
                         f"{', '.join(PROFILES)}")
    return PROFILES[name]


# ----------------------------------------------------------------------------------------------------------------
# The SAEs of a study
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class StudySAEs:
    """What :func:`standard_sae` (one SAE) or :func:`nested_saes` (one per size) prepared; every part is cached.

    ``saes``: the SAEs by run name, smallest first, all trained in one pass over ``source`` (the store minus its
    first ``profile.holdout_tokens`` shuffled tokens, held out). ``run_dir``: their training folder; each SAE's
    analyses go under ``run_dir/<name>`` (next to its weights). ``feature_tokens``: the store tokens the default
    feature pass covers (None: all); the standard SAE analyses the first 3/4 of the store's contexts, so the last
    quarter stays held out for scoring explanations (:func:`workbench.analysis.explain.heldout_contexts`)."""

    model: Any               # HookedTransformer
    store: Any               # workbench.data.store.ActivationStore
    source: StoreSource
    saes: dict[str, SAE]
    run_dir: Path
    profile: Profile
    feature_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.saes:
            raise ValueError("a study needs at least one SAE")
        self.saes = dict(sorted(self.saes.items(), key=lambda kv: int(kv[1].cfg.d_sae)))

    @property
    def names(self) -> list[str]:
        return list(self.saes)

    @property
    def sizes(self) -> list[int]:
        return [int(s.cfg.d_sae) for s in self.saes.values()]

    @property
    def hook(self) -> str:
        return self.source.hook

    @property
    def sae(self) -> SAE:
        """The study's SAE (ValueError when it holds several: pick one from ``saes``)."""
        return self.saes[self._name(None)]

    def _name(self, name: str | None) -> str:
        if name is None:
            if len(self.saes) > 1:
                raise ValueError(f"this study holds {len(self.saes)} SAEs ({', '.join(self.saes)}): pass name= "
                                 f"or pick one from .saes")
            return next(iter(self.saes))
        if name not in self.saes:
            raise ValueError(f"unknown SAE {name!r}: this study holds {', '.join(self.saes)}")
        return name

    # ----- feature analyses -----

    def feature_config(self, **config) -> FeatureConfig:
        """The study's :class:`~workbench.analysis.features.FeatureConfig` (over ``feature_tokens``, progress bars
        as the profile says), with ``config`` overriding its fields."""
        return FeatureConfig(**{"max_tokens": self.feature_tokens, "progress": self.profile.progress, **config})

    def features_dir(self, name: str | None = None, config: FeatureConfig | Mapping | None = None) -> Path:
        """Where the feature pass of SAE ``name`` with ``config`` (a FeatureConfig or its dict; default the study's)
        is cached: ``run_dir/<name>/features`` for the study's settings, ``features-<hash>`` otherwise, the hash
        taken over the result-changing fields that differ from the study's (progress, threads, device and chunking
        leave the results alone, so they share a folder). Each setting keeps its own cache instead of overwriting
        the shared one."""
        name = self._name(name)
        given = config.to_dict() if isinstance(config, FeatureConfig) else dict(config or {})
        default = semantic_settings(self.feature_config().to_dict())
        diff = {k: v for k, v in semantic_settings({**default, **given}).items() if default.get(k) != v}
        folder = FEATURES_DIR
        if diff:
            folder += "-" + hashlib.sha256(json.dumps(diff, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return self.run_dir / name / folder

    @overload
    def features(self, name: str, **config: Any) -> FeatureResults: ...

    @overload
    def features(self, name: None = None, **config: Any) -> FeatureResults | dict[str, FeatureResults]: ...

    def features(self, name: str | None = None, **config: Any) -> FeatureResults | dict[str, FeatureResults]:
        """The feature analysis (:func:`workbench.analysis.features.compute_features`, with logit effects) of SAE
        ``name`` over the store, cached in :meth:`features_dir`; ``config`` overrides :meth:`feature_config`
        fields. Without ``name``: the only SAE's results, or with several SAEs a dict name -> results."""
        if name is None and len(self.saes) > 1:
            return {n: self.features(n, **config) for n in self.saes}
        name = self._name(name)
        cfg = self.feature_config(**config)
        return compute_features(self.store, self.saes[name], self.features_dir(name, cfg), cfg, model=self.model)

    def explanations(self, results: FeatureResults | Mapping[str, FeatureResults] | None = None, *,
                     name: str | None = None) -> ExplanationSet | dict[str, ExplanationSet]:
        """Offline explanations (:class:`workbench.analysis.explain.TokenExplainer`) of every alive feature, cached
        as ``explanations.json`` in the folder of the feature results they come from (recomputed when the cached
        ones belong to another SAE). ``results``: one SAE's (``name``, default the only SAE), a dict name ->
        results (gives a dict), or None for :meth:`features` with the study's settings."""
        results = self.features(name) if results is None else results
        if isinstance(results, Mapping):
            return {n: self._explanations(self._name(n), r) for n, r in results.items()}
        return self._explanations(self._name(name), results)

    def _explanations(self, name: str, results: FeatureResults) -> ExplanationSet:
        path = self.features_dir(name, results.meta.get("config", {})) / "explanations.json"
        return cached_explanations(path, {"sae_fingerprint": results.meta.get("sae_fingerprint")},
                                   lambda: explain_features(results))

    def bundle(self, name: str | None = None, *, explained: bool = True, **config) -> AnalysisBundle:
        """SAE ``name`` with its store, its feature results (:meth:`features` with ``config``), its explanations
        (:meth:`explanations`; ``explained=False`` leaves them out) and the model, as one
        :class:`~workbench.analysis.bundle.AnalysisBundle` for the scorer, the scorecard, the report and export."""
        name = self._name(name)
        results = self.features(name, **config)
        expl = self._explanations(name, results) if explained else None
        return AnalysisBundle(self.saes[name], self.store, results, expl, model=self.model)

    # ----- training metrics and held-out activations -----

    def metrics(self) -> dict[str, dict]:
        """Each SAE's last training metrics (explained variance, L0, dead fraction...) from ``summary.json``."""
        runs = json.loads((self.run_dir / "summary.json").read_text())["runs"]
        return {name: runs[name] for name in self.saes}

    def heldout(self, batch_size: int = 4096) -> Iterable[Tensor]:
        """The held-out activation batches of the store (never seen in training)."""
        return self.source.heldout_batches(min(batch_size, max(1, self.source.holdout_tokens)))


# the names the notebooks knew them by, before standard and nested SAEs became one type
StandardSAE = StudySAEs
NestedSAEs = StudySAEs


# ----------------------------------------------------------------------------------------------------------------
# The standard store and training plan
# ----------------------------------------------------------------------------------------------------------------


def standard_harvest_spec(model_name: str, profile: Profile, *, hook: str | None = None, corpus=None,
                          tokenizer=None) -> HarvestSpec:
    """The :class:`~workbench.data.harvest.HarvestSpec` of the standard store: the wiki corpus (train split), the
    middle layer. A profile without ``n_tokens`` harvests the whole corpus, counted with ``tokenizer``."""
    spec = HarvestSpec(model=model_name, n_tokens=profile.n_tokens or 1, corpus=corpus or CorpusSpec(source="wiki"),
                       hooks=(hook,) if hook else ())
    if profile.n_tokens is None:
        if tokenizer is None:
            raise ValueError(f"the {profile.name!r} profile harvests the whole corpus: pass the model's tokenizer to "
                             f"count it")
        spec = replace(spec, n_tokens=whole_corpus_tokens(spec.corpus, tokenizer, spec.context_size, spec.prepend_bos,
                                                          cache=cache_dir("corpus")))
    return spec


def standard_training(profile: Profile, store: StoreLike, architecture: str = "topk") -> tuple[list[RunSpec],
                      TrainConfig]:
    """``(specs, config)`` of the standard SAE: ``profile.epochs`` passes over ``store`` minus the held-out tokens."""
    bs = profile.batch_size
    n_train = (store.n_tokens - store.n_contexts - profile.holdout_tokens) // bs * bs  # BOS tokens are excluded
    if n_train <= 0:
        raise ValueError(f"the store holds {store.n_tokens} tokens, too few for {profile.holdout_tokens} held-out "
                         f"tokens and one batch of {bs}: raise n_tokens")
    config = TrainConfig(total_tokens=n_train, epochs=profile.epochs, batch_size=bs,
                         checkpoint_every=profile.checkpoint_every)
    return [RunSpec(architecture, profile.d_sae, k=profile.k)], config


def runs_base(model_name: str, profile: Profile) -> Path:
    """The folder under which the standard runs of ``model_name`` live (each in a config-keyed ``sae-<hash>``)."""
    return cache_dir("runs") / f"{model_name.replace('/', '--')}-{profile.name}"


def _profile(profile: Profile | str | None, overrides: Mapping[str, Any]) -> Profile:
    prof = profile if isinstance(profile, Profile) else current_profile(profile)
    return replace(prof, **overrides) if overrides else prof


def _standard_inputs(model_name: str, prof: Profile, model: ModelLike | None, hook: str | None, corpus):
    """The model, the profile's standard store (harvested or cached) and its training source."""
    model = model if model is not None else load_model(model_name)
    spec = standard_harvest_spec(model_name, prof, hook=hook, corpus=corpus, tokenizer=model.tokenizer)
    store = harvest_cached(spec, model=model)
    return model, store, StoreSource(store.path, holdout_tokens=prof.holdout_tokens)


def standard_sae(model_name: str = "gemma-3-270m", *, profile: Profile | str | None = None,
                 model: ModelLike | None = None,
                 architecture: str = "topk", hook: str | None = None, corpus=None, **overrides) -> StudySAEs:
    """Load ``model_name``, harvest its store and train (or reuse) a ``architecture`` SAE of the profile's size.

    ``overrides`` replace profile fields (``n_tokens=65_536``, ``d_sae=2048``...). A rerun with the same settings
    loads everything from the cache; a changed setting trains a fresh SAE next to the old one. The default feature
    pass covers the first 3/4 of the store (see :class:`StudySAEs`).
    """
    prof = _profile(profile, overrides)
    model, store, source = _standard_inputs(model_name, prof, model, hook, corpus)
    specs, config = standard_training(prof, store, architecture)
    run_dir = training_dir(runs_base(model_name, prof), specs, config, source)
    trained = train(specs, config, source, run_dir, progress=prof.progress)
    return StudySAEs(model=model, store=store, source=source, saes={n: r.sae for n, r in trained.runs.items()},
                     run_dir=run_dir, profile=prof, feature_tokens=analysis_tokens(store.n_tokens))


# ----------------------------------------------------------------------------------------------------------------
# Nested dictionary sizes on identical activations
# ----------------------------------------------------------------------------------------------------------------


def default_sizes(profile: Profile) -> tuple[int, ...]:
    """Dictionary sizes of a profile: smoke 256/512/1024 (CI-sized), full 1024/4096/16384 (x4 steps)."""
    return (256, 512, 1024) if profile.smoke else (1024, 4096, 16384)


# Smoke: the standard store's ~14k training tokens make 55 steps at the profile's batch of 256, too few to move
# decoder rows away from their random initialisation (measured: the median best cosine between sizes stayed at the
# random-init level, 0.14, and no latent refined another). Batches of 64 at twice the default learning rate
# (220 steps) give the smoke SAEs real shared directions to match.
SMOKE_BATCH_SIZE = 64
SMOKE_LR_SCALE = 2.0


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2:
        raise ValueError(f"feature splitting needs at least two dictionary sizes, got {sizes}")
    if any(s < 1 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"dictionary sizes must be distinct positive integers, got {sizes}")
    return tuple(sorted(sizes))


def train_nested(source, sizes: Sequence[int], config: TrainConfig, out_base: str | Path, *,
                 architecture: str = "topk", k: float = 32, lr_scale: float = 1.0, progress: bool = True,
                 **spec_options) -> tuple[dict[str, SAE], Path]:
    """Train one SAE per size in ``sizes`` on one pass over ``source`` (identical batches for every size).

    ``lr_scale`` multiplies each size's default learning rate (:func:`workbench.sae.train.default_lr`);
    ``spec_options`` go to every :class:`~workbench.sae.train.RunSpec`. The run folder is
    ``workbench.sae.train.training_dir(out_base, ...)``, keyed by every setting, so a rerun with the same settings
    loads the trained SAEs. Returns ({name: SAE} ordered from the smallest size, run folder)."""
    sizes = _check_sizes(sizes)
    if lr_scale <= 0:
        raise ValueError(f"lr_scale must be positive, got {lr_scale}")
    if lr_scale != 1.0 and "lr" in spec_options:
        raise ValueError("give either lr (one rate for every size) or lr_scale (a multiple of each size's default)")
    def options(size: int) -> dict[str, Any]:
        return {**spec_options, **({"lr": lr_scale * default_lr(architecture, size)} if lr_scale != 1.0 else {})}

    specs = [RunSpec(architecture, s, k=k, **options(s)) for s in sizes]
    run_dir = training_dir(out_base, specs, config, source)
    trained = train(specs, config, source, run_dir, progress=progress)
    return {s.resolved_name: trained.runs[s.resolved_name].sae for s in specs}, run_dir


def nested_saes(model_name: str = "gemma-3-270m", *, sizes: Sequence[int] | None = None,
                profile: Profile | str | None = None, model: ModelLike | None = None, architecture: str = "topk",
                lr_scale: float | None = None, hook: str | None = None, corpus=None, **overrides) -> StudySAEs:
    """Nested dictionary sizes on the profile's standard store, trained in one pass (cached).

    Like :func:`standard_sae` (same store, same held-out tokens, same run folder ``<cache>/runs/<model>-<profile>``),
    but with one SAE per size (default :func:`default_sizes`). ``overrides`` replace profile fields (``n_tokens``,
    ``holdout_tokens``, ``batch_size``, ``k``...). In the smoke profile the batch size and ``lr_scale`` default to
    ``SMOKE_BATCH_SIZE`` and ``SMOKE_LR_SCALE`` (see their comment). The default feature pass covers the whole
    store."""
    prof = _profile(profile, {})
    if prof.smoke:
        overrides = {"batch_size": SMOKE_BATCH_SIZE, **overrides}
        lr_scale = SMOKE_LR_SCALE if lr_scale is None else lr_scale
    prof = _profile(prof, overrides)
    sizes = _check_sizes(sizes or default_sizes(prof))
    model, store, source = _standard_inputs(model_name, prof, model, hook, corpus)
    _, config = standard_training(prof, store, architecture)  # one epoch over the store minus the held-out tokens
    saes, run_dir = train_nested(source, sizes, config, runs_base(model_name, prof), architecture=architecture,
                                 k=prof.k, lr_scale=1.0 if lr_scale is None else lr_scale, progress=prof.progress)
    return StudySAEs(model=model, store=store, source=source, saes=saes, run_dir=run_dir, profile=prof)
