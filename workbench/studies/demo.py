"""The main job behind ``make demo``: embedded model -> Wikipedia activations -> SAE -> features -> report.

Every step is cached or resumable, so a second ``make demo`` only re-prints the summary.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.data.corpus import CorpusSpec
from workbench.data.harvest import HarvestSpec, harvest
from workbench.data.models import DEFAULT_MODEL, load_model


@dataclass
class DemoConfig:
    """Budgets of the demo; the defaults take a few minutes on 2 CPU cores."""

    out: str = "runs/demo"
    model: str = DEFAULT_MODEL
    n_tokens: int = 200_000  # harvested training tokens
    heldout_tokens: int = 16_384  # held-out text for the downstream (spliced-model) metrics
    d_sae: int = 4096
    k: int = 32
    report_features: int = 12


def _harvest_step(cfg: DemoConfig, model) -> dict:
    out = Path(cfg.out)
    store = harvest(HarvestSpec(model=cfg.model, n_tokens=cfg.n_tokens, corpus=CorpusSpec(source="wiki")),
                    out / "store", model=model)
    return {
        "store": store,
        "summary": {
            "store": str(store.path),
            "hook": store.hooks[0],
            "n_tokens": store.n_tokens,
            "harvest_tokens_per_s": store.manifest.get("extra", {}).get("tokens_per_second"),
            "store_size_mb": round(store.summary()["size_bytes"] / 2**20, 1),
            "activation_norms": store.norm_stats(max_tokens=50_000),
        },
    }


def _train_step(cfg: DemoConfig, store, model) -> dict:
    import torch

    from workbench.sae.evaluate import downstream_metrics, evaluate_activations
    from workbench.sae.io import load_sae
    from workbench.sae.train import RunSpec, StoreSource, TrainConfig, train, training_dir

    out = Path(cfg.out) / "sae"
    holdout = 32_768
    source = StoreSource(store.path, holdout_tokens=holdout)
    spec = RunSpec("topk", cfg.d_sae, k=cfg.k)
    train_cfg = TrainConfig(total_tokens=cfg.n_tokens - holdout - 8192)
    result = train([spec], train_cfg, source, training_dir(out, [spec], train_cfg, source))
    run = next(iter(result.runs.values()))
    sae = load_sae(run.path)
    metrics = evaluate_activations(sae, source.heldout_batches(4096)).to_dict()
    metrics["train_tokens_per_s"] = round(result.tokens_per_s, 1) if result.tokens_per_s else None
    heldout = harvest(
        HarvestSpec(model=cfg.model, n_tokens=cfg.heldout_tokens, corpus=CorpusSpec(source="wiki", split="heldout")),
        Path(cfg.out) / "heldout_store", model=model,
    )
    tokens = torch.from_numpy(heldout.token_ids()[:64].astype("int64"))
    down = downstream_metrics(model, sae, tokens)
    metrics.update({f"downstream_{k}": v for k, v in down.to_dict().items()})
    return {"sae": sae, "sae_dir": str(run.path), "metrics": metrics}


def run_demo(out: str | Path = "runs/demo", n_tokens: int = 200_000, model_name: str = DEFAULT_MODEL,
             config: DemoConfig | None = None) -> dict:
    """Run the whole pipeline into ``out`` and print where the report is."""
    cfg = config or DemoConfig(out=str(out), n_tokens=n_tokens, model=model_name)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_model(cfg.model)
    summary: dict = {"model": cfg.model, "model_load_s": round(time.perf_counter() - t0, 1)}

    harvested = _harvest_step(cfg, model)
    summary.update(harvested["summary"])
    print("\n== harvest ==\n" + json.dumps(harvested["summary"], indent=1), flush=True)

    trained = _train_step(cfg, harvested["store"], model)
    summary["sae"] = trained["sae_dir"]
    summary["sae_metrics"] = {k: v for k, v in trained["metrics"].items() if k != "log10_density_histogram"}
    print("\n== SAE (held-out activations) ==\n" + json.dumps(summary["sae_metrics"], indent=1), flush=True)

    report = _report_step(cfg, harvested["store"], trained, model)
    summary["report"] = str(report)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nReport: {report.resolve()}  (open it in a browser)")
    print("Explore interactively: make lab   (JupyterLab on notebooks/, start with 00_quickstart.ipynb)")
    return summary


def _report_step(cfg: DemoConfig, store, trained: dict, model) -> Path:
    from workbench.analysis.explain import explain_features
    from workbench.analysis.features import FeatureConfig, compute_features
    from workbench.report.page import write_report

    results = compute_features(store, trained["sae"], Path(cfg.out) / "features", FeatureConfig(), model=model)
    explanations = explain_features(results)
    path = Path(cfg.out) / "report.html"
    write_report(path, results, trained["metrics"], explanations=explanations, n_features=cfg.report_features,
                 title=f"{cfg.model} · {store.hooks[0]} · topk d_sae={cfg.d_sae}")
    return path
