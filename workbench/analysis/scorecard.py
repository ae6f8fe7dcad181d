"""An interpretability scorecard of one SAE: are its features readable, and more readable than the model's own
units? One function, :func:`scorecard`, and ``workbench scorecard`` on the command line.

    from workbench.analysis.scorecard import scorecard
    card = scorecard(results, store, sae, model, heldout=heldout_store)   # ~200 features, two baselines
    card.save("runs/demo/features")                                      # scorecard.json
    card.summary()   # {"f1_median": {"features": .., "neurons": .., "random": ..}, "special_token_fraction": ..}

What it measures, all in one run:

* **Held-out F1 of the offline explainer** for a seeded random sample of alive features (default 200), and the
  same for as many **MLP neurons** (``blocks.L.mlp.hook_post`` of the SAE's layer by default) and as many **random
  unit directions** of the residual stream at the SAE's hook. Every unit is explained by the same
  :class:`~workbench.analysis.explain.TokenExplainer` from its top and bucket examples on the same *training*
  contexts (:func:`~workbench.analysis.explain.examples_from_activations`) and scored with
  :func:`~workbench.analysis.explain.score_explanation` on the same *held-out* contexts (another store, e.g. a
  ``split="heldout"`` harvest, or the contexts of the analysis store the feature pass did not see). BOS positions
  are left out everywhere.
* **Same density**: a feature fires where its activation is > 0. Neurons and random directions are dense, so
  each baseline unit is paired with one sampled feature and thresholded at the value above which it fires on
  that feature's density (from the feature pass) of the training tokens; its activation is then
  ``max(a - threshold, 0)`` on training and held-out tokens alike. The three kinds thus have the same density
  distribution and F1 compares like with like.
* **Special-token detectors**: features whose top examples are mostly (> ``special_majority``) special tokens
  (BOS, EOS, padding and the tokenizer's other special ids) or whitespace-only tokens, over all alive features and
  over the sample (:func:`~workbench.analysis.feature_traits.special_token_features`, which the report also
  uses to skip them).
* **Languages**: the fraction of features whose top examples come from >= 2 languages. Stores do not record a
  language per token, but the embedded wiki corpus encodes it in the document id (``doc_id // WIKI_ID_STRIDE``
  indexes ``WIKI_LANGUAGES``), and the store keeps every token's ``doc_id``:
  :func:`~workbench.analysis.feature_traits.token_languages` reads it back. Other corpora have no language: the fraction
  is then ``None``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike, SAELike, StoreLike
from workbench.analysis.bundle import unpack
from workbench.analysis.explain import TokenExplainer, examples_from_activations, heldout_contexts, score_explanation
from workbench.analysis.feature_traits import (feature_languages, special_token_features, special_token_ids,
                                               token_languages)
from workbench.analysis.features import FeatureResults, encode_contexts, resolve_hook, sae_fingerprint
from workbench.analysis.neurons import default_neuron_layers
from workbench.core.config import known_fields_only
from workbench.core.hardware import torch_threads
from workbench.core.persist import read_tagged_json, write_tagged_json
from workbench.data.hooks import stop_layer

__all__ = [
    "KINDS",
    "SCORECARD_FORMAT",
    "Scorecard",
    "ScorecardConfig",
    "UnitScores",
    "find_scorecard",
    "scorecard",
]

SCORECARD_FORMAT = "workbench-scorecard"
SCORECARD_VERSION = 1
SCORECARD_JSON = "scorecard.json"
KINDS = ("features", "neurons", "random")
KIND_NAMES = {"features": "SAE features", "neurons": "MLP neurons", "random": "random directions"}

# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------


def _f1_stats(f1: Sequence[float], n_units: int, bins: int) -> dict:
    a = np.asarray(f1, dtype=np.float64)
    edges = [j / bins for j in range(bins + 1)]
    counts = np.histogram(np.clip(a, 0.0, 1.0), bins=bins, range=(0.0, 1.0))[0].tolist() if a.size else [0] * bins
    out = {"n_units": int(n_units), "n_scored": int(a.size), "hist_edges": edges, "hist_counts": counts}
    if a.size:
        q1, med, q3 = np.percentile(a, [25, 50, 75]).tolist()
        out.update(median=med, q1=q1, q3=q3, mean=float(a.mean()))
    else:
        out.update(median=None, q1=None, q3=None, mean=None)
    return out


@dataclass
class UnitScores:
    """One kind of unit, side by side: explanation and held-out score per unit.

    ``units``: feature indices, global neuron indices (``layer_position * d_mlp + neuron`` over the scorecard's
    layers) or direction indices; ``density``: the firing density the unit was thresholded to (features: theirs
    from the feature pass); ``threshold``: the raw activation above which it fires (0 for features);
    ``n_firing``: held-out tokens where it fired; units that never fire there are not scored (``f1`` None).
    """

    kind: str
    units: list[int]
    labels: list[str]
    explanations: list[str]
    density: list[float]
    threshold: list[float]
    n_firing: list[int]
    precision: list[float | None]
    recall: list[float | None]
    f1: list[float | None]

    def scored_f1(self) -> list[float]:
        return [f for f, n in zip(self.f1, self.n_firing) if f is not None and n > 0]

    def stats(self, bins: int = 10) -> dict:
        """n_units, n_scored, median/q1/q3/mean of F1 over scored units, and a histogram over [0, 1]."""
        return _f1_stats(self.scored_f1(), len(self.units), bins)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "UnitScores":
        return cls(**known_fields_only(cls, dict(d), "unit-score fields"))


@dataclass
class Scorecard:
    """The output of :func:`scorecard`. ``units``: kind ("features", "neurons", "random") -> :class:`UnitScores`;
    ``special``: special-token detectors (counts, fractions, the flagged features); ``languages``: per-language
    firing (None without language information); ``meta``: how it was computed."""

    units: dict[str, UnitScores]
    special: dict
    languages: dict | None
    meta: dict = field(default_factory=dict)

    def f1_stats(self, bins: int = 10) -> dict[str, dict]:
        return {k: u.stats(bins) for k, u in self.units.items()}

    def summary(self) -> dict:
        """The headline numbers (for summary.json and the CLI)."""
        st = self.f1_stats(int(self.meta.get("f1_bins", 10)))
        med = {k: s["median"] for k, s in st.items()}
        out: dict[str, Any] = {
            "n_units": {k: s["n_units"] for k, s in st.items()},
            "n_scored": {k: s["n_scored"] for k, s in st.items()},
            "f1_median": med,
            "f1_q1": {k: s["q1"] for k, s in st.items()},
            "f1_q3": {k: s["q3"] for k, s in st.items()},
            "special_token_fraction": self.special.get("fraction_alive"),
            "special_token_fraction_sample": self.special.get("fraction_sample"),
            "multilingual_fraction": (self.languages or {}).get("fraction_alive"),
            "multilingual_fraction_sample": (self.languages or {}).get("fraction_sample"),
        }
        for base in ("neurons", "random"):
            if med.get("features") is not None and med.get(base):
                out[f"feature_over_{base}_median_f1"] = med["features"] / med[base]
        return out

    def table_rows(self) -> list[list]:
        """[unit kind, units, scored, median F1, Q1, Q3, mean] per kind (None where nothing was scored)."""
        rows = []
        for k, s in self.f1_stats().items():
            rows.append([KIND_NAMES.get(k, k), s["n_units"], s["n_scored"], s["median"], s["q1"], s["q3"], s["mean"]])
        return rows

    def _repr_html_(self) -> str:
        from workbench.core.html_repr import repr_table

        return repr_table("Scorecard: explainer F1 on held-out text",
                          ["units", "n", "scored", "median F1", "Q1", "Q3", "mean"], self.table_rows())

    def format_table(self) -> str:
        """The summary as plain text (what the CLI prints)."""
        def num(v):
            return "-" if v is None else f"{v:.3f}"

        lines = [f"{'units':20s} {'n':>5s} {'scored':>6s} {'median F1':>9s} {'Q1':>6s} {'Q3':>6s} {'mean':>6s}"]
        for name, n, sc, med, q1, q3, mean in self.table_rows():
            lines.append(f"{name:20s} {n:5d} {sc:6d} {num(med):>9s} {num(q1):>6s} {num(q3):>6s} {num(mean):>6s}")
        sp = self.special
        lines.append(f"special-token/whitespace detectors: {sp.get('n_alive', 0)} of {sp.get('n_alive_features', 0)} "
                     f"alive features ({_pct(sp.get('fraction_alive'))}); sample {_pct(sp.get('fraction_sample'))}")
        lg = self.languages
        if lg is None:
            lines.append("languages: the corpus records none")
        else:
            lines.append(f"fire in >= 2 languages among their top examples: {_pct(lg.get('fraction_alive'))} of alive "
                         f"features; sample {_pct(lg.get('fraction_sample'))} (token share "
                         + ", ".join(f"{k} {v:.0%}" for k, v in lg.get("token_share", {}).items()) + ")")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"units": {k: u.to_dict() for k, u in self.units.items()}, "special": self.special,
                "languages": self.languages, "meta": self.meta, "summary": self.summary()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Scorecard":
        return cls({k: UnitScores.from_dict(u) for k, u in d["units"].items()}, dict(d.get("special", {})),
                   None if d.get("languages") is None else dict(d["languages"]), dict(d.get("meta", {})))

    def save(self, path: str | Path) -> Path:
        """Write ``scorecard.json`` (``path``: a .json file, or a folder to put it in); returns the file."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / SCORECARD_JSON
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_tagged_json(path, self.to_dict(), format=SCORECARD_FORMAT, format_version=SCORECARD_VERSION,
                                 indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "Scorecard":
        path = Path(path)
        if path.is_dir():
            path = path / SCORECARD_JSON
        fix = "rerun `workbench scorecard` (or scorecard(...).save())"
        data = read_tagged_json(path, format=SCORECARD_FORMAT, what="a scorecard", fix=fix,
                                max_version=SCORECARD_VERSION)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is corrupt ({type(err).__name__}: {err}): {fix}") from None


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


# ----------------------------------------------------------------------------------------------------------------
# The scorecard
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ScorecardConfig:
    """``n_units``: features sampled (and as many neurons and random directions); ``n_train_contexts``: contexts
    of the analysis store the explanations are fitted on; ``n_heldout_contexts``: held-out contexts they are scored
    on; ``neuron_layers``: MLP layers to sample neurons from (default: the SAE's own layer, or the one before it for
    a resid_pre hook); ``top_k``/``n_buckets``/``per_bucket``/``context_before``/``context_after``: the examples an
    explanation sees, as in the feature pass; ``special_majority``: "mostly special" means a larger fraction of
    the top examples; ``min_languages``: languages a multilingual feature fires in; ``explain_threads``: torch
    threads while explaining and scoring, thousands of small tensor ops that one thread runs fastest (measured: 30x
    faster than two threads on a busy 2-core machine; None leaves torch's setting); ``fit_all_tokens``: fit each
    explanation on every token of the training contexts (:class:`~workbench.analysis.explain.Background`) instead
    of the example windows only (docs/methods.md §5 gives the measured effect)."""

    n_units: int = 200
    n_train_contexts: int = 256
    n_heldout_contexts: int = 128
    seed: int = 0
    neuron_layers: list[int] | None = None
    top_k: int = 20
    n_buckets: int = 10
    per_bucket: int = 5
    context_before: int = 12
    context_after: int = 4
    special_majority: float = 0.5
    min_languages: int = 2
    f1_bins: int = 10
    batch_contexts: int = 16
    explain_threads: int | None = 1
    fit_all_tokens: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("n_units", "n_train_contexts", "n_heldout_contexts", "top_k", "n_buckets", "per_bucket",
                     "f1_bins", "batch_contexts", "min_languages"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ScorecardConfig.{name} must be a positive integer, got {v!r}")
        if not 0.0 <= self.special_majority < 1.0:
            raise ValueError(f"ScorecardConfig.special_majority must be in [0, 1), got {self.special_majority}")
        if self.neuron_layers is not None:
            self.neuron_layers = sorted({int(x) for x in self.neuron_layers})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ScorecardConfig":
        return cls(**known_fields_only(cls, dict(d), "scorecard settings"))


def _sample(n_total: int, n: int, gen: torch.Generator) -> list[int]:
    return sorted(torch.randperm(n_total, generator=gen)[:n].tolist())


def _valid_mask(n_ctx: int, ctx: int, prepend_bos: bool) -> Tensor:
    valid = torch.ones(n_ctx, ctx, dtype=torch.bool)
    if prepend_bos:
        valid[:, 0] = False
    return valid


def _projections(store: StoreLike, contexts: Sequence[int], hook: str, directions: Tensor, batch: int) -> Tensor:
    """Residual activations of ``contexts`` projected on unit ``directions`` [R, d]: [n, ctx, R]."""
    out = []
    for i in range(0, len(contexts), batch):
        x = torch.stack([store.activations(int(c), hook) for c in contexts[i:i + batch]])
        out.append(x @ directions.T)
    return torch.cat(out) if out else torch.zeros(0, store.context_size, directions.shape[0])


def _neuron_acts(model: ModelLike, store: StoreLike, contexts: Sequence[int], layers: list[int], neurons: Tensor,
                 d_mlp: int,
                 batch: int) -> Tensor:
    """MLP neuron activations (``blocks.L.mlp.hook_post``) of the model run on the store's token ids: [n, ctx, N].
    ``neurons`` are global indices ``position of L in layers * d_mlp + neuron``."""
    hooks = [f"blocks.{layer}.mlp.hook_post" for layer in layers]
    stop = stop_layer(model, hooks)
    device = next(model.parameters()).device
    all_ids = store.token_ids()
    by_layer = [(j, neurons[neurons // d_mlp == j] % d_mlp) for j in range(len(layers))]
    where = torch.cat([(neurons // d_mlp == j).nonzero().squeeze(1) for j in range(len(layers))])
    back = torch.argsort(where)  # the columns, grouped by layer, back into the order of ``neurons``
    out = []
    for i in range(0, len(contexts), batch):
        idx = np.asarray(contexts[i:i + batch], dtype=np.int64)
        toks = torch.from_numpy(np.array(all_ids[idx], dtype=np.int64)).to(device)
        grabbed: dict[str, Tensor] = {}

        def grab(act, hook):
            grabbed[hook.name] = act.detach()
            return act

        with torch.inference_mode():
            model.run_with_hooks(toks, fwd_hooks=[(h, grab) for h in hooks], stop_at_layer=stop, return_type=None)
        cols = [grabbed[hooks[j]][..., cols_j.to(device)] for j, cols_j in by_layer if cols_j.numel()]
        acts = torch.cat(cols, -1).float().cpu() if cols else torch.zeros(len(idx), store.context_size, 0)
        out.append(acts[..., back])
    return torch.cat(out) if out else torch.zeros(0, store.context_size, neurons.numel())


def _density_thresholds(acts: Tensor, valid: Tensor, densities: Sequence[float]) -> Tensor:
    """Per unit (last dim of ``acts``): the value above which it fires on ``density`` of the valid tokens (at least
    one token)."""
    vals = acts[valid]  # [n_tokens, U]
    n = vals.shape[0]
    out = torch.empty(acts.shape[-1])
    for u, d in enumerate(densities):
        k = min(n, max(1, int(round(float(d) * n))))
        if k >= n:
            out[u] = float(vals[:, u].min()) - 1.0
        else:
            out[u] = torch.topk(vals[:, u], k + 1).values[-1]
    return out


def _explain_and_score(kind: str, units: list[int], labels: list[str], train_acts: Tensor, train_ids: Tensor,
                       train_valid: Tensor, held_acts: Tensor, held_ids: Tensor, held_valid: Tensor, density: list[float],
                       threshold: list[float], cfg: ScorecardConfig, explainer, vocab: Mapping[int, str]
                       ) -> UnitScores:
    with torch_threads(cfg.explain_threads):
        return _explain_and_score_units(kind, units, labels, train_acts, train_ids, train_valid, held_acts, held_ids,
                                        held_valid, density, threshold, cfg, explainer, vocab)


def _explain_and_score_units(kind, units, labels, train_acts, train_ids, train_valid, held_acts, held_ids, held_valid,
                             density, threshold, cfg, explainer, vocab) -> UnitScores:
    exs = examples_from_activations(train_acts, train_ids, units=units, kind=kind.rstrip("s"), labels=labels,
                                    top_k=cfg.top_k, n_buckets=cfg.n_buckets, per_bucket=cfg.per_bucket,
                                    context_before=cfg.context_before, context_after=cfg.context_after,
                                    threshold=0.0, seed=cfg.seed, vocab=vocab, background=cfg.fit_all_tokens,
                                    valid=train_valid)
    texts, prec, rec, f1, n_fire = [], [], [], [], []
    for j, ex in enumerate(tqdm(exs, desc=f"explain {kind}", disable=not cfg.progress, leave=False)):
        expl = explainer.explain(ex)
        s = score_explanation(expl, held_ids, held_acts[..., j], max_activation=ex.max_activation,
                              n_buckets=cfg.n_buckets, valid=held_valid)
        texts.append(expl.text)
        n_fire.append(int(s.n_firing))
        ok = s.n_firing > 0
        prec.append(float(s.precision) if ok else None)
        rec.append(float(s.recall) if ok else None)
        f1.append(float(s.f1) if ok else None)
    return UnitScores(kind, list(units), list(labels), texts, [float(d) for d in density],
                      [float(t) for t in threshold], n_fire, prec, rec, f1)


def _vocab_for(ids: Tensor, base: Mapping[int, str], tokenizer) -> dict[int, str]:
    vocab = dict(base)
    if tokenizer is not None:
        missing = [int(t) for t in torch.unique(ids).tolist() if int(t) >= 0 and int(t) not in vocab]
        if missing:
            try:
                vocab.update(zip(missing, tokenizer.batch_decode([[t] for t in missing])))
            except Exception:  # a tokenizer without batch_decode
                vocab.update((t, tokenizer.decode([t])) for t in missing)
    return vocab


def _special_section(results: FeatureResults, sample: list[int], tokenizer, majority: float) -> dict:
    flags = special_token_features(results, tokenizer=tokenizer, majority=majority)
    alive = results.alive()
    n_alive = int(alive.numel())
    flagged = alive[flags[alive]].tolist()
    in_sample = [f for f in sample if bool(flags[f])]
    return {"n_alive_features": n_alive, "n_alive": len(flagged),
            "fraction_alive": len(flagged) / n_alive if n_alive else None,
            "n_sample": len(in_sample), "fraction_sample": len(in_sample) / len(sample) if sample else None,
            "features": flagged, "majority": majority,
            "token_ids": sorted(special_token_ids(results.vocab, tokenizer))}


def _language_section(results: FeatureResults, store: StoreLike, sample: list[int], min_languages: int) -> dict | None:
    fl = feature_languages(results, store)
    if fl is None:
        return None
    counts, names = fl
    n_lang = (counts > 0).sum(1)
    alive = results.alive()
    multi = n_lang >= min_languages
    tl = token_languages(store)
    if tl is None:  # (not reached: feature_languages found the wiki's languages)
        return None
    lang, _ = tl
    analysed = lang[:results.n_contexts]
    if store.prepend_bos:
        analysed = analysed[:, 1:]
    tot = np.bincount(analysed[analysed >= 0].astype(np.int64), minlength=len(names))
    share = {n: float(c) / max(1, int(tot.sum())) for n, c in zip(names, tot.tolist())}
    hist = {str(k): int((n_lang[alive] == k).sum()) for k in range(len(names) + 1)}
    return {"languages": list(names), "min_languages": min_languages, "token_share": share,
            "n_alive_features": int(alive.numel()),
            "fraction_alive": int(multi[alive].sum()) / int(alive.numel()) if alive.numel() else None,
            "fraction_sample": int(multi[sample].sum()) / len(sample) if sample else None,
            "n_languages_hist": hist,
            "sample_counts": {str(f): counts[f].tolist() for f in sample}}


def scorecard(results, store: StoreLike | None = None, sae: SAELike | None = None, model: ModelLike | None = None, *,
              heldout=None, config: ScorecardConfig | None = None,
              explainer=None, tokenizer=None, hook: str | None = None) -> Scorecard:
    """The interpretability scorecard of ``sae`` (see the module docstring).

    ``results``: its feature pass over ``store`` (or an :class:`~workbench.analysis.bundle.AnalysisBundle` holding
    results, store, SAE, and optionally model and held-out store) (the training contexts are drawn from the contexts it analysed);
    ``model``: the HookedTransformer the store was harvested from, for the neuron baseline (None: no neuron row);
    ``heldout``: a store of held-out text (e.g. ``split="heldout"``) or None for the contexts of ``store`` the
    feature pass did not see (ValueError if there are none); ``explainer``: default
    :class:`~workbench.analysis.explain.TokenExplainer` (``fire_fraction=0``: a unit fires where its activation,
    thresholded as above, is > 0); ``tokenizer``: names tokens (default the model's) and adds its special ids.
    """
    parts = unpack(results, store=store, sae=sae, model=model, heldout=heldout)
    results, store, sae, model, heldout = (parts[k] for k in ("results", "store", "sae", "model", "heldout"))
    if store is None or sae is None:
        raise ValueError("scorecard needs the store and the SAE of the results (or an AnalysisBundle first)")
    cfg = config or ScorecardConfig()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    hook = resolve_hook(store, sae, hook or results.meta.get("hook"))
    if results.d_sae != int(sae.cfg.d_sae):
        raise ValueError(f"the results have d_sae={results.d_sae} but the SAE has {sae.cfg.d_sae}: they do not belong "
                         f"together")
    fp, own_fp = results.meta.get("sae_fingerprint"), sae_fingerprint(sae)
    if fp is not None and fp != own_fp:
        raise ValueError("the feature results were computed for another SAE (fingerprints differ): pass the SAE "
                         "they were computed with, or rerun compute_features")
    if results.n_contexts > store.n_contexts:
        raise ValueError(f"the feature results analysed {results.n_contexts} contexts but the store holds "
                         f"{store.n_contexts}: pass the store the feature pass read")
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    explainer = explainer or TokenExplainer()
    gen = torch.Generator().manual_seed(int(cfg.seed))

    alive = results.alive()
    sample = sorted(alive[torch.randperm(alive.numel(), generator=gen)[:cfg.n_units]].tolist())
    n = len(sample)
    density = [float(results.density[f]) for f in sample]

    # contexts: training ones among those the feature pass saw, held-out ones elsewhere
    train_ctx = _sample(results.n_contexts, cfg.n_train_contexts, gen)
    if heldout is None or Path(heldout.path).resolve() == Path(store.path).resolve():
        held_store, pool = store, list(heldout_contexts(results, store))
        held_from = "analysis store, contexts the feature pass did not see"
    else:
        held_store, pool = heldout, list(range(heldout.n_contexts))
        resolve_hook(held_store, sae, hook)
        if held_store.model_name != store.model_name:
            raise ValueError(f"the held-out store holds {held_store.model_name!r} activations but the analysis store "
                             f"{store.model_name!r}: harvest the held-out text with the same model")
        held_from = f"store {held_store.path} (split {(held_store.manifest.get('corpus') or {}).get('split')!r})"
    held_ctx = [pool[i] for i in _sample(len(pool), cfg.n_heldout_contexts, gen)]
    if not held_ctx or not train_ctx:
        raise ValueError("the scorecard needs training and held-out contexts")

    # features
    t = time.perf_counter()
    tr_ids, tr_f = encode_contexts(store, sae, train_ctx, features=sample, hook=hook,
                                   batch_contexts=cfg.batch_contexts)
    he_ids, he_f = encode_contexts(held_store, sae, held_ctx, features=sample, hook=hook,
                                   batch_contexts=cfg.batch_contexts)
    tr_valid = _valid_mask(tr_ids.shape[0], tr_ids.shape[1], store.prepend_bos)
    he_valid = _valid_mask(he_ids.shape[0], he_ids.shape[1], held_store.prepend_bos)
    timings["encode_features_s"] = time.perf_counter() - t
    vocab = _vocab_for(tr_ids, results.vocab, tokenizer)
    units: dict[str, UnitScores] = {}
    t = time.perf_counter()
    units["features"] = _explain_and_score("features", sample, [f"F{f}" for f in sample], tr_f, tr_ids, tr_valid,
                                           he_f, he_ids, he_valid, density, [0.0] * n, cfg, explainer, vocab)
    timings["explain_features_s"] = time.perf_counter() - t
    del tr_f, he_f

    def baseline(kind: str, tr: Tensor, he: Tensor, ids: list[int], labels: list[str]) -> UnitScores:
        thr = _density_thresholds(tr, tr_valid, density)
        tr = (tr - thr).clamp_min(0) * tr_valid[..., None]
        he = (he - thr).clamp_min(0) * he_valid[..., None]
        return _explain_and_score(kind, ids, labels, tr, tr_ids, tr_valid, he, he_ids, he_valid, density, thr.tolist(),
                                  cfg, explainer, vocab)

    # neurons
    layers: list[int] = []
    d_mlp = 0
    if model is not None:
        t = time.perf_counter()
        layers = cfg.neuron_layers if cfg.neuron_layers is not None else default_neuron_layers(hook)[-1:]
        if not layers or min(layers) < 0 or max(layers) >= model.cfg.n_layers:
            raise ValueError(f"neuron layers {layers} out of range [0, {model.cfg.n_layers})")
        d_mlp = int(model.cfg.d_mlp)
        neurons = torch.tensor(_sample(len(layers) * d_mlp, n, gen), dtype=torch.int64)
        tr_n = _neuron_acts(model, store, train_ctx, layers, neurons, d_mlp, cfg.batch_contexts)
        he_n = _neuron_acts(model, held_store, held_ctx, layers, neurons, d_mlp, cfg.batch_contexts)
        if tr_n.shape[:2] != tr_ids.shape:
            raise ValueError(f"the model's activations {tuple(tr_n.shape[:2])} do not match the store's contexts "
                             f"{tuple(tr_ids.shape)}: pass the model the store was harvested with")
        timings["model_forward_s"] = time.perf_counter() - t
        t = time.perf_counter()
        labels = [f"L{layers[int(g) // d_mlp]} N{int(g) % d_mlp}" for g in neurons]
        units["neurons"] = baseline("neurons", tr_n, he_n, neurons.tolist(), labels)
        timings["explain_neurons_s"] = time.perf_counter() - t
        del tr_n, he_n

    # random directions in the residual stream
    t = time.perf_counter()
    d_in = int(sae.cfg.d_in)
    dirs = torch.randn(n, d_in, generator=gen)
    dirs /= dirs.norm(dim=1, keepdim=True)
    tr_r = _projections(store, train_ctx, hook, dirs, cfg.batch_contexts)
    he_r = _projections(held_store, held_ctx, hook, dirs, cfg.batch_contexts)
    units["random"] = baseline("random", tr_r, he_r, list(range(n)), [f"R{j}" for j in range(n)])
    timings["random_s"] = time.perf_counter() - t

    special = _special_section(results, sample, tokenizer, cfg.special_majority)
    languages = _language_section(results, store, sample, cfg.min_languages)
    timings["total_s"] = time.perf_counter() - t_start
    meta = {"config": cfg.to_dict(), "hook": hook, "sae_fingerprint": own_fp,
            "model_name": store.model_name, "explainer": getattr(explainer, "name", type(explainer).__name__),
            "train_store": str(store.path), "n_train_contexts": len(train_ctx),
            "n_train_tokens": int(tr_valid.sum()), "heldout": held_from, "n_heldout_contexts": len(held_ctx),
            "n_heldout_tokens": int(he_valid.sum()), "neuron_layers": layers, "d_mlp": d_mlp,
            "n_alive_features": int(alive.numel()), "f1_bins": cfg.f1_bins,
            "neurons": "sampled" if model is not None else "skipped: no model given",
            "timings": {k: round(v, 2) for k, v in timings.items()}}
    return Scorecard(units, special, languages, meta)


def find_scorecard(path: str | Path) -> Scorecard | None:
    """The scorecard saved in ``path`` (a folder or a .json file), or None when there is none."""
    p = Path(path)
    p = p / SCORECARD_JSON if p.suffix != ".json" else p
    return Scorecard.load(p) if p.is_file() else None
