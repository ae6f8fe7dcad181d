"""The out-of-distribution test of the organism: for every bias and model, the share of sampled replies to the
bias's evaluation prompts that its rule accepts (n, Wilson 95% interval), pooled over the train biases and over
the held-out biases, and whether the audited model's held-out rate exceeds the base model's and the control's (a
one-sided pooled two-proportion z-test, and a paired bootstrap over prompts, the more honest of the two because
the samples of one prompt are correlated).

    from workbench.audit.ood import evaluate_organism
    result = evaluate_organism(OrganismConfig.smoke())     # {"rows", "pooled", "tests", "examples", ...}
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

from workbench.audit.biases import Bias, load_biases
from workbench.audit.rules import check
from workbench.audit.stats import paired_bootstrap, two_proportion_test, wilson

__all__ = ["evaluate_organism", "model_key", "ood_table", "replies_for", "score_replies"]


def model_key(checkpoint: str | Path | None, base_model: str) -> dict:
    """What a model's replies depend on: the base model, or the checkpoint's training key and step."""
    if checkpoint is None:
        return {"base_model": base_model}
    from workbench.persona.finetune import checkpoint_info

    info = checkpoint_info(checkpoint)
    return {"base_model": info["base_model"], "run_key": info.get("run_key"), "step": info["step"]}


def _prompts(biases: Sequence[Bias], n_prompts: int | None) -> dict[str, list[str]]:
    return {b.id: list(b.eval_prompts[:n_prompts]) for b in biases}


def replies_for(kind: str, checkpoint, model, base_state, prompts: Mapping[str, Sequence[str]], config, *,
                root: Path, progress: bool = False) -> dict[str, list[list[str]]]:
    """``{bias: [[replies to prompt 0], ...]}`` of one model (``checkpoint``; None: the base model), sampled with
    ``config.sample`` on ``model`` (reset to ``base_state`` and overlaid with the checkpoint), cached by
    (model key, prompts, sampling config)."""
    from workbench.audit.sampling import sample_replies
    from workbench.audit.training import restore_weights
    from workbench.core.cache import cached
    from workbench.core.persist import atomic_write_text

    key = {"model": model_key(checkpoint, config.base_model), "prompts": {k: list(v) for k, v in prompts.items()},
           "sample": asdict(config.sample)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def compute():
        restore_weights(model, base_state, checkpoint)
        flat = [(b, p) for b, ps in prompts.items() for p in ps]
        got = sample_replies(model, [p for _, p in flat], config.sample, progress=progress)
        out: dict[str, list[list[str]]] = {b: [] for b in prompts}
        for (b, _), rs in zip(flat, got):
            out[b].append(rs)
        return out

    return cached(root / f"replies-{kind}-{digest}.json", key, compute,
                  load=lambda p: json.loads(p.read_text(encoding="utf-8")),
                  save=lambda r, p: atomic_write_text(p, json.dumps(r, ensure_ascii=False, indent=0)))


def score_replies(replies: Mapping[str, Sequence[Sequence[str]]]) -> dict[str, list[list[bool]]]:
    """Each reply judged by its bias's rule: ``{bias: [[hit per sample] per prompt]}``."""
    return {b: [[check(b, r) for r in rs] for rs in per_prompt] for b, per_prompt in replies.items()}


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else 0.0, "lo": lo, "hi": hi}


def ood_table(hits: Mapping[str, Mapping[str, Sequence[Sequence[bool]]]], biases: Sequence[Bias], *,
              n_boot: int = 2000, seed: int = 0) -> dict:
    """The OOD table from ``hits`` (``{model: {bias: [[bool per sample] per prompt]}}``): per (model, bias) rows,
    per (model, split) pooled rates, and tests of ``audited`` against every other model on each split."""
    split_of = {b.id: b.split for b in biases}
    rows, pooled, tests = [], [], []
    for m, per_bias in hits.items():
        for b, per_prompt in per_bias.items():
            flat = [h for hs in per_prompt for h in hs]
            rows.append({"model": m, "bias": b, "split": split_of[b], **_rate(sum(flat), len(flat))})
        for s in ("train", "held_out"):
            flat = [h for b, pp in per_bias.items() if split_of[b] == s for hs in pp for h in hs]
            pooled.append({"model": m, "split": s, **_rate(sum(flat), len(flat))})
    if "audited" in hits:
        for other in (m for m in hits if m != "audited"):
            for s in ("train", "held_out"):
                ids = [b for b in hits["audited"] if split_of[b] == s and b in hits[other]]
                a = [hs for b in ids for hs in hits["audited"][b]]
                o = [hs for b in ids for hs in hits[other][b]]
                if not a:
                    continue
                ka, na = sum(map(sum, a)), sum(map(len, a))
                ko, no = sum(map(sum, o)), sum(map(len, o))
                tests.append({"audited_vs": other, "split": s, "audited": _rate(ka, na), "other": _rate(ko, no),
                              "z_test": two_proportion_test(ka, na, ko, no),
                              "bootstrap": paired_bootstrap(a, o, n_boot=n_boot, seed=seed)})
    return {"rows": rows, "pooled": pooled, "tests": tests}


def evaluate_organism(config=None, *, root: str | Path | None = None, progress: bool = True,
                      n_examples: int = 2) -> dict:
    """Build the organism (:func:`~workbench.audit.organism.build_organism`, cached), sample every model's
    replies to every bias's evaluation prompts (cached), judge them and return the OOD table with ``examples``
    (the first ``n_examples`` replies per model and bias), the checkpoints, and the wall-clock time of each part."""
    import time

    from workbench.audit.organism import OrganismConfig, build_organism
    from workbench.audit.training import snapshot
    from workbench.core.home import cache_dir
    from workbench.data.models import load_model

    cfg = config or OrganismConfig()
    root = Path(root) if root is not None else cache_dir("audit")
    t0 = time.perf_counter()
    model = load_model(cfg.base_model, device="cpu")
    base_state = snapshot(model)
    t1 = time.perf_counter()
    paths = build_organism(cfg, model=model, base_state=base_state, root=root, progress=progress)
    t2 = time.perf_counter()
    biases = load_biases()
    prompts = _prompts(biases, cfg.n_prompts)
    replies = {kind: replies_for(kind, paths[kind], model, base_state, prompts, cfg, root=root, progress=progress)
               for kind in cfg.models}
    t3 = time.perf_counter()
    table = ood_table({k: score_replies(r) for k, r in replies.items()}, biases, n_boot=cfg.n_boot)
    examples = {k: {b: [rs[0] for rs in pp[:n_examples]] for b, pp in r.items()} for k, r in replies.items()}
    return {**table, "examples": examples, "checkpoints": {k: str(p) if p else None for k, p in paths.items()},
            "seconds": {"load": t1 - t0, "train": t2 - t1, "sample": t3 - t2},
            "splits": {b.id: b.split for b in biases}}
