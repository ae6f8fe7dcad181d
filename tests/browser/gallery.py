"""Every widget of ``widgets`` on tiny synthetic inputs, for the browser test's gallery notebook (and quick looks).

A 2-layer random TransformerLens model over SmolLM2's tokenizer (tokenizer only, no weights), a handful of short
English/French/Spanish sentences run through it into a real on-disk store, three small data-initialised TopK SAEs
(16/32/64 features) at one hook, and the analyses each widget shows, computed from those; for the persona monitor a
stand-in trait vector (French/Spanish minus English residuals), for the diff explorer a second random model and a
small random crosscoder over both. Building everything takes a few seconds; nothing loads a real model.

    import gallery
    g = gallery.build(tmp_dir)
    g.views        # {"card": FeatureCard, "browser": FeatureBrowser, ...}: one per widgets.registry entry
    g.card, g.diff  # each view by its registry key
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
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
    """The data, and ``views``: gallery key (``widgets.registry`` ViewSpec.gallery) -> the view built for it; each
    view is also an attribute (``g.card``, ``g.browser``, ...)."""

    model: Any
    saes: dict
    results: dict
    explanations: dict
    store: Any
    work: Path | None = None
    x: Any = None  # the store's activations (no BOS), [n_tokens, d_model]
    views: dict = field(default_factory=dict)
    attribution_pick: tuple = (0, 0)

    def __getattr__(self, key: str):
        views = self.__dict__.get("views") or {}
        if key in views:
            return views[key]
        raise AttributeError(f"the gallery has no {key!r}: views {sorted(views)}")


def tiny_model(seed: int = 0):
    """A random 2-layer model over SmolLM2's vocabulary (the tokenizer is the real one: real token strings, and its
    chat template)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    cfg = HookedTransformerConfig(n_layers=2, d_model=D_MODEL, n_ctx=64, d_head=8, n_heads=4, d_mlp=64,
                                  act_fn="gelu", d_vocab=len(tok), normalization_type="LN", seed=seed)
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
    """Build the data and (``widgets``) one instance of every view of ``widgets.registry``, each with a first
    state shown (its builder in ``BUILDERS``)."""
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
    g = Gallery(model, saes, results, explanations, store, work, x)
    if widgets:
        from widgets.registry import VIEWS

        for spec in VIEWS:
            if spec.gallery not in BUILDERS:
                raise ValueError(f"no gallery builder for {spec.name} (key {spec.gallery!r}): add one to BUILDERS "
                                 f"in {__file__}")
            g.views[spec.gallery] = BUILDERS[spec.gallery](g)
    return g


# ----------------------------------------------------------------------------------------------------------------
# One builder per view of widgets.registry (its ``gallery`` key): the view on the gallery's data, in a first state
# ----------------------------------------------------------------------------------------------------------------

NAME = "topk-64"  # the SAE most views show


def card(g: Gallery):
    import widgets as W

    res, expl = g.results[NAME], g.explanations[NAME]
    return W.FeatureCard.from_results(res, int(res.alive()[0]), expl)


def browser(g: Gallery):
    import widgets as W

    b = W.FeatureBrowser(g.results[NAME], g.explanations[NAME], page_size=8)
    b.select(b.visible[0])
    return b


def inspector(g: Gallery):
    import widgets as W

    return W.PromptInspector(g.model, g.saes[NAME], results=g.results[NAME], top_n=8, text=TEXTS[4])


def map(g: Gallery):  # noqa: A001  (the registry's key)
    from workbench.analysis.neighborhoods import LayoutConfig, joint_layout, label_clusters
    import widgets as W

    layout = joint_layout(g.saes, config=LayoutConfig(progress=False, n_neighbors=5, cluster_components=4))
    label_clusters(layout, explanations=g.explanations)
    return W.NeighborhoodMap(layout, g.results, g.explanations, height=420)


def splits(g: Gallery):
    from workbench.analysis.splitting import analyze_splitting
    import widgets as W

    ex = W.SplitExplorer(analyze_splitting(g.saes, g.x.split(64)), g.results, g.explanations)
    ex.select(ex.parents()[0][0])
    return ex


def scaling(g: Gallery):
    import widgets as W

    return W.ScalingView(scaling_results())


def languages(g: Gallery):
    import widgets as W

    return W.LanguageHeatmap(probes(g.model, g.saes[NAME]), "bridge", results=g.results[NAME],
                             explanations=g.explanations[NAME], top_n=8)


def attribution(g: Gallery):
    from workbench.intervene.attribution import LogitDiff, attribute
    import widgets as W

    tok = g.model.tokenizer
    a, b = (tok.decode([i]) for i in tok(" bridge capital")["input_ids"][:2])
    attr = attribute(g.model, g.saes[NAME], TEXTS[0], LogitDiff(a, b))
    view = W.AttributionView(g.model, g.saes[NAME], attr, top_n=8)
    f0 = view.features[0]  # its strongest cell: (position menu index, feature menu index) for the test
    pos = max(int(attr.attr[:, f0].abs().argmax()), attr.first)
    g.attribution_pick = (pos - attr.first, 0)
    return view


def steering(g: Gallery):
    from workbench.intervene.generation import GenerationConfig
    import widgets as W

    res = g.results[NAME]
    pg = W.SteeringPlayground(g.model, g.saes[NAME], res.max_activation, explanations=g.explanations[NAME],
                              config=GenerationConfig(max_new_tokens=6, n_samples=1), chat=False)
    pg.set_prompt("The bridge")
    return pg


def trait_vectors(model, texts_a=TEXTS[2:4], texts_b=TEXTS[0:2]) -> torch.Tensor:
    """A stand-in persona vector [n_layers, d_model]: at each layer's residual output, the mean over tokens of
    ``texts_a`` (French/Spanish) minus that of ``texts_b`` (English): a "romance language" direction."""
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]

    def mean(texts):
        with torch.no_grad():
            rows = []
            for t in texts:
                _, cache = model.run_with_cache(t, names_filter=hooks)
                rows.append(torch.stack([cache[h][0, 1:].mean(0) for h in hooks]))
        return torch.stack(rows).mean(0)

    return mean(texts_a) - mean(texts_b)


def persona(g: Gallery):
    from workbench.intervene.generation import GenerationConfig
    from workbench.persona.extract import PersonaVector
    import widgets as W

    pv = PersonaVector("romance", "gallery-tiny", trait_vectors(g.model))
    pm = W.PersonaMonitor(g.model, pv, 1, sae=g.saes[NAME], explanations=g.explanations[NAME],
                          config=GenerationConfig(max_new_tokens=6, n_samples=1, seed=0), coef_range=(-8.0, 8.0))
    pm.set_message("Hello")
    return pm


def diff(g: Gallery):
    """A 24-latent crosscoder (3 A-only, 3 B-only) on the gallery model (A) and a second random one (B, same
    tokenizer), row for row on the same tokens; each side's feature pass and logit effects; Latent Scaling."""
    from workbench.analysis.features import FeatureConfig, compute_features
    from workbench.analysis.logits import logit_effects
    from workbench.diffing.crosscoder import Crosscoder, CrosscoderConfig
    from workbench.diffing.latent_scaling import latent_scaling
    import widgets as W

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers import write_store

    model_b = tiny_model(seed=1)
    tokens = _tokens(g.model)
    with torch.no_grad():
        acts = [m.run_with_cache(tokens, names_filter=HOOK)[1][HOOK].float() for m in (g.model, model_b)]
    both = torch.cat(acts, dim=-1)  # [n_ctx, ctx, 2 * D_MODEL]
    store = write_store(g.work / "paired", both.numpy(), tokens.numpy(), shard_contexts=8, hook=HOOK)
    cc = Crosscoder(CrosscoderConfig("relu", 2 * D_MODEL, 24, d_models=(D_MODEL, D_MODEL), a_only=3, b_only=3),
                    seed=0).eval()
    x = both[:, 1:].reshape(-1, 2 * D_MODEL)
    scaling = latent_scaling(cc, x.split(64))
    cfg = FeatureConfig(top_k=6, n_buckets=3, per_bucket=2, progress=False)
    sides = []
    for k, model in enumerate((g.model, model_b)):
        res = compute_features(store, cc, None, cfg, hook=HOOK, tokenizer=model.tokenizer)
        w = cc.W_dec.detach()[:, k * D_MODEL:(k + 1) * D_MODEL]
        eff = logit_effects(model, w, k=5)
        ids = sorted(set(eff.top_ids.reshape(-1).tolist()) | set(eff.bottom_ids.reshape(-1).tolist()))
        res.set_logit_effects(eff.top_ids, eff.top_values, eff.bottom_ids, eff.bottom_values,
                              {int(i): model.tokenizer.decode([int(i)]) for i in ids})
        sides.append(res)
    return W.DiffExplorer(cc, sides[0], sides[1], scaling, models=(g.model, model_b), hooks=(HOOK, HOOK),
                          names=("tiny-A", "tiny-B"), prompts=("The bridge",), coefficient=4.0)


def sdm_beta(g: Gallery):
    """Two synthetic head tables (no model): betas spread around the band; one head's weights."""
    import numpy as np

    from workbench.sdm.attention import AttentionSDMTable, HeadSDM
    import widgets as W

    rng = np.random.default_rng(0)
    tables = {}
    for name, n in (("model-a", 64), ("model-b", 64)):
        heads = [HeadSDM(l, h, float(np.exp(rng.normal(2, 0.8))), float(np.exp(rng.normal(2.5, 0.5))), None, 20,
                         0.8, 0.1, 0.9, 0.3, 0.2, 0.1, 1.5) for l in range(3) for h in range(2)]
        tables[name] = AttentionSDMTable(name, n, (4.3, 9.0), heads)
    w = np.tril(np.ones((6, 6))) / np.arange(1, 7)[:, None]
    return W.SDMBetaView(tables, weights=lambda m, l, h: {"softmax": w, "sdm": w, "radius": np.array(20)})


def sdm_continual(g: Gallery):
    import widgets as W

    row = lambda a: {"final_mean": a[-1], "final_sem": 0.01, "per_task_mean": a, "per_task_sem": [0.01] * 3,  # noqa
                     "dead_mean": 0.0}
    return W.ContinualView({"sdmlp": row([1.0, 0.8, 0.7]), "relu": row([1.0, 0.5, 0.33])}, title="synthetic")


BUILDERS = {"card": card, "browser": browser, "inspector": inspector, "map": map, "splits": splits,
            "scaling": scaling, "languages": languages, "attribution": attribution, "steering": steering,
            "persona": persona, "diff": diff, "sdm_beta": sdm_beta,
            "sdm_continual": sdm_continual}


if __name__ == "__main__":
    import tempfile
    import time

    from widgets.registry import VIEWS

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        g = build(d)
        print(f"built in {time.perf_counter() - t:.1f} s")
        for spec in VIEWS:
            w = getattr(g, spec.gallery)
            print(spec.gallery, type(w).__name__, type(w.widget).__name__)
