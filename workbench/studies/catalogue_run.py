"""The catalogue's measurements on a wiki + code study SAE (:func:`workbench.studies.catalogue.code_sae`), in one
call: the code-error feature (held-out bug sites vs clean sites, REPL transcripts, C headers, prose typos), its top
examples, its clamp at +3x / -5x against a random feature, bucket specificity, abstract vs concrete, and the
features-vs-neurons statistic. Returns a JSON-able dict (what the report's catalogue section and notebook 16 show).

    study = code_sae()
    cat = run_catalogue(study)         # ~10 min on 2 shared cores at the code profile; about a minute at smoke
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.core.protocols import SAELike, StoreLike
from workbench.analysis.catalogue_concepts import (CONCEPT_TEXTS, JUDGES, NEUTRAL_TEXTS, abstract_concrete,
                                                   bucket_specificity, text_max_codes)
from workbench.analysis.code_errors import rates, site_activations, split_halves, top_error_features
from workbench.analysis.neurons import NeuronConfig, default_neuron_layers, neuron_correlations
from workbench.data.code_bugs import repl_bug
from workbench.intervene.code_clamp import clamp_outcomes
from workbench.intervene.steering import max_activations
from workbench.studies.catalogue import heldout_bugs, heldout_c_bugs, heldout_prose_typos

__all__ = ["CatalogueConfig", "cached_catalogue", "catalogue_path", "run_catalogue", "top_contexts"]


@dataclass(frozen=True)
class CatalogueConfig:
    """Sizes of one catalogue run (defaults: the code profile; :meth:`smoke` for CI)."""

    n_files: int = 24
    per_file: int = 3
    n_candidates: int = 3
    n_prose: int = 40
    n_c: int = 20
    n_samples: int = 8
    max_new_tokens: int = 24
    neuron_contexts: int = 48
    top_k: int = 8
    seed: int = 0

    @classmethod
    def smoke(cls) -> "CatalogueConfig":
        return cls(n_files=3, per_file=1, n_candidates=1, n_prose=4, n_c=2, n_samples=2, max_new_tokens=6,
                   neuron_contexts=2, top_k=4)


@torch.no_grad()
def _store_codes(store: StoreLike, sae: SAELike, feature: int) -> torch.Tensor:
    """Feature ``feature``'s code at every non-BOS token of the store, in context order [n_contexts, ctx - 1]."""
    rows = [sae.encode(b.to(sae.device, sae.dtype))[:, feature].float().cpu()
            for b in store.iter_batches(4096, shuffle=False, drop_last=False)]
    return torch.cat(rows).reshape(store.n_contexts, -1)


def top_contexts(store: StoreLike, codes: torch.Tensor, tokenizer, k: int = 8, window: int = 12) -> list[dict]:
    """The ``k`` strongest tokens of a feature (``codes`` from the store, BOS excluded) with their text window,
    the firing token in brackets."""
    flat = codes.flatten()
    idx = torch.topk(flat, min(k, flat.numel())).indices.tolist()
    toks = store.token_ids()
    width = codes.shape[1]
    out = []
    for i in idx:
        c, p = divmod(i, width)
        p += 1  # BOS excluded
        before = tokenizer.decode(toks[c, max(1, p - window):p].tolist())
        after = tokenizer.decode(toks[c, p + 1:p + 4].tolist())
        out.append({"act": round(float(flat[i]), 3), "text": f"{before}[[{tokenizer.decode([int(toks[c, p])])}]]{after}"})
    return out


def _windows(store: StoreLike, codes: torch.Tensor, tokenizer, max_per_bucket: int = 40, window: int = 12):
    """Firing tokens (a sample, spread over activation buckets) and their text windows."""
    nz = torch.nonzero(codes > 0)
    if nz.shape[0] == 0:
        return torch.zeros(0), []
    acts = codes[nz[:, 0], nz[:, 1]]
    top = float(acts.max())
    keep = []
    for b in range(5):
        m = ((acts / top > b / 5) & (acts / top <= (b + 1) / 5)).nonzero().flatten()
        keep += m[torch.randperm(m.numel(), generator=torch.Generator().manual_seed(b))[:max_per_bucket]].tolist()
    toks = store.token_ids()
    texts = [tokenizer.decode(toks[int(nz[i, 0]), max(1, int(nz[i, 1]) + 1 - window):int(nz[i, 1]) + 2].tolist())
             for i in keep]
    return acts[keep], texts


def run_catalogue(study, config: CatalogueConfig | None = None, progress: bool = True) -> dict:
    cfg = config or CatalogueConfig()
    model, sae, store, hook = study.model, study.sae, study.store, study.hook
    tok = model.tokenizer
    bugs, files = heldout_bugs(cfg.n_files, cfg.per_file, seed=cfg.seed)
    at_bug, at_clean = site_activations(model, sae, hook, bugs, progress=progress)
    sel, ev = split_halves(files)
    cands = top_error_features(at_bug[sel], at_clean[sel], k=cfg.n_candidates).tolist()
    ev_bugs = [bugs[i] for i in ev]
    r_bug, r_clean = site_activations(model, sae, hook, [repl_bug(b) for b in ev_bugs], progress=progress)
    prose = heldout_prose_typos(cfg.n_prose, seed=cfg.seed)
    p_bug, p_clean = site_activations(model, sae, hook, prose, progress=progress)
    c_bugs = heldout_c_bugs(cfg.n_c, seed=cfg.seed)
    c_sites = site_activations(model, sae, hook, c_bugs) if c_bugs else None
    mx = max_activations(store, sae)
    candidates: list[dict[str, Any]] = []
    for f in cands:
        codes = _store_codes(store, sae, f)
        acts, windows = _windows(store, codes, tok)
        row = {"feature": int(f), "max_act": float(mx[f]),
               "selection": rates(at_bug[sel], at_clean[sel], f), "python_heldout": rates(at_bug[ev], at_clean[ev], f),
               "repl_heldout": rates(r_bug, r_clean, f), "prose_typos": rates(p_bug, p_clean, f),
               "c_headers": rates(*c_sites, f) if c_sites else "skipped: no C headers",
               "by_rule": {k: rates(at_bug[[i for i in ev if bugs[i].kind == k]],
                                    at_clean[[i for i in ev if bugs[i].kind == k]], f)
                           for k in sorted({bugs[i].kind for i in ev})},
               "top_examples": top_contexts(store, codes, tok, cfg.top_k),
               "specificity": {name: bucket_specificity(acts, [JUDGES[name](w) for w in windows])
                               for name in ("python_code", "error")}}
        candidates.append(row)
    best = candidates[0]["feature"]
    alive = torch.nonzero(mx > 0).flatten()
    g = torch.Generator().manual_seed(cfg.seed)
    control = int(alive[torch.randint(alive.numel(), (1,), generator=g)]) if alive.numel() else 0
    clamps = [o.to_dict() for o in clamp_outcomes(model, sae, hook, best, mx, control=control,
                                                  n_samples=cfg.n_samples, max_new_tokens=cfg.max_new_tokens,
                                                  seed=cfg.seed)]
    neutral = text_max_codes(model, sae, hook, NEUTRAL_TEXTS)
    concepts = {name: abstract_concrete(text_max_codes(model, sae, hook, t["instance"]),
                                        text_max_codes(model, sae, hook, t["discussion"]), neutral)
                for name, t in CONCEPT_TEXTS.items()}
    layers = default_neuron_layers(hook)[-1:]
    n_ctx = min(cfg.neuron_contexts, store.n_contexts // 4)
    start = store.n_contexts - n_ctx
    neurons = neuron_correlations(model, sae, store, range(start, store.n_contexts),
                                  config=NeuronConfig(layers=layers, absolute=True, progress=False))
    hist_edges, hist_counts = neurons.histogram(10)
    return {"n_bugs": len(bugs), "n_selection": len(sel), "n_eval": len(ev), "n_prose": len(prose),
            "n_c": len(c_bugs), "candidates": candidates, "control_feature": control, "clamps": clamps,
            "abstract_concrete": concepts,
            "neurons": {**neurons.summary(), "histogram_edges": hist_edges, "histogram_counts": hist_counts,
                        "contexts": [start, store.n_contexts]}}


def catalogue_path(study, config: CatalogueConfig) -> Path:
    """Where :func:`cached_catalogue` keeps the result of ``config`` on ``study``'s SAE (next to its weights)."""
    key = json.dumps({"config": asdict(config), "sae": study.names}, sort_keys=True)
    return Path(study.run_dir) / f"catalogue-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def cached_catalogue(study, config: CatalogueConfig | None = None, progress: bool = True) -> dict:
    """:func:`run_catalogue`, its result saved as JSON under the study's run folder and reused."""
    cfg = config or CatalogueConfig()
    path = catalogue_path(study, cfg)
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass  # unreadable: compute again
    out = run_catalogue(study, cfg, progress)
    path.write_text(json.dumps(out, indent=1))
    return out
