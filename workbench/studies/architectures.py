"""Architectures side by side: every SAE architecture trained on the same store, compared at matched L0.

One training pass (:func:`workbench.sae.train.train` trains several SAEs on the same batches) fits the TopK
family at ``k`` and ReLU-L1 (the April-2024 recipe) and JumpReLU at a small grid of sparsity coefficients, so
that each family has a point near the target L0. Every SAE is then measured the same way (docs/methods.md §20):

* SAEBench's core metrics: explained variance and L0 on held-out activations, CE loss score and KL score with
  the SAE spliced into the model on held-out text (:func:`workbench.sae.evaluate.downstream_metrics`, which uses
  SAEBench's definitions), dead fraction;
* concept probing on the wiki's topic labels (:mod:`workbench.analysis.concept_probing`): k = 1 balanced accuracy
  in English and English -> Spanish / French;
* optionally SAEBench's own evals (``sparse_probing``, ``absorption``) through :mod:`workbench.studies.saebench`.

    cmp = compare_architectures(model, store, ArchitectureComparisonConfig(), out_dir)
    cmp.table()          # one row per SAE; cmp.matched(): the one nearest the target L0 per architecture
    cmp.figure()         # the sparsity-fidelity frontier and the probing bars
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from workbench.core.protocols import ModelLike, SAELike, StoreLike
from workbench.analysis.concept_probing import ProbeConfig, concept_probing, probing_articles
from workbench.core.cache import cached
from workbench.core.persist import read_tagged_json, write_tagged_json
from workbench.sae.evaluate import downstream_metrics, evaluate_activations
from workbench.sae.train import RunSpec, StoreSource, TrainConfig, train, training_dir

__all__ = ["ArchitectureComparison", "ArchitectureComparisonConfig", "compare_architectures", "comparison_inputs",
           "comparison_specs"]

COMPARISON_FORMAT, COMPARISON_VERSION = "workbench-architecture-comparison", 1
COMPARISON_JSON = "architectures.json"


@dataclass
class ArchitectureComparisonConfig:
    """Sizes of the comparison. The defaults fit the demo's store (200k tokens) in about 10 minutes on 2 cores."""

    d_sae: int = 4096
    k: int = 32  # the TopK family's k, and the target L0 of the others
    topk_family: tuple[str, ...] = ("topk", "batchtopk", "matryoshka")
    relu_l1: tuple[float, ...] = (3.0, 6.0, 12.0)  # ReLU-L1 sparsity grid (inputs scaled to E||x||^2 = d_in)
    jumprelu_l0: tuple[float, ...] = (1.0, 3.0, 10.0)  # JumpReLU L0-penalty grid
    extra: tuple[str, ...] = ()  # further registered architectures trained at their defaults (e.g. "gated")
    epochs: int = 3
    batch_size: int = 1024
    lr: float | None = 1e-3  # one learning rate for all (short runs; None: each architecture's default)
    holdout_tokens: int = 16_384
    downstream_contexts: int = 16
    probing: ProbeConfig = field(default_factory=ProbeConfig)
    saebench_evals: tuple[str, ...] = ()  # e.g. ("sparse_probing", "absorption"): SAEBench's own evals
    saebench: Any = None  # a workbench.analysis.saebench.SAEBenchConfig (None: its defaults)
    seed: int = 0

    @classmethod
    def smoke(cls) -> "ArchitectureComparisonConfig":
        return cls(d_sae=256, k=8, relu_l1=(3.0, 12.0), jumprelu_l0=(1.0, 10.0), epochs=1, batch_size=256,
                   holdout_tokens=2048, downstream_contexts=2, probing=ProbeConfig.smoke())


def comparison_inputs(model_name: str = "gemma-3-270m", profile: str | None = None, model: ModelLike | None = None):
    """``(model, store, heldout)`` for a comparison: the wiki's middle-layer store (smoke: the 16k-token CI store;
    otherwise the demo's 200k tokens) and a held-out-split store for the spliced metrics, both cached."""
    from workbench.data.corpus import CorpusSpec
    from workbench.data.harvest import HarvestSpec, harvest_cached
    from workbench.data.models import load_model
    from workbench.studies.profile import current_profile

    smoke = current_profile(profile).smoke
    model = model if model is not None else load_model(model_name)
    store = harvest_cached(HarvestSpec(model=model_name, n_tokens=16_384 if smoke else 200_000,
                                       corpus=CorpusSpec(source="wiki")), model=model)
    heldout = harvest_cached(HarvestSpec(model=model_name, n_tokens=2_048 if smoke else 16_384,
                                         corpus=CorpusSpec(source="wiki", split="heldout")), model=model)
    return model, store, heldout


def comparison_specs(cfg: ArchitectureComparisonConfig) -> list[RunSpec]:
    """The SAEs of one comparison: the TopK family at k, ReLU and JumpReLU at each grid value, the extras."""
    specs = [RunSpec(arch, cfg.d_sae, k=cfg.k, lr=cfg.lr) for arch in cfg.topk_family]
    specs += [RunSpec("relu", cfg.d_sae, l1_coefficient=c, lr=cfg.lr, name=f"relu-{cfg.d_sae}-l1_{c:g}")
              for c in cfg.relu_l1]
    specs += [RunSpec("jumprelu", cfg.d_sae, l0_coefficient=c, lr=cfg.lr, name=f"jumprelu-{cfg.d_sae}-l0_{c:g}")
              for c in cfg.jumprelu_l0]
    specs += [RunSpec(arch, cfg.d_sae, k=cfg.k, lr=cfg.lr) for arch in cfg.extra]
    return specs


@dataclass
class ArchitectureComparison:
    rows: list[dict]  # one per SAE: name, architecture, l0, explained_variance, ce_loss_score, ...
    target_l0: float
    config: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        return self.rows

    def matched(self) -> list[dict]:
        """Per architecture, the SAE whose L0 is nearest the target (on a log scale)."""
        best: dict[str, dict] = {}
        for r in self.rows:
            gap = abs(math.log(max(r["l0"], 1e-9) / self.target_l0))
            if r["architecture"] not in best or gap < best[r["architecture"]]["_gap"]:
                best[r["architecture"]] = {**r, "_gap": gap}
        return [{k: v for k, v in r.items() if k != "_gap"} for r in best.values()]

    def format_table(self, rows: Sequence[dict] | None = None) -> str:
        rows = self.matched() if rows is None else rows
        cols = [c for c in ("l0", "explained_variance", "ce_loss_score", "kl_div_score", "dead_fraction",
                            "probe_en_k1", "probe_en_to_es_fr_k1", "saebench_sparse_probing_top1",
                            "saebench_absorption_absorption_fraction_score", "saebench_absorption_full_absorption_score")
                if any(c in r for r in rows)]
        head = f"{'SAE':<26}" + "".join(f"{c:>22}" for c in cols)
        out = [head]
        for r in rows:
            cells = "".join(f"{r[c]:>22.3f}" if isinstance(r.get(c), (int, float)) else f"{'-':>22}" for c in cols)
            out.append(f"{r['name']:<26}{cells}")
        return "\n".join(out)

    def figure(self):
        """Left: FVU against L0 for every SAE (the sparsity-fidelity frontier); right: k=1 concept probing of the
        matched SAEs (English, and English-trained probes on Spanish / French)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, subplot_titles=("sparsity vs fidelity (held-out)",
                                                            "topic probe, k = 1 (balanced accuracy)"))
        for arch in sorted({r["architecture"] for r in self.rows}):
            pts = sorted((r for r in self.rows if r["architecture"] == arch), key=lambda r: r["l0"])
            fig.add_trace(go.Scatter(x=[r["l0"] for r in pts], y=[1 - r["explained_variance"] for r in pts],
                                     mode="lines+markers", name=arch, text=[r["name"] for r in pts]), 1, 1)
        m = self.matched()
        for key, label in (("probe_en_k1", "en"), ("probe_en_to_es_fr_k1", "en -> es/fr")):
            fig.add_trace(go.Bar(x=[r["architecture"] for r in m], y=[r.get(key) for r in m], name=label), 1, 2)
        fig.update_xaxes(type="log", title_text="L0", row=1, col=1)
        fig.update_yaxes(type="log", title_text="FVU (1 - EV)", row=1, col=1)
        fig.update_yaxes(range=[0.4, 1.0], row=1, col=2)
        fig.update_layout(height=380, width=980, margin=dict(l=50, r=10, t=40, b=40))
        return fig

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / COMPARISON_JSON
        write_tagged_json(path, asdict(self), format=COMPARISON_FORMAT, format_version=COMPARISON_VERSION, indent=1)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ArchitectureComparison":
        path = Path(path)
        d = read_tagged_json(path / COMPARISON_JSON if path.is_dir() else path, format=COMPARISON_FORMAT,
                             what="an architecture comparison", fix="rerun compare_architectures",
                             max_version=COMPARISON_VERSION)
        return cls(rows=d["rows"], target_l0=float(d["target_l0"]), config=d.get("config", {}))


def _probe_columns(card) -> dict:
    out = {}
    en = card.table("en", 1)
    if en:
        out["probe_en_k1"] = en["features"]
        out["probe_en_k1_neurons"] = en["neurons"]
    cross = [r["features"] for r in card.rows if r["k"] == 1 and "->" in r["setting"]]
    if cross:
        out["probe_en_to_es_fr_k1"] = sum(cross) / len(cross)
    return out


def _saebench_columns(model: ModelLike, sae: SAELike, evals: Sequence[str], out_dir: Path, config=None) -> dict:
    """Headline numbers of SAEBench's own evals: sparse probing's top-1 SAE accuracy, absorption's mean scores."""
    if not evals:
        return {}
    from workbench.analysis.saebench import run_saebench
    from workbench.studies.saebench import summarise

    flat = summarise(run_saebench(model, sae, evals=tuple(evals), config=config, out_dir=out_dir))
    out: dict[str, Any] = {}
    if "sparse_probing" in flat:
        out["saebench_sparse_probing_top1"] = flat["sparse_probing"].get("sae_top_1_test_accuracy")
        out["saebench_sparse_probing_top1_llm"] = flat["sparse_probing"].get("llm_top_1_test_accuracy")
    for key, value in flat.get("absorption", {}).items():
        if key.startswith("mean_") and isinstance(value, (int, float)):
            out[f"saebench_absorption_{key.removeprefix('mean_')}"] = value
    return out


def compare_architectures(model: ModelLike, store: StoreLike, config: ArchitectureComparisonConfig | None = None,
                          out_dir: str | Path = "runs/architectures", *, heldout=None,
                          progress: bool = True) -> ArchitectureComparison:
    """Train :func:`comparison_specs` on ``store`` in one pass and measure each SAE (module docstring); cached in
    ``out_dir/architectures.json`` while the settings are the same. ``heldout``: a store of held-out text (the corpus'
    held-out split) for the spliced-model metrics; default: the first contexts of ``store`` itself."""
    cfg = config or ArchitectureComparisonConfig()
    out_dir = Path(out_dir)
    key = json.loads(json.dumps({**asdict(cfg), "store": str(Path(store.path).resolve())}))
    return cached(out_dir / COMPARISON_JSON, key,
                  lambda: _compare(model, store, cfg, out_dir, key, heldout=heldout, progress=progress),
                  load=ArchitectureComparison.load, save=lambda c, p: c.save(p.parent))


def _compare(model: ModelLike, store: StoreLike, cfg: ArchitectureComparisonConfig, out_dir: Path, key: dict, *,
             heldout,
             progress: bool) -> ArchitectureComparison:
    source = StoreSource(store.path, seed=cfg.seed, holdout_tokens=cfg.holdout_tokens)
    specs = comparison_specs(cfg)
    per_epoch = source.n_train_tokens // cfg.batch_size * cfg.batch_size
    train_cfg = TrainConfig(total_tokens=per_epoch, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                            heldout_eval_tokens=min(cfg.holdout_tokens, 4096), checkpoint_every=0)
    result = train(specs, train_cfg, source, training_dir(out_dir, specs, train_cfg, source), progress=progress)
    text = heldout if heldout is not None else store
    tokens = torch.from_numpy(text.token_ids()[:cfg.downstream_contexts].astype("int64"))
    articles = probing_articles(model, store.hooks[0], cfg.probing)  # one model pass shared by every SAE
    rows = []
    for spec in specs:
        run = result.runs[spec.resolved_name]
        sae = run.sae.eval()
        act = evaluate_activations(sae, source.heldout_batches(min(4096, cfg.holdout_tokens)))
        down = downstream_metrics(model, sae, tokens)
        row: dict[str, Any] = {"name": spec.resolved_name, "architecture": spec.architecture,
                               "l0": act.l0, "explained_variance": act.explained_variance,
                               "dead_fraction": act.dead_fraction, "ce_loss_score": down.ce_loss_score,
                               "kl_div_score": down.kl_div_score, "kl_div": down.kl_div}
        row.update(_probe_columns(concept_probing(model, sae, cfg.probing, activations=articles)))
        row.update(_saebench_columns(model, sae, cfg.saebench_evals, run.path / "saebench", cfg.saebench))
        rows.append(row)
    return ArchitectureComparison(rows=rows, target_l0=float(cfg.k), config=key)
