"""Run profiles and the standard SAE every case-study notebook starts from.

A profile fixes the sizes a notebook uses: ``smoke`` keeps CI runs to minutes (a tiny, barely trained SAE),
``full`` is a usable SAE (hours on a CPU, minutes on a GPU). ``WORKBENCH_PROFILE`` picks one (default ``full``).

:func:`standard_sae` returns the model, its activation store, the training source (with held-out tokens) and a
TopK SAE on the middle-layer residual stream, each cached under ``WORKBENCH_HOME``, so notebooks share them
instead of each repeating the harvest → train cell.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

PROFILE_ENV = "WORKBENCH_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Sizes for one kind of run."""

    name: str = "full"
    n_tokens: int = 2_000_000        # tokens harvested into the standard store
    holdout_tokens: int = 65_536     # kept out of training, for evaluation
    batch_size: int = 4096
    d_sae: int = 8192
    k: int = 32
    progress: bool = True            # tqdm bars (off in CI logs)

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", n_tokens=16_384, holdout_tokens=2_048, batch_size=256, d_sae=1024, k=16,
                     progress=False),
    "full": Profile("full"),
}


def current_profile(name: str | None = None) -> Profile:
    """The profile named ``name``, else by ``$WORKBENCH_PROFILE``, else ``full``."""
    name = name or os.environ.get(PROFILE_ENV) or "full"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (from ${PROFILE_ENV} or the argument): choose one of "
                         f"{', '.join(PROFILES)}")
    return PROFILES[name]


@dataclass
class StandardSAE:
    """What :func:`standard_sae` prepared; every part is cached on disk."""

    model: object            # HookedTransformer
    store: object            # workbench.data.store.ActivationStore
    source: object           # workbench.sae.train.StoreSource (first ``holdout_tokens`` held out)
    sae: object              # workbench.sae.model.SAE
    run_dir: Path            # this SAE's training folder; put its analyses (features...) under it
    profile: Profile

    @property
    def hook(self) -> str:
        return self.source.hook

    def features(self, **config):
        """The feature analysis (:func:`workbench.analysis.features.compute_features`) of this SAE over the first 3/4 of the
        store's tokens, cached in ``run_dir/features``; the last quarter stays held out for scoring explanations
        (:func:`workbench.analysis.explain.heldout_contexts`). ``config`` overrides :class:`FeatureConfig` fields."""
        from workbench.analysis.features import FeatureConfig, compute_features

        settings = {"max_tokens": self.store.n_tokens * 3 // 4, "progress": self.profile.progress, **config}
        return compute_features(self.store, self.sae, self.run_dir / "features", FeatureConfig(**settings),
                                model=self.model)


def standard_harvest_spec(model_name: str, profile: Profile, *, hook: str | None = None, corpus=None):
    """The :class:`~workbench.data.harvest.HarvestSpec` of the standard store: the wiki corpus, the middle layer."""
    from workbench.data.corpus import CorpusSpec
    from workbench.data.harvest import HarvestSpec

    return HarvestSpec(model=model_name, n_tokens=profile.n_tokens, corpus=corpus or CorpusSpec(source="wiki"),
                       hooks=(hook,) if hook else ())


def standard_training(profile: Profile, store, architecture: str = "topk"):
    """``(specs, config)`` of the standard SAE: one epoch over ``store`` minus the held-out tokens."""
    from workbench.sae.train import RunSpec, TrainConfig

    bs = profile.batch_size
    n_train = (store.n_tokens - store.n_contexts - profile.holdout_tokens) // bs * bs  # BOS tokens are excluded
    if n_train <= 0:
        raise ValueError(f"the store holds {store.n_tokens} tokens, too few for {profile.holdout_tokens} held-out "
                         f"tokens and one batch of {bs}: raise n_tokens")
    return [RunSpec(architecture, profile.d_sae, k=profile.k)], TrainConfig(total_tokens=n_train, batch_size=bs,
                                                                             checkpoint_every=0)


def runs_base(model_name: str, profile: Profile) -> Path:
    """The folder under which the standard runs of ``model_name`` live (each in a config-keyed ``sae-<hash>``)."""
    from workbench.core.home import cache_dir

    return cache_dir("runs") / f"{model_name.replace('/', '--')}-{profile.name}"


def standard_sae(model_name: str = "gemma-3-270m", *, profile: Profile | str | None = None, model=None,
                 architecture: str = "topk", hook: str | None = None, corpus=None, **overrides) -> StandardSAE:
    """Load ``model_name``, harvest its store and train (or reuse) a ``architecture`` SAE of the profile's size.

    ``overrides`` replace profile fields (``n_tokens=65_536``, ``d_sae=2048``...). A rerun with the same settings
    loads everything from the cache; a changed setting trains a fresh SAE next to the old one.
    """
    from workbench.data.harvest import harvest_cached
    from workbench.data.models import load_model
    from workbench.sae.train import StoreSource, train, training_dir

    prof = profile if isinstance(profile, Profile) else current_profile(profile)
    prof = replace(prof, **overrides) if overrides else prof
    model = model if model is not None else load_model(model_name)
    store = harvest_cached(standard_harvest_spec(model_name, prof, hook=hook, corpus=corpus), model=model)
    source = StoreSource(store.path, holdout_tokens=prof.holdout_tokens)
    specs, config = standard_training(prof, store, architecture)
    run_dir = training_dir(runs_base(model_name, prof), specs, config, source)
    trained = train(specs, config, source, run_dir, progress=prof.progress)
    sae = next(iter(trained.runs.values())).sae
    return StandardSAE(model=model, store=store, source=source, sae=sae, run_dir=run_dir, profile=prof)
