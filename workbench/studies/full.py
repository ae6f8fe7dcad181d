"""The whole-corpus profile behind ``make full``: the ``full`` study SAE (every training-split token of the embedded
wiki, a 16,384-latent TopK over several epochs), evaluated, analysed and scored, with a report.

Every step is cached under ``WORKBENCH_HOME`` and resumable: the harvest by shard, training by checkpoint, the
feature pass by shard of sparse codes, explanations and the scorecard by file. Once built, notebooks run with
``WORKBENCH_PROFILE=full`` (or with the profile unset) load this SAE instead of training their own.

    workbench full --out runs/full          # ~1 hour on 2 CPU cores; progress bars with ETAs
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from workbench.analysis.features import FeatureResults
from workbench.analysis.scorecard import ScorecardConfig
from workbench.core.persist import atomic_write_text
from workbench.core.timing import StepTimer
from workbench.data.corpus import CorpusSpec, corpus_stats
from workbench.data.harvest import HarvestSpec, harvest_cached
from workbench.data.models import DEFAULT_MODEL, load_model
from workbench.report.page import write_report
from workbench.sae.evaluate import downstream_metrics, evaluate_activations
from workbench.studies.profile import current_profile, standard_harvest_spec, standard_sae
from workbench.studies.readability import (cached_concept_probing, cached_neuron_correlations, cached_scorecard,
                                           probing_section, scored_explanations)

__all__ = ["run_full"]

HELDOUT_TOKENS = 65_536  # held-out-split text: explanation scores, the scorecard, CE/KL with the SAE spliced in
DOWNSTREAM_CONTEXTS = 32


def _trained_tokens(run_dir: Path) -> int | None:
    try:
        return int(json.loads((Path(run_dir) / "summary.json").read_text())["tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_full(out: str | Path = "runs/full", model_name: str = DEFAULT_MODEL, *, profile: str = "full",
             scorecard_units: int = 256) -> dict:
    """Build (or load) the profile's study SAE and write ``out/summary.json`` and ``out/report.html``; returns the
    summary (per-step seconds in ``times_s``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prof = current_profile(profile)
    timer = StepTimer(announce="[full]")
    lap = timer.lap
    model = load_model(model_name)
    lap("model_load")
    stats = corpus_stats(CorpusSpec(source="wiki", split="train"), model.tokenizer)
    lap("corpus_count")
    harvest_cached(standard_harvest_spec(model_name, prof, tokenizer=model.tokenizer), model=model)
    lap("harvest")
    study = standard_sae(model_name, profile=prof, model=model)  # finds the store just harvested; trains (resumable)
    lap("train")
    sae, store = study.sae, study.store
    heldout = harvest_cached(HarvestSpec(model=model_name, n_tokens=HELDOUT_TOKENS,
                                         corpus=CorpusSpec(source="wiki", split="heldout")), model=model)
    lap("heldout_harvest")
    metrics = evaluate_activations(sae, study.heldout(4096)).to_dict()
    tokens = torch.from_numpy(heldout.token_ids()[:DOWNSTREAM_CONTEXTS].astype("int64"))
    metrics.update({f"downstream_{k}": v for k, v in downstream_metrics(model, sae, tokens).to_dict().items()})
    lap("evaluate")
    results = study.features()
    assert isinstance(results, FeatureResults)  # the standard study holds one SAE
    lap("features")
    folder = study.features_dir()
    explanations = scored_explanations(results, sae, heldout, folder, progress=prof.progress)
    card = cached_scorecard(results, store, sae, model, heldout, folder,
                            ScorecardConfig(n_units=scorecard_units, seed=0))
    lap("scorecard")
    probing = cached_concept_probing(model, sae, folder)
    neurons = cached_neuron_correlations(model, sae, heldout, folder)
    lap("concept_probing")
    report = write_report(out / "report.html", results, metrics, explanations=explanations, scorecard=card,
                          tokenizer=model.tokenizer, title=f"{model_name} · {study.hook} · {prof.name} profile",
                          store=store, probing=probing_section(probing, neurons),
                          concept_scores=probing.feature_scores)
    lap("report")
    times = timer.finish()
    summary = {"model": model_name, "profile": prof.name, "run_dir": str(study.run_dir), "store": str(store.path),
               "store_tokens": store.n_tokens, "corpus": stats["languages"], "times_s": times,
               "training": study.metrics(), "training_tokens": _trained_tokens(study.run_dir),
               "sae_metrics": {k: v for k, v in metrics.items() if k != "log10_density_histogram"},
               "scorecard": card.summary(), "concept_probing": probing.summary(),
               "features_vs_neurons": neurons.summary(), "report": str(report)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
    print("\n== SAE ==\n" + json.dumps(summary["sae_metrics"], indent=1))
    print("\n== concept probing (held-out articles, balanced accuracy) ==\n" + probing.format_table())
    print(f"\n== features vs neurons: {neurons.fraction_below():.0%} of features have a best |r| <= 0.3 ==")
    print("\n== explainer F1 (token predictability) ==\n" + card.format_table())
    print("\n== time per step (s) ==\n" + timer.line())
    print(f"\nReport: {Path(report).resolve()}")
    return summary
