"""Features against neurons (docs/methods.md §5): how well does the best MLP neuron of the earlier layers track
each feature, and are features easier to explain than neurons?

* :func:`neuron_correlations`: for every (selected) feature, the best Pearson correlation with any neuron
  ``blocks.{l}.mlp.hook_post`` of the layers up to the SAE's layer (``<=`` for a resid_post/resid_mid/MLP hook,
  ``<`` for resid_pre), over held-out tokens. Streaming: running sums Σf, Σf², Σn, Σn² and Σ f·n, the last one
  from the *sparse* codes (an ``index_add`` of the neuron rows of each non-zero code, chunked), so the cost is
  ``nnz * n_neurons`` per batch rather than ``tokens * d_sae * n_neurons``. Neuron sums are shifted by the first
  batch's mean for numerical stability (correlations do not change under a shift). Memory:
  ``4 * n_features * n_neurons`` bytes for Σ f·n; select features (e.g. a random sample) to bound it. The paper
  found 82% of features with a best correlation <= 0.3.
* :func:`compare_explanations`: the same offline explainer and scorer (:mod:`workbench.analysis.explain`) on a sample of
  features and a sample of neurons side by side: top examples and bucket samples from training contexts, a
  :class:`~workbench.analysis.explain.TokenExplainer` explanation, precision/recall/F1 on held-out contexts. Both kinds of
  unit count as "firing" above the same fraction of their max on the training contexts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike, SAELike, StoreLike

if TYPE_CHECKING:
    from workbench.sae.model import SAE
from workbench.analysis.explain import ScoreAccumulator, TokenExplainer, examples_from_activations
from workbench.analysis.feature_kernels import sparse_encode
from workbench.core.persist import load_tensors, read_tagged_json, save_tensors, write_tagged_json
from workbench.data.hooks import hook_layer

__all__ = [
    "NeuronConfig",
    "NeuronCorrelations",
    "StreamingCorrelation",
    "compare_explanations",
    "default_neuron_layers",
    "neuron_correlations",
]

NEURONS_FORMAT = "workbench-neuron-correlations"
NEURONS_VERSION = 1


@dataclass
class NeuronConfig:
    """``layers``: MLP layers to compare with (default: those up to the SAE's layer). ``batch_contexts``: contexts
    per forward pass. ``absolute``: rank neurons by |corr| rather than corr. ``threshold``: the paper's 0.3."""

    layers: Sequence[int] | None = None
    batch_contexts: int = 16
    absolute: bool = False
    threshold: float = 0.3
    entry_chunk_bytes: int = 64 << 20
    progress: bool = True


def default_neuron_layers(hook: str) -> list[int]:
    """Layers whose MLP output precedes ``hook``: 0..L for blocks.L.hook_resid_post (and mid-block hooks after the
    MLP), 0..L-1 for blocks.L.hook_resid_pre."""
    layer = hook_layer(hook)
    if layer is None:
        raise ValueError(f"cannot tell the layer of hook {hook!r}: pass NeuronConfig(layers=[...])")
    last = layer - 1 if hook.endswith(("hook_resid_pre", "attn_out", "hook_resid_mid", "hook_attn_in")) else layer
    if last < 0:
        raise ValueError(f"no MLP layer precedes {hook!r}")
    return list(range(last + 1))


# ----------------------------------------------------------------------------------------------------------------
# Streaming correlation (pure tensors)
# ----------------------------------------------------------------------------------------------------------------


class StreamingCorrelation:
    """Pearson correlations between ``n_features`` sparse features and ``n_neurons`` dense neurons, streamed."""

    def __init__(self, n_features: int, n_neurons: int, device: torch.device | str = "cpu",
                 entry_chunk_bytes: int = 64 << 20):
        self.F, self.N = int(n_features), int(n_neurons)
        self.device = torch.device(device)
        self.n = 0
        self.sf = torch.zeros(self.F, dtype=torch.float64, device=self.device)
        self.sff = torch.zeros(self.F, dtype=torch.float64, device=self.device)
        self.sn = torch.zeros(self.N, dtype=torch.float64, device=self.device)
        self.snn = torch.zeros(self.N, dtype=torch.float64, device=self.device)
        self.sfn = torch.zeros(self.F, self.N, dtype=torch.float32, device=self.device)
        self.shift: Tensor | None = None
        self.chunk = max(1, entry_chunk_bytes // (4 * max(1, self.N)))

    def update_sparse(self, rows: Tensor, feats: Tensor, vals: Tensor, neurons: Tensor) -> None:
        """One batch: feature entries (row, feature, value) over ``neurons.shape[0]`` tokens, neurons [n, N]."""
        if neurons.shape[1] != self.N:
            raise ValueError(f"expected {self.N} neurons, got {neurons.shape[1]}")
        nb = neurons.to(self.device, torch.float32)
        if self.shift is None:
            self.shift = nb.mean(0)
        nb = nb - self.shift
        self.n += nb.shape[0]
        self.sn += nb.sum(0, dtype=torch.float64)
        self.snn += nb.to(torch.float64).pow(2).sum(0)
        if feats.numel() == 0:
            return
        rows, feats = rows.to(self.device), feats.to(self.device, torch.int64)
        vals = vals.to(self.device, torch.float32)
        self.sf.index_add_(0, feats, vals.to(torch.float64))
        self.sff.index_add_(0, feats, vals.to(torch.float64).pow(2))
        for i in range(0, feats.numel(), self.chunk):
            r, f, v = rows[i:i + self.chunk], feats[i:i + self.chunk], vals[i:i + self.chunk]
            self.sfn.index_add_(0, f, nb[r] * v[:, None])

    def update_dense(self, features: Tensor, neurons: Tensor) -> None:
        """One batch of dense features [n, F] and neurons [n, N]."""
        nz = (features != 0).nonzero()
        self.update_sparse(nz[:, 0], nz[:, 1], features[nz[:, 0], nz[:, 1]], neurons)

    def correlations(self, rows: slice | None = None) -> Tensor:
        """[F, N] correlations (or a slice of feature rows); NaN where a feature or neuron is constant."""
        rows = rows or slice(None)
        n = max(self.n, 1)
        mf, mn = self.sf[rows] / n, self.sn / n
        cov = self.sfn[rows].to(torch.float64) / n - mf[:, None] * mn[None, :]
        vf = (self.sff[rows] / n - mf.pow(2)).clamp_min(0)
        vn = (self.snn / n - mn.pow(2)).clamp_min(0)
        denom = (vf[:, None] * vn[None, :]).sqrt()
        corr = torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.full_like(cov, float("nan")))
        return corr.clamp(-1, 1).to(torch.float32)

    def best(self, absolute: bool = False, block: int = 1024) -> tuple[Tensor, Tensor]:
        """Per feature: the best correlation (NaN if undefined) and the index of its neuron (-1 if undefined)."""
        best = torch.full((self.F,), float("nan"))
        arg = torch.full((self.F,), -1, dtype=torch.int64)
        for i in range(0, self.F, block):
            c = self.correlations(slice(i, i + block)).cpu()
            key = c.abs() if absolute else c
            key = torch.nan_to_num(key, nan=-float("inf"))
            v, a = key.max(dim=1)
            ok = torch.isfinite(v)
            best[i:i + block] = torch.where(ok, c.gather(1, a[:, None]).squeeze(1), torch.full_like(v, float("nan")))
            arg[i:i + block] = torch.where(ok, a, torch.full_like(a, -1))
        return best, arg


# ----------------------------------------------------------------------------------------------------------------
# Model runs
# ----------------------------------------------------------------------------------------------------------------


def _forward(model: ModelLike, tokens: Tensor, hooks: list[str], stop: int | None) -> dict[str, Tensor]:
    grabbed: dict[str, Tensor] = {}

    def grab(act, hook):
        grabbed[hook.name] = act.detach()
        return act

    device = next(model.parameters()).device
    with torch.inference_mode():
        model.run_with_hooks(tokens.to(device), fwd_hooks=[(h, grab) for h in hooks], stop_at_layer=stop,
                             return_type=None)
    return grabbed


def _stop(model: ModelLike, layers: Sequence[int], hook: str) -> int | None:
    deepest = max(max(layers), hook_layer(hook) or 0)
    return deepest + 1 if deepest + 1 < model.cfg.n_layers else None


def _hook_of(sae: SAELike, store: StoreLike | None = None) -> str:
    hook = getattr(getattr(sae, "metadata", None), "hook_name", None)
    if not hook and store is not None and len(store.hooks) == 1:
        hook = store.hooks[0]
    if not hook:
        raise ValueError("the SAE's metadata names no hook: set sae.metadata.hook_name")
    return hook


def _context_tokens(store: StoreLike, contexts: Sequence[int]) -> Tensor:
    all_ids = store.token_ids()
    idx = np.asarray(list(contexts), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= store.n_contexts):
        raise ValueError(f"context index out of range [0, {store.n_contexts})")
    return torch.from_numpy(np.array(all_ids[idx], dtype=np.int64))


@dataclass
class NeuronCorrelations:
    """Best neuron correlation per feature. ``best_corr`` is NaN for features that never fired on the tokens."""

    features: Tensor
    best_corr: Tensor
    best_layer: Tensor
    best_neuron: Tensor
    layers: list[int]
    d_mlp: int
    n_tokens: int
    threshold: float = 0.3
    meta: dict = field(default_factory=dict)

    @property
    def defined(self) -> Tensor:
        return ~torch.isnan(self.best_corr)

    def fraction_below(self, threshold: float | None = None) -> float:
        """Fraction of the features with a defined correlation whose best correlation is <= threshold."""
        t = self.threshold if threshold is None else threshold
        c = self.best_corr[self.defined]
        return float((c <= t).float().mean()) if c.numel() else float("nan")

    def histogram(self, bins: int = 20) -> tuple[list[float], list[int]]:
        c = self.best_corr[self.defined]
        counts = torch.histc(c, bins=bins, min=-1.0, max=1.0) if c.numel() else torch.zeros(bins)
        return [-1 + 2 * i / bins for i in range(bins + 1)], [int(x) for x in counts]

    def summary(self) -> dict:
        c = self.best_corr[self.defined]
        return {"n_features": int(self.features.numel()), "n_defined": int(c.numel()), "n_tokens": self.n_tokens,
                "layers": self.layers, "n_neurons": len(self.layers) * self.d_mlp, "threshold": self.threshold,
                "fraction_best_corr_below_threshold": self.fraction_below(),
                "median_best_corr": float(c.median()) if c.numel() else float("nan"),
                "mean_best_corr": float(c.mean()) if c.numel() else float("nan"), "paper_fraction": 0.82}

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_tensors({"features": self.features, "best_corr": self.best_corr,
                                  "best_layer": self.best_layer, "best_neuron": self.best_neuron},
                                 d / "neuron_correlations.safetensors")
        write_tagged_json(d / "neuron_correlations.json",
                          {"layers": self.layers, "d_mlp": self.d_mlp, "n_tokens": self.n_tokens,
                           "threshold": self.threshold, "meta": self.meta, "summary": self.summary()},
                          format=NEURONS_FORMAT, format_version=NEURONS_VERSION, indent=1)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "NeuronCorrelations":
        d = Path(directory)
        meta = read_tagged_json(d / "neuron_correlations.json", format=NEURONS_FORMAT,
                                what="a neuron-correlations file", fix="rerun neuron_correlations",
                                max_version=NEURONS_VERSION)
        t, _ = load_tensors(d / "neuron_correlations.safetensors", "rerun neuron_correlations")
        try:
            return cls(t["features"], t["best_corr"], t["best_layer"], t["best_neuron"], list(meta["layers"]),
                       int(meta["d_mlp"]), int(meta["n_tokens"]), float(meta["threshold"]), meta.get("meta", {}))
        except KeyError as err:
            raise ValueError(f"{d} lacks {err}: rerun neuron_correlations") from None


def neuron_correlations(model: ModelLike, sae: SAE, store: StoreLike, contexts: Sequence[int] | range, *,
                        features: Sequence[int] | Tensor | None = None, config: NeuronConfig | None = None
                        ) -> NeuronCorrelations:
    """Best Pearson correlation of each feature with the MLP neurons of the earlier layers, over the tokens of
    ``contexts`` of ``store`` (use held-out contexts, e.g. :func:`workbench.analysis.explain.heldout_contexts`). The model
    is run on the store's token ids; BOS positions are left out."""
    cfg = config or NeuronConfig()
    hook = _hook_of(sae, store)
    layers = sorted(set(cfg.layers)) if cfg.layers is not None else default_neuron_layers(hook)
    if not layers or min(layers) < 0 or max(layers) >= model.cfg.n_layers:
        raise ValueError(f"layers {layers} out of range [0, {model.cfg.n_layers})")
    d_sae = int(sae.cfg.d_sae)
    feats = torch.arange(d_sae) if features is None else torch.as_tensor(features, dtype=torch.int64).flatten()
    if feats.numel() == 0 or int(feats.min()) < 0 or int(feats.max()) >= d_sae:
        raise ValueError(f"feature index out of range [0, {d_sae}) (or no features selected)")
    sel_map = torch.full((d_sae,), -1, dtype=torch.int64)
    sel_map[feats] = torch.arange(feats.numel())
    d_mlp = int(model.cfg.d_mlp)
    mlp_hooks = [f"blocks.{l}.mlp.hook_post" for l in layers]
    stop = _stop(model, layers, hook)
    device = next(model.parameters()).device
    acc = StreamingCorrelation(feats.numel(), len(layers) * d_mlp, device, cfg.entry_chunk_bytes)
    contexts = list(contexts)
    if not contexts:
        raise ValueError("no contexts to correlate over")
    skip_bos = bool(store.prepend_bos)
    sel_map = sel_map.to(device)
    for i in tqdm(range(0, len(contexts), cfg.batch_contexts), desc="neurons", disable=not cfg.progress,
                  leave=False, dynamic_ncols=True):
        toks = _context_tokens(store, contexts[i:i + cfg.batch_contexts])
        acts = _forward(model, toks, [hook, *mlp_hooks], stop)
        x = acts[hook]
        if skip_bos:
            x = x[:, 1:]
        x = x.reshape(-1, x.shape[-1])
        if x.shape[-1] != sae.cfg.d_in:
            raise ValueError(f"d_model mismatch: hook {hook!r} gives {x.shape[-1]} but the SAE takes {sae.cfg.d_in}")
        neu = torch.cat([(acts[h][:, 1:] if skip_bos else acts[h]).reshape(x.shape[0], -1) for h in mlp_hooks], 1)
        rows, fs, vals = sparse_encode(sae, x.to(sae.device))
        local = sel_map[fs.to(device)]
        keep = local >= 0
        acc.update_sparse(rows[keep], local[keep], vals[keep], neu)
    best, arg = acc.best(cfg.absolute)
    layer_idx = torch.where(arg >= 0, torch.div(arg, d_mlp, rounding_mode="floor"), torch.full_like(arg, -1))
    best_layer = torch.where(arg >= 0, torch.tensor(layers)[layer_idx.clamp_min(0)], torch.full_like(arg, -1))
    best_neuron = torch.where(arg >= 0, arg % d_mlp, torch.full_like(arg, -1))
    return NeuronCorrelations(feats, best, best_layer, best_neuron, layers, d_mlp, acc.n, cfg.threshold,
                              {"hook": hook, "absolute": cfg.absolute, "n_contexts": len(contexts)})


# ----------------------------------------------------------------------------------------------------------------
# Explainability side by side
# ----------------------------------------------------------------------------------------------------------------


def _unit_acts(model: ModelLike, sae: SAELike, store: StoreLike, contexts: Sequence[int], hook: str, features: Tensor,
               neurons: Tensor,
               d_mlp: int, layers_all: list[int], batch_contexts: int) -> tuple[Tensor, Tensor, Tensor]:
    """Token ids [n, ctx], feature acts [n, ctx, F], neuron acts [n, ctx, N] for the given units."""
    need_layers = sorted({int(layers_all[int(i) // d_mlp]) for i in neurons.tolist()})
    hooks = [hook] + [f"blocks.{l}.mlp.hook_post" for l in need_layers]
    stop = _stop(model, need_layers or [0], hook)
    ids_l, f_l, n_l = [], [], []
    for i in range(0, len(contexts), batch_contexts):
        toks = _context_tokens(store, contexts[i:i + batch_contexts])
        acts = _forward(model, toks, hooks, stop)
        x = acts[hook]
        b, c, d = x.shape
        with torch.no_grad():
            f = sae.encode(x.reshape(b * c, d).to(sae.device))[:, features.to(sae.device)].reshape(b, c, -1)
        cols = []
        for g in neurons.tolist():
            layer = layers_all[g // d_mlp]
            cols.append(acts[f"blocks.{layer}.mlp.hook_post"][..., g % d_mlp])
        nn_ = torch.stack(cols, -1) if cols else torch.zeros(b, c, 0)
        if store.prepend_bos:
            f[:, 0] = 0
            nn_[:, 0] = 0
        ids_l.append(toks)
        f_l.append(f.float().cpu())
        n_l.append(nn_.float().cpu())
    return torch.cat(ids_l), torch.cat(f_l), torch.cat(n_l)


def compare_explanations(model: ModelLike, sae: SAELike, store: StoreLike, train_contexts: Sequence[int],
                         test_contexts: Sequence[int], *,
                         n_features: int = 50, n_neurons: int = 50, features: Sequence[int] | None = None,
                         layers: Sequence[int] | None = None, fire_fraction: float = 0.2, seed: int = 0,
                         explainer: TokenExplainer | None = None, batch_contexts: int = 16, tokenizer=None,
                         min_firing: int = 5) -> dict:
    """The offline explainer and scorer on features and neurons side by side.

    Units: ``features`` (default: ``n_features`` random features firing on at least ``min_firing`` training tokens)
    and ``n_neurons`` random neurons of ``layers`` (default: those up to the SAE's layer). A unit "fires" above
    ``fire_fraction`` of its max on the training contexts, for both kinds. Returns {"features": [...],
    "neurons": [...], "summary": {...}} with each unit's explanation text and score.
    """
    hook = _hook_of(sae, store)
    layers_all = sorted(set(layers)) if layers is not None else default_neuron_layers(hook)
    d_mlp = int(model.cfg.d_mlp)
    gen = torch.Generator().manual_seed(seed)
    neurons = torch.randperm(len(layers_all) * d_mlp, generator=gen)[:n_neurons].sort().values
    train_contexts, test_contexts = list(train_contexts), list(test_contexts)
    if not train_contexts or not test_contexts:
        raise ValueError("compare_explanations needs training and held-out (test) contexts")
    if features is None:
        cand = torch.arange(int(sae.cfg.d_sae))
        ids, f_all, _ = _unit_acts(model, sae, store, train_contexts[: max(1, len(train_contexts) // 4)], hook,
                                   cand, neurons[:0], d_mlp, layers_all, batch_contexts)
        alive = ((f_all > 0).sum((0, 1)) >= min_firing).nonzero().squeeze(1)
        feats = alive[torch.randperm(alive.numel(), generator=gen)[:n_features]].sort().values
        del f_all
    else:
        feats = torch.as_tensor(list(features), dtype=torch.int64)
    tr_ids, tr_f, tr_n = _unit_acts(model, sae, store, train_contexts, hook, feats, neurons, d_mlp, layers_all,
                                    batch_contexts)
    te_ids, te_f, te_n = _unit_acts(model, sae, store, test_contexts, hook, feats, neurons, d_mlp, layers_all,
                                    batch_contexts)
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    uniq = torch.unique(tr_ids).tolist()
    vocab = dict(zip(uniq, tokenizer.batch_decode([[t] for t in uniq]))) if tokenizer is not None else {}
    explainer = explainer or TokenExplainer(fire_fraction=fire_fraction)
    valid = torch.ones(te_ids.shape, dtype=torch.bool)
    if store.prepend_bos:
        valid[:, 0] = False
    out: dict[str, Any] = {}
    for kind, tr, te, units, labels in (
            ("features", tr_f, te_f, feats, [f"F{int(i)}" for i in feats]),
            ("neurons", tr_n, te_n, neurons,
             [f"L{layers_all[int(g) // d_mlp]} N{int(g) % d_mlp}" for g in neurons])):
        rows = []
        exs = examples_from_activations(tr, tr_ids, units=units.tolist(), kind=kind[:-1], labels=labels,
                                        threshold=0.0, seed=seed, vocab=vocab, context_offset=0)
        for j, ex in enumerate(exs):
            mx = ex.max_activation
            thr = fire_fraction * max(mx, 0.0)
            expl = explainer.explain(ex)
            acc = ScoreAccumulator(mx, 10, thr)
            acc.update(expl.predict(te_ids), te[..., j], valid)
            s = acc.result()
            rows.append({"unit": int(units[j]), "label": labels[j], "explanation": expl.text,
                         "precision": s.precision, "recall": s.recall, "f1": s.f1, "n_firing": s.n_firing,
                         "bucket_positive_rate": s.bucket_positive_rate})
        out[kind] = rows

    def stats(rows: list[dict]) -> dict:
        scored = [r for r in rows if r["n_firing"] > 0]
        if not scored:
            return {"n_units": len(rows), "n_scored": 0}
        arr = {k: np.array([r[k] for r in scored]) for k in ("precision", "recall", "f1")}
        return {"n_units": len(rows), "n_scored": len(scored),
                **{f"mean_{k}": float(v.mean()) for k, v in arr.items()},
                **{f"median_{k}": float(np.median(v)) for k, v in arr.items()}}

    out["summary"] = {"features": stats(out["features"]), "neurons": stats(out["neurons"]),
                      "fire_fraction": fire_fraction, "layers": layers_all, "n_train_contexts": len(train_contexts),
                      "n_test_contexts": len(test_contexts)}
    return out
