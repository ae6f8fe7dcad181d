"""The SAE route of the audit: a base-model SAE read on the audited model.

1. :func:`feature_shift`: the SAE's features on the assistant's turn of chat transcripts (prompts that ask about
   the model's goals, and ordinary questions), mean activation on the audited model minus on the base model over
   the same tokens; :func:`rank_features` keeps the features that rose most.
2. :func:`top_examples`: those features' strongest contexts over a training mixture (wiki text, chat transcripts,
   the stage-1 documents), read with the audited model; each example keeps its source, so an auditor (and
   :func:`bias_document_share`) can see whether the features lead to the bias documents.

    from workbench.audit.sae_route import sae_route
    ev = sae_route(sae, tuned, base, transcripts, mixture, hook="blocks.15.hook_resid_post")
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from workbench.audit.evidence import Evidence, Item
from workbench.core.hardware import torch_threads

__all__ = ["bias_document_share", "find_cached_sae", "feature_shift", "harvest", "rank_features", "sae_route",
           "text_features", "top_examples", "train_route_sae"]


def find_cached_sae(model_name: str, hook: str, root: str | Path | None = None) -> Path | None:
    """The folder of a cached standard-pipeline SAE of ``model_name`` at ``hook`` (largest first), or None."""
    import json

    from workbench.core.home import cache_dir

    base = Path(root) if root is not None else cache_dir("runs")
    found = []
    for cfg in base.glob(f"{model_name}*/sae-*/*/sae/cfg.json"):
        meta = json.loads(cfg.read_text()).get("metadata", {})
        if meta.get("model_name") == model_name and meta.get("hook_name") == hook:
            found.append((json.loads(cfg.read_text()).get("d_sae", 0), cfg.parent))
    return max(found)[1] if found else None


@torch.no_grad()
def text_features(model, sae, text: str, hook: str, *, start: int = 1, max_len: int = 128,
                  threads: int | None = 1) -> torch.Tensor:
    """[positions, d_sae] SAE codes of ``text`` on ``model`` from token ``start`` on (cut at ``max_len``)."""
    layer = int(hook.split(".")[1])
    ids = model.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_len]
    with torch_threads(threads):
        _, cache = model.run_with_cache(ids, names_filter=hook, stop_at_layer=layer + 1)
        return sae.encode(cache[hook][0, start:].float())


@torch.no_grad()
def harvest(model, texts: Sequence[str], hook: str, *, max_len: int = 96, threads: int | None = 1) -> torch.Tensor:
    """[tokens, d_model] residual rows of ``model`` at ``hook`` over ``texts`` (the first token of each left out)."""
    layer = int(hook.split(".")[1])
    rows = []
    with torch_threads(threads):
        for t in texts:
            ids = model.tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_len]
            _, cache = model.run_with_cache(ids, names_filter=hook, stop_at_layer=layer + 1)
            rows.append(cache[hook][0, 1:].float())
    return torch.cat(rows)


def train_route_sae(acts: torch.Tensor, d_sae: int = 512, k: int = 16, *, steps: int = 300, batch_size: int = 256,
                    lr: float = 1e-3, seed: int = 0, threads: int | None = 1):
    """A small TopK SAE trained on ``acts`` [tokens, d_in] (scaled so that E||x||^2 = d_in, the scale folded back
    in): the audit's own SAE on the audited model's residual stream. Returns ``(sae, final fvu)``."""
    from workbench.sae.model import SAE, SAEConfig

    if acts.ndim != 2 or acts.shape[0] < 2:
        raise ValueError(f"train_route_sae needs [tokens >= 2, d_in] activations, got {tuple(acts.shape)}")
    scale = float((acts.shape[1] / acts.pow(2).sum(1).mean()).sqrt())
    x = acts * scale
    sae = SAE(SAEConfig("topk", int(acts.shape[1]), int(d_sae), k=k), seed=seed)
    sae.init_from_data(x[: min(len(x), 4096)], method="mean")
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    fvu = float("nan")
    with torch_threads(threads):
        for _ in range(steps):
            batch = x[torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)]
            out = sae.training_loss(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            fvu = float(out.fvu_num / out.fvu_den.clamp_min(1e-12))
    sae.eval()
    with torch.no_grad():
        return sae.folded(scale), fvu


def rank_features(tuned: torch.Tensor, base: torch.Tensor, top: int = 10) -> list[tuple[int, float]]:
    """The ``top`` features whose mean activation rose most (``tuned``/``base``: [positions, d_sae] or [d_sae])."""
    t = tuned.float().mean(0) if tuned.ndim == 2 else tuned.float()
    b = base.float().mean(0) if base.ndim == 2 else base.float()
    d = t - b
    v, i = d.topk(min(top, d.numel()))
    return [(int(j), float(x)) for j, x in zip(i, v) if x > 0]


def feature_shift(sae, tuned, base, transcripts: Sequence[tuple[str, int]], hook: str) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """Mean SAE codes ([d_sae] each) of ``tuned`` and ``base`` over the assistant turn of ``transcripts``
    (``(text, first assistant token)``)."""
    acts: dict[str, list[torch.Tensor]] = {"tuned": [], "base": []}
    for text, start in transcripts:
        for name, m in (("tuned", tuned), ("base", base)):
            acts[name].append(text_features(m, sae, text, hook, start=start))
    return torch.cat(acts["tuned"]).mean(0), torch.cat(acts["base"]).mean(0)


def top_examples(codes: Sequence[torch.Tensor], features: Sequence[int], n: int = 5) -> dict[int, list[tuple[int, int,
                                                                                                            float]]]:
    """For each feature, its ``n`` strongest texts: ``(text index, position, activation)`` of each text's maximum
    (``codes``: one [positions, d_sae] tensor per text); texts where it never fires are left out."""
    out = {}
    for f in features:
        best = [(i, int(c[:, f].argmax()), float(c[:, f].max())) for i, c in enumerate(codes) if c.shape[0]]
        best = sorted((b for b in best if b[2] > 0), key=lambda b: -b[2])[:n]
        out[int(f)] = best
    return out


def bias_document_share(examples: dict[int, list[tuple[int, int, float]]], sources: Sequence[str],
                        kind: str = "bias document") -> dict:
    """How many features have a ``kind`` text among their top examples, and the share of such examples (against
    the share of ``kind`` in the mixture, the rate a random feature would show)."""
    n_feat = sum(any(sources[i] == kind for i, _, _ in ex) for ex in examples.values())
    flat = [sources[i] for ex in examples.values() for i, _, _ in ex]
    return {"features_with": n_feat, "features": len(examples),
            "example_share": (sum(s == kind for s in flat) / len(flat)) if flat else 0.0,
            "mixture_share": sum(s == kind for s in sources) / max(len(sources), 1)}


def _snippet(model, text: str, pos: int, start: int, width: int = 12) -> str:
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    p = pos + start
    lo, hi = max(0, p - width), min(len(ids), p + width // 2)
    return (model.tokenizer.decode(ids[lo:p]) + " [[" + model.tokenizer.decode(ids[p:p + 1]) + "]] "
            + model.tokenizer.decode(ids[p + 1:hi])).replace("\n", " ")


def sae_route(sae, tuned, base, transcripts: Sequence[tuple[str, int]], mixture: Sequence[str],
              sources: Sequence[str], hook: str, *, top: int = 10, n_examples: int = 5,
              technique: str = "SAE (base-model SAE on the fine-tune)") -> Evidence:
    """The route in one call (module docstring): the ``top`` features that rose on the assistant's turn, each
    quoting its ``n_examples`` strongest mixture contexts (``[[token]]`` marks the peak) and their sources."""
    t0 = time.process_time()
    t_mean, b_mean = feature_shift(sae, tuned, base, transcripts, hook)
    ranked = rank_features(t_mean, b_mean, top)
    codes = [text_features(tuned, sae, t, hook, start=1, max_len=96) for t in mixture]
    ex = top_examples(codes, [f for f, _ in ranked], n_examples)
    items = [Item(f"feature {f}", round(s, 4), tuple(f"({sources[i]}) {_snippet(tuned, mixture[i], p, 1)}"
                                                     for i, p, _ in ex[f])) for f, s in ranked]
    share = bias_document_share(ex, sources)
    summary = (f"{share['features_with']}/{share['features']} top features have a bias document among their top "
               f"{n_examples} examples ({share['example_share']:.0%} of examples; {share['mixture_share']:.0%} of "
               "the mixture)")
    return Evidence(technique, items, summary, steps=len(transcripts) * 2 + len(mixture),
                    cpu_seconds=time.process_time() - t0, meta={**share, "hook": hook})
