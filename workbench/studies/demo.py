"""The main job behind ``make demo``: embedded model -> Wikipedia activations -> SAE -> features -> report.

Every step is cached or resumable, so a second ``make demo`` only re-prints the summary.

Where the minutes go: harvesting activations runs at about 1.4k tokens/s on 2 CPU cores, training at 15-29k, so
the demo harvests a moderate store once and trains several epochs over it (each reshuffled, the held-out head of
the store never trained on) with small batches: many more optimisation steps per harvested token. ``summary.json``
records the seconds each step took (``times_s``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any
from pathlib import Path

import torch

from workbench.core.protocols import ModelLike, StoreLike
from workbench.analysis.concept_probing import ProbeConfig
from workbench.analysis.features import FeatureConfig, FeatureResults, compute_features, sae_fingerprint
from workbench.analysis.scorecard import ScorecardConfig
from workbench.core.cache import cached
from workbench.core.persist import atomic_write_text, read_tagged_json, write_tagged_json
from workbench.core.timing import StepTimer
from workbench.data.corpus import CorpusSpec
from workbench.data.harvest import HarvestSpec, harvest
from workbench.data.models import DEFAULT_MODEL, load_model
from workbench.report.page import write_report
from workbench.sae.evaluate import downstream_metrics, evaluate_activations
from workbench.data.store_reader import ActivationStore
from workbench.sae.io import load_sae
from workbench.sae.model import SAE
from workbench.sae.train import RunSpec, StoreSource, TrainConfig, train, training_dir
from workbench.studies.readability import (cached_concept_probing, cached_neuron_correlations, cached_scorecard,
                                           probing_section, scored_explanations)


@dataclass
class DemoConfig:
    """Budgets of the demo; the defaults take under 10 minutes on 2 quiet CPU cores, model conversion included."""

    out: str = "runs/demo"
    model: str = DEFAULT_MODEL
    n_tokens: int = 200_000  # harvested tokens (wiki, train split); the store's first holdout_tokens are held out
    holdout_tokens: int = 16_384  # held-out activations: EV / L0 of the SAE, and its FVU at every epoch end
    heldout_text_tokens: int = 16_384  # held-out text (the corpus' heldout split): spliced-model metrics, explanation scores
    downstream_contexts: int = 16  # of those, the contexts (of 128 tokens) run with the SAE spliced in (3 passes each)
    d_sae: int = 4096
    k: int = 32
    epochs: int = 10  # passes over the store's training tokens
    batch_size: int = 1024
    lr: float | None = None  # None: the TopK default, 2e-4 / sqrt(d_sae / 2^14)
    seed: int = 0
    report_features: int = 12
    scorecard_units: int = 80  # features (and as many neurons and random directions) the explainer-F1 row explains
    probing: ProbeConfig = field(default_factory=lambda: ProbeConfig(train_per_topic=30, test_per_topic=20,
                                                                     max_tokens=48))  # topic probes
    neuron_contexts: int = 32  # held-out contexts for each feature's best |r| with a neuron of the preceding MLP


@dataclass
class Harvested:
    """The harvest step's result: the training store, the held-out-text store, and what the summary prints."""

    store: ActivationStore
    heldout: ActivationStore
    summary: dict


@dataclass
class Trained:
    """The training step's result: the SAE, its folder, the token source it was trained from, each epoch's FVU."""

    sae: SAE
    sae_dir: Path
    source: StoreSource
    epochs: list[dict]
    training: dict


def _harvest_step(cfg: DemoConfig, model: ModelLike) -> Harvested:
    out = Path(cfg.out)
    store = harvest(HarvestSpec(model=cfg.model, n_tokens=cfg.n_tokens, corpus=CorpusSpec(source="wiki")),
                    out / "store", model=model)
    heldout = harvest(
        HarvestSpec(model=cfg.model, n_tokens=cfg.heldout_text_tokens, corpus=CorpusSpec(source="wiki", split="heldout")),
        out / "heldout_store", model=model,
    )
    return Harvested(store, heldout, {
        "store": str(store.path),
        "hook": store.hooks[0],
        "n_tokens": store.n_tokens,
        "harvest_tokens_per_s": store.manifest.get("extra", {}).get("tokens_per_second"),
        "store_size_mb": round(store.summary()["size_bytes"] / 2**20, 1),
        "activation_norms": store.norm_stats(max_tokens=50_000),
    })


def _train_step(cfg: DemoConfig, store: StoreLike) -> Trained:
    out = Path(cfg.out) / "sae"
    source = StoreSource(store.path, seed=cfg.seed, holdout_tokens=cfg.holdout_tokens)
    spec = RunSpec("topk", cfg.d_sae, k=cfg.k, lr=cfg.lr)
    per_epoch = source.n_train_tokens // cfg.batch_size * cfg.batch_size  # one epoch: every training token once
    train_cfg = TrainConfig(total_tokens=per_epoch, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                            heldout_eval_tokens=cfg.holdout_tokens, log_every=20, checkpoint_every=500)
    result = train([spec], train_cfg, source, training_dir(out, [spec], train_cfg, source))
    run = next(iter(result.runs.values()))
    rate = run.metrics.get("tokens_per_s")  # of the run that trained it (a rerun resumes at the end: no steps)
    return Trained(load_sae(run.path), Path(run.path), source, run.epochs,
                   {"tokens": result.tokens, "epochs": cfg.epochs, "tokens_per_epoch": per_epoch,
                    "steps": result.steps, "batch_size": cfg.batch_size, "lr": spec.resolved_lr,
                    "tokens_per_s": round(rate, 1) if rate else None})


_EVALUATION_FORMAT, _EVALUATION_VERSION = "workbench.demo-evaluation", 1


def _save_evaluation(metrics: dict, path: Path) -> None:
    write_tagged_json(path, {"metrics": metrics}, format=_EVALUATION_FORMAT, format_version=_EVALUATION_VERSION,
                      indent=1)


def _load_evaluation(path: Path) -> dict:
    return dict(read_tagged_json(path, format=_EVALUATION_FORMAT, what="a demo evaluation", fix="it is recomputed",
                                 max_version=_EVALUATION_VERSION)["metrics"])


def _evaluate_step(cfg: DemoConfig, trained: Trained, heldout, model: ModelLike) -> dict:
    """EV / L0 on the store's held-out activations and CE / KL with the SAE spliced in on held-out text; kept in
    ``evaluation.json`` beside the SAE, so a rerun of the same demo does not pay for the model passes again."""
    sae, source = trained.sae, trained.source
    key = {"sae": str(trained.sae_dir.resolve()), "sae_fingerprint": sae_fingerprint(sae),
           "holdout": source.describe(), "heldout_store": str(Path(heldout.path).resolve()),
           "downstream_contexts": cfg.downstream_contexts,
           "downstream": "saebench"}  # SAEBench's ce_loss_score (zero-ablation of every position)

    def compute() -> dict:
        metrics = evaluate_activations(sae, source.heldout_batches(4096)).to_dict()
        metrics["train_tokens_per_s"] = trained.training["tokens_per_s"]
        tokens = torch.from_numpy(heldout.token_ids()[:cfg.downstream_contexts].astype("int64"))
        down = downstream_metrics(model, sae, tokens)
        metrics.update({f"downstream_{k}": v for k, v in down.to_dict().items()})
        return metrics

    return cached(trained.sae_dir.parent / "evaluation.json", key, compute, load=_load_evaluation,
                  save=_save_evaluation)


def _epoch_lines(epochs: list[dict]) -> list[str]:
    return [f"  epoch {e['epoch']:>2}/{e['epochs']}: held-out FVU {e.get('heldout_fvu', float('nan')):.4f}  "
            f"train FVU {e.get('train_fvu', float('nan')):.4f}" for e in epochs]


def run_demo(out: str | Path = "runs/demo", n_tokens: int | None = None, model_name: str = DEFAULT_MODEL,
             config: DemoConfig | None = None) -> dict:
    """Run the whole pipeline into ``out`` and print where the report is."""
    sized: dict[str, Any] = {"n_tokens": int(n_tokens)} if n_tokens is not None else {}
    cfg = config or DemoConfig(out=str(out), model=model_name, **sized)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timer = StepTimer()
    lap, times = timer.lap, timer.times
    model = load_model(cfg.model)
    lap("model_load")
    summary: dict = {"model": cfg.model, "settings": asdict(cfg), "times_s": times}

    harvested = _harvest_step(cfg, model)
    lap("harvest")
    summary.update(harvested.summary)
    print("\n== harvest ==\n" + json.dumps(harvested.summary, indent=1), flush=True)

    trained = _train_step(cfg, harvested.store)
    lap("train")
    summary["sae"] = str(trained.sae_dir)
    summary["training"] = {**trained.training, "per_epoch": trained.epochs}
    print("\n== training: FVU at each epoch end ==\n" + "\n".join(_epoch_lines(trained.epochs)), flush=True)

    metrics = _evaluate_step(cfg, trained, harvested.heldout, model)
    lap("evaluate")
    summary["sae_metrics"] = {k: v for k, v in metrics.items() if k != "log10_density_histogram"}
    print("\n== SAE (held-out activations; spliced into the model on held-out text) ==\n"
          + json.dumps(summary["sae_metrics"], indent=1), flush=True)

    results = _features_step(cfg, harvested.store, trained, model)
    lap("features")
    explanations, card = _scorecard_step(cfg, harvested.store, harvested.heldout, results, trained, model)
    lap("scorecard")
    summary["scorecard"] = card.summary()
    probing, neurons = _probing_step(cfg, trained, harvested.heldout, model)
    lap("concept_probing")
    summary["concept_probing"] = probing.summary()
    summary["features_vs_neurons"] = neurons.summary()
    print("\n== concept probing: balanced accuracy of k-unit topic probes on held-out articles ==\n"
          + probing.format_table(), flush=True)
    print(f"\n== features vs neurons: {neurons.fraction_below():.0%} of features have a best |r| <= 0.3 with any "
          f"neuron of the preceding MLP (Scaling Monosemanticity: 82%) ==", flush=True)
    print("\n== explainer F1 on held-out text (token predictability: rewards single-token detectors) ==\n"
          + card.format_table(), flush=True)
    report = _report_step(cfg, harvested.store, results, explanations, card, metrics, model, probing, neurons)
    lap("report")
    timer.finish()
    summary["report"] = str(report)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
    print("\n== time per step (s) ==\n" + timer.line())
    print(f"\nReport: {report.resolve()}  (open it in a browser)")
    print("Explore interactively: make lab   (JupyterLab on notebooks/, start with 00_quickstart.ipynb)")
    return summary


def _features_step(cfg: DemoConfig, store: StoreLike, trained: Trained, model: ModelLike) -> FeatureResults:
    results = compute_features(store, trained.sae, Path(cfg.out) / "features", FeatureConfig(), model=model)
    return results


def _scorecard_step(cfg: DemoConfig, store: StoreLike, heldout, results, trained: Trained, model: ModelLike):
    folder = Path(cfg.out) / "features"
    explanations = scored_explanations(results, trained.sae, heldout, folder)
    card = cached_scorecard(results, store, trained.sae, model, heldout, folder,
                            ScorecardConfig(n_units=cfg.scorecard_units, n_train_contexts=128, n_heldout_contexts=64,
                                            seed=cfg.seed))
    return explanations, card


def _probing_step(cfg: DemoConfig, trained: Trained, heldout, model: ModelLike):
    folder = Path(cfg.out) / "features"
    probing = cached_concept_probing(model, trained.sae, folder, cfg.probing)
    neurons = cached_neuron_correlations(model, trained.sae, heldout, folder, n_contexts=cfg.neuron_contexts)
    return probing, neurons


def _report_step(cfg: DemoConfig, store: StoreLike, results, explanations, card, metrics: dict, model: ModelLike,
                 probing,
                 neurons) -> Path:
    path = Path(cfg.out) / "report.html"
    write_report(path, results, metrics, explanations=explanations, n_features=cfg.report_features,
                 title=f"{cfg.model} · {store.hooks[0]} · topk d_sae={cfg.d_sae}", scorecard=card,
                 tokenizer=model.tokenizer, store=store, probing=probing_section(probing, neurons),
                 concept_scores=probing.feature_scores)
    return path
