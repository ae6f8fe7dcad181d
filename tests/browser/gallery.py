"""Every widget of ``widgets`` on tiny synthetic inputs, for the browser test's gallery notebook (and quick looks).

A 2-layer random TransformerLens model over SmolLM2's tokenizer (tokenizer only, no weights), a handful of short
English/French/Spanish sentences run through it into a real on-disk store, three small data-initialised TopK SAEs
(16/32/64 features) at one hook, and the analyses each widget shows, computed from those. Building everything takes
a few seconds; nothing loads a real model.

    import gallery
    g = gallery.build(tmp_dir)
    g.browser, g.card, g.inspector, g.map, g.splits, g.scaling, g.languages, g.attribution, g.steering
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HOOK = "blocks.1.hook_resid_post"
D_MODEL = 32
CTX = 24
SIZES = (16, 32, 64)

TEXTS = [
    "The Golden Gate Bridge is a suspension bridge in San Francisco.",
    "Paris is the capital of France and its largest city.",
    "Le pont du Golden Gate se trouve à San Francisco, en Californie.",
    "El puente Golden Gate está en San Francisco, California.",
    "Les espèces végétales de la forêt amazonienne sont nombreuses.",
    "Berlin is the capital of Germany; Madrid is the capital of Spain.",
    "La ciudad de México tiene más de veinte millones de habitantes.",
    "Water boils at one hundred degrees at sea level.",
    "Über 500 Arten leben im Wald, café, naïve, déjà vu.",
    "The bridge opened in 1937 and was painted international orange.",
    "Tokyo, Kyoto and Osaka are cities in Japan.",
    "Les élèves étudient l'histoire de l'Europe à l'école.",
] * 2


@dataclass
class Gallery:
    model: Any
    saes: dict
    results: dict
    explanations: dict
    store: Any
    browser: Any = None
    card: Any = None
    inspector: Any = None
    map: Any = None
    splits: Any = None
    scaling: Any = None
    languages: Any = None
    attribution: Any = None
    attribution_pick: tuple = (0, 0)
    steering: Any = None


def tiny_model():
    """A random 2-layer model over SmolLM2's vocabulary (the tokenizer is the real one: real token strings)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    cfg = HookedTransformerConfig(n_layers=2, d_model=D_MODEL, n_ctx=64, d_head=8, n_heads=4, d_mlp=64,
                                  act_fn="gelu", d_vocab=len(tok), normalization_type="LN", seed=0)
    model = HookedTransformer(cfg, tokenizer=tok)
    return model.eval()


def _tokens(model) -> torch.Tensor:
    """Every text as BOS + its tokens, cut or right-padded (with the text repeated) to CTX."""
    rows = []
    for t in TEXTS:
        ids = model.to_tokens(t, prepend_bos=True)[0].tolist()
        while len(ids) < CTX:
            ids += ids[1:]
        rows.append(ids[:CTX])
    return torch.tensor(rows)


def data_sae(x: torch.Tensor, d_sae: int, k: int = 4, seed: int = 0):
    """A TopK SAE whose decoder rows are random centred activations (each fires on tokens like its seed token)."""
    from workbench.sae.model import SAE, SAEConfig, SAEMetadata

    gen = torch.Generator().manual_seed(seed)
    sae = SAE(SAEConfig("topk", x.shape[1], d_sae, k=k),
              SAEMetadata(model_name="gallery-tiny", hook_name=HOOK, context_size=CTX))
    mean = x.mean(0)
    with torch.no_grad():
        d = x[torch.randperm(x.shape[0], generator=gen)[:d_sae]] - mean
        d = d / d.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(d)
        sae.W_enc.copy_(d.t())
        sae.b_dec.copy_(mean)
        sae.b_enc.zero_()
    return sae.eval()


def scaling_results():
    """A 3 x 3 grid whose FVU follows a power law in size and steps (the view's fits have something to fit)."""
    from workbench.analysis.scaling import ScalingConfig, ScalingResults, ScalingRun

    cfg = ScalingConfig(d_sae=(16, 32, 64), steps=(8, 16, 32), batch_size=64, k=4, device="cpu")
    runs = []
    for d in cfg.d_sae:
        for s in cfg.steps:
            tokens = s * cfg.batch_size
            fvu = 2.0 * d ** -0.3 * s ** -0.2
            runs.append(ScalingRun(f"d{d}-s{s}", d, s, cfg.batch_size, tokens, 12.0 * D_MODEL * d * tokens, fvu,
                                   fvu * 0.5, 4.0, 0.1 / d ** 0.5, 512, 0.1, tokens, fvu, ""))
    return ScalingResults(cfg, runs, D_MODEL, {"kind": "synthetic"})


def probes(model, sae):
    from workbench.analysis.multilingual_probes import ProbeGroup, probe_activations

    groups = [ProbeGroup("bridge", {"en": TEXTS[0], "fr": TEXTS[2], "es": TEXTS[3]}),
              ProbeGroup("capital", {"en": TEXTS[1], "fr": "Paris est la capitale de la France.",
                                     "es": "París es la capital de Francia."})]
    return probe_activations(model, sae, groups, residual_layers=False)


def build(work_dir: str | Path, *, widgets: bool = True) -> Gallery:
    """Build the data and (``widgets``) one instance of every widget class, each with a first state shown."""
    import sys

    from workbench.analysis.explain import explain_features
    from workbench.analysis.features import FeatureConfig, compute_features

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers.write_store
    from helpers import write_store

    torch.manual_seed(0)
    work = Path(work_dir)
    model = tiny_model()
    tokens = _tokens(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    acts = cache[HOOK].float()
    store = write_store(work / "store", acts.numpy(), tokens.numpy(), shard_contexts=8, hook=HOOK)
    x = acts[:, 1:].reshape(-1, D_MODEL)
    saes = {f"topk-{d}": data_sae(x, d, seed=i) for i, d in enumerate(SIZES)}
    cfg = FeatureConfig(top_k=6, n_buckets=3, per_bucket=2, progress=False)
    results = {name: compute_features(store, sae, None, cfg, model=model, tokenizer=model.tokenizer)
               for name, sae in saes.items()}
    explanations = {name: explain_features(res) for name, res in results.items()}
    g = Gallery(model, saes, results, explanations, store)
    if widgets:
        _widgets(g, x)
    return g


def _widgets(g: Gallery, x: torch.Tensor) -> None:
    from workbench.analysis.neighborhoods import LayoutConfig, joint_layout, label_clusters
    from workbench.analysis.splitting import analyze_splitting
    from workbench.intervene.attribution import LogitDiff, attribute
    from workbench.intervene.generation import GenerationConfig
    import widgets as W

    name = "topk-64"
    sae, res, expl = g.saes[name], g.results[name], g.explanations[name]
    g.card = W.FeatureCard.from_results(res, int(res.alive()[0]), expl)
    g.browser = W.FeatureBrowser(res, expl, page_size=8)
    g.browser.select(g.browser.visible[0])
    g.inspector = W.PromptInspector(g.model, sae, results=res, top_n=8, text=TEXTS[4])
    layout = joint_layout(g.saes, config=LayoutConfig(progress=False, n_neighbors=5, cluster_components=4))
    label_clusters(layout, explanations=g.explanations)
    g.map = W.NeighborhoodMap(layout, g.results, g.explanations, height=420)
    g.splits = W.SplitExplorer(analyze_splitting(g.saes, x.split(64)), g.results, g.explanations)
    g.splits.select(g.splits.parents()[0][0])
    g.scaling = W.ScalingView(scaling_results())
    g.languages = W.LanguageHeatmap(probes(g.model, sae), "bridge", results=res, explanations=expl, top_n=8)
    tok = g.model.tokenizer
    a, b = (tok.decode([i]) for i in tok(" bridge capital")["input_ids"][:2])
    attr = attribute(g.model, sae, TEXTS[0], LogitDiff(a, b))
    g.attribution = W.AttributionView(g.model, sae, attr, top_n=8)
    f0 = g.attribution.features[0]  # its strongest cell: (position menu index, feature menu index) for the test
    pos = max(int(attr.attr[:, f0].abs().argmax()), attr.first)
    g.attribution_pick = (pos - attr.first, 0)
    g.steering = W.SteeringPlayground(g.model, sae, res.max_activation, explanations=expl,
                                      config=GenerationConfig(max_new_tokens=6, n_samples=1), chat=False)
    g.steering.set_prompt("The bridge")


if __name__ == "__main__":
    import tempfile
    import time

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        g = build(d)
        print(f"built in {time.perf_counter() - t:.1f} s")
        for k in ("card", "browser", "inspector", "map", "splits", "scaling", "languages", "attribution",
                  "steering"):
            w = getattr(g, k)
            print(k, type(w).__name__, type(w.widget).__name__)
