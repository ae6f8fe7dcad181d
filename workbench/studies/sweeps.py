"""The scaling-law sweep: the grid of each run profile, and training + evaluating it.

    from workbench.studies.sweeps import run_sweep, sweep_config
    results = run_sweep(StoreSource(store.path, holdout_tokens=65_536), sweep_config(), "runs/scaling")
    fits = results.fits()            # workbench.analysis.scaling.ScalingResults: the frontier and its fits

How the runs are trained: **one** :func:`workbench.sae.train.train` **call per step count**, each training every
dictionary size from one stream of batches (the multi-SAE trainer reads each batch once and steps every SAE on it).
Why not checkpoints of one long run: the trainer's learning rate decays to 0 over the last 20% of a run's *own*
steps and the sparsity warm-up is a fraction of it too, so an intermediate checkpoint of a longer run is not a
finished run of that length (its loss is biased upwards by the undecayed learning rate, more so for the shorter
runs, which would tilt the fitted exponents). Separate calls give every run its complete schedule; because every
call reads the same seeded stream, the T-step run sees exactly the first T batches of the 2T-step run. The price is
``sum(steps)``, under twice the longest run for a ratio-2 grid. Each call's folder is keyed by its configuration
(:func:`workbench.sae.train.training_dir`), so a rerun reuses the trained SAEs.

Every SAE is then evaluated on the same held-out tokens (``StoreSource(holdout_tokens=...)``): FVU, MSE, L0 and
the fraction of latents that never fire on them (dead; the window is the held-out token count, reported). The
results and their analyses (compute-optimal frontier, power-law fits) are :mod:`workbench.analysis.scaling`.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from workbench.analysis.scaling import RESULTS_FILE, ScalingConfig, ScalingResults, ScalingRun, training_compute
from workbench.core.hardware import torch_threads
from workbench.sae.evaluate import evaluate_activations
from workbench.sae.train import RunSpec, TrainConfig, train, training_dir
from workbench.studies.profile import Profile, current_profile

__all__ = ["SWEEPS", "run_sweep", "sweep_config"]

# Grids per run profile (workbench.studies.profile).
# smoke: the 16k-token smoke store (14k training tokens): 4 sizes x 5 step counts at batch 32, ~40 s of CPU.
# full: the 2M-token standard store: 5 sizes x 5 step counts at batch 2048 (up to 1.9M tokens), 1.2e11
# feature-tokens of training: 4 to 8 hours on one thread of this 2-core CPU, which trained 4e6 to 7e6
# feature-tokens/s in the sweeps measured here (minutes on one GPU).
SWEEPS: dict[str, ScalingConfig] = {
    "smoke": ScalingConfig(d_sae=(64, 128, 256, 512), steps=(24, 48, 96, 192, 384), batch_size=32, k=16),
    "full": ScalingConfig(d_sae=(1024, 2048, 4096, 8192, 16384), steps=(58, 116, 232, 464, 928), batch_size=2048,
                          k=32),
}


def sweep_config(profile: Profile | str | None = None, **overrides) -> ScalingConfig:
    """The grid for a run profile (a :class:`~workbench.studies.profile.Profile`, its name, or None for the current
    one); ``overrides`` replace :class:`~workbench.analysis.scaling.ScalingConfig` fields."""
    name = profile.name if isinstance(profile, Profile) else current_profile(profile).name
    base = SWEEPS.get(name, SWEEPS["full"])
    return replace(base, **overrides) if overrides else base


def _run_specs(config: ScalingConfig) -> list[RunSpec]:
    return [RunSpec(config.architecture, d, k=config.k, l1_coefficient=config.l1_coefficient, lr=config.lr,
                    name=f"{config.architecture}-{d}") for d in config.d_sae]


def _train_and_evaluate(source, config: ScalingConfig, specs: list[RunSpec], steps: int, out_dir: Path,
                        eval_tokens: int, d_in: int) -> list[ScalingRun]:
    """One train() call: every size for ``steps`` steps from one stream of batches, then the held-out metrics."""
    tc = TrainConfig(total_tokens=steps * config.batch_size, batch_size=config.batch_size, seed=config.seed,
                     checkpoint_every=0, device=config.device, log_every=max(1, min(10, steps // 4)))
    trained = train(specs, tc, source, training_dir(out_dir / "runs", specs, tc, source), progress=False)
    out = []
    for spec in specs:
        r = trained.runs[spec.resolved_name]
        m = evaluate_activations(r.sae, source.heldout_batches(config.batch_size), max_tokens=eval_tokens)
        out.append(ScalingRun(
            name=f"{spec.resolved_name}-s{steps}", d_sae=int(spec.d_sae), steps=int(steps),
            batch_size=config.batch_size, tokens=trained.tokens,
            compute=float(training_compute(d_in, spec.d_sae, trained.tokens)), fvu=float(m.fvu), mse=float(m.mse),
            l0=float(m.l0), dead_fraction=float(m.dead_fraction), eval_tokens=m.n_tokens,
            dead_fraction_train=float(r.metrics.get("dead_fraction", math.nan)),
            dead_window_tokens=int(trained.dead_window_tokens), train_loss=float(r.metrics.get("loss", math.nan)),
            path=str(r.path)))
    return out


def _check_source(source, config: ScalingConfig) -> int:
    """The held-out tokens to evaluate on; ValueError when the source cannot hold the grid."""
    if not hasattr(source, "heldout_batches") or not getattr(source, "holdout_tokens", 0):
        raise ValueError("the sweep evaluates every SAE on held-out tokens: give a source with held-out tokens, e.g. "
                         "StoreSource(store.path, holdout_tokens=65_536)")
    eval_tokens = int(config.eval_tokens or source.holdout_tokens)
    if eval_tokens > source.holdout_tokens:
        raise ValueError(f"eval_tokens={eval_tokens} exceeds the source's {source.holdout_tokens} held-out tokens: "
                         f"lower eval_tokens or raise holdout_tokens")
    if eval_tokens < config.batch_size:
        raise ValueError(f"the source holds out {eval_tokens} tokens, less than one batch of {config.batch_size}: "
                         f"raise holdout_tokens")
    available = getattr(getattr(source, "store", None), "n_rows", None)
    if callable(available):
        n_train = available(source.exclude_bos) - source.holdout_tokens
        if config.max_tokens > n_train:
            raise ValueError(f"the longest run needs {config.max_tokens} tokens ({max(config.steps)} steps x "
                             f"{config.batch_size}) but the source has {n_train} training tokens after the held-out "
                             f"ones: lower steps / batch_size or harvest more tokens")
    return eval_tokens


def run_sweep(source, config: ScalingConfig | None = None, out_dir: str | Path = "runs/scaling", *,
              progress: bool = True, overwrite: bool = False, threads: int | None = None) -> ScalingResults:
    """Train and evaluate the grid of ``config`` on ``source`` (a :class:`workbench.sae.train.StoreSource` with
    held-out tokens, or any batch source with ``heldout_batches``); save ``out_dir/scaling.json`` and return the
    results.

    A saved result for the same grid and source is loaded instead (``overwrite=True`` recomputes the evaluation;
    trained SAEs are always reused from their configuration-keyed folders). ``threads``: torch CPU threads while
    training and evaluating (None: torch's setting); 1 is fastest for small SAEs on a busy 2-core machine, where
    OpenMP barriers make small ops several times slower with 2 threads."""
    config = config or ScalingConfig()
    out_dir = Path(out_dir)
    results_path = out_dir / RESULTS_FILE
    eval_tokens = _check_source(source, config)
    if results_path.is_file() and not overwrite:
        old = ScalingResults.load(results_path)
        if old.config == config and old.source == source.describe():
            return old

    t0 = time.perf_counter()
    specs = _run_specs(config)
    runs: list[ScalingRun] = []
    d_in = int(source.d_model)
    bar = tqdm(total=len(config.steps), desc="scaling sweep", unit="step count", disable=not progress)
    try:
        with torch_threads(threads):
            for steps in sorted(config.steps):
                runs += _train_and_evaluate(source, config, specs, steps, out_dir, eval_tokens, d_in)
                bar.update(1)
    finally:
        bar.close()
    results = ScalingResults(config=config, runs=runs, d_in=d_in, source=source.describe(),
                             seconds=time.perf_counter() - t0)
    results.save(results_path)
    return results
