"""Persona vectors on SmolLM2-135M-Instruct, measured against the issue's targets; prints JSON (docs/methods.md §12, §16).

    python benchmarks/bench_persona.py                                  # everything, default sizes (an hour or more)
    python benchmarks/bench_persona.py --parts steer,monitor --traits pirate,french --grid 15:1.5,12:0.5

Parts:

- ``judge``: the offline rubric judge's agreement with each trait's hand-labelled set (MAE, Pearson r, accuracy of
  the >= 50 decision), for trait and coherence; and its coherence against the shared labelled set of steered word
  salad (rubric v2 against version 1 in the same run).
- ``steer``: per trait, the vector (extracted on the extraction questions, cached), a layer x coefficient sweep of the
  vector alone on the evaluation questions (settings over the perplexity budget are measured, not sampled), the
  setting with the highest trait score at a perplexity ratio <= 2 and coherence >= 50, then that setting scored
  again on fresh seeds and more answers beside the unsteered model and the random and shuffled-label controls
  (target: gain >= 40 points, controls <= 10).
- ``monitor``: Pearson r between the last prompt token's projection and the judged trait, system prompts from
  discouraging to encouraging, at the steering part's chosen layer (and every third layer; target >= 0.5 for the
  reliably judged traits).
- ``trace``: fine-tune on ``flattery`` (a narrow trait) and on ``neutral`` (control); the sycophancy vector traced
  across the checkpoints of each (cosine to final, to previous, norm ratio, steering gain on the final model), and
  the projection shift vs judged-trait shift of each fine-tune.
- ``decompose``: the sycophancy / pirate vector against an SAE trained on the same layer (standard pipeline, smoke
  size unless ``--sae-full``): top features and top-k reconstruction vs the random-direction baseline.

Baselines in the same run: unsteered model, random vector of the same norm, shuffled-label vector; the neutral
fine-tune; the random-direction reconstruction k / d_model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.persona.judge import RubricJudge, coherence_agreement, judge_agreement  # noqa: E402
from workbench.persona.traits import shipped_traits  # noqa: E402


def _round(x, n=3):
    return round(float(x), n) if x == x else None


def part_judge(args) -> dict:
    """Per trait: agreement with its labelled set. Coherence also against the shared labelled set of unsteered,
    steered and prompted-French replies, for the default rubric (v2) and version 1 (no known-word or fragmentation
    factor) as the baseline."""
    return {"traits": {name: judge_agreement(RubricJudge(name)) for name in shipped_traits()},
            "coherence_labels": {j.name: coherence_agreement(j) for j in (RubricJudge("pirate", known=False),
                                                                           RubricJudge("pirate"))}}


def _vector(model, trait, args, sizes):
    from workbench.studies.persona import persona_vector

    cfg = replace(sizes.extract, n_questions=args.questions, n_samples=args.samples, n_pairs=args.pairs,
                  max_new_tokens=args.extract_tokens)
    return persona_vector(model, trait, config=cfg, progress=args.progress)


def _grid(args) -> list[tuple[int, float]]:
    if args.grid:
        return [(int(L), float(a)) for L, a in (x.split(":") for x in args.grid.split(","))]
    return [(L, a) for L in args.layers for a in args.coefs]


def part_steer(args, model, sizes) -> dict:
    from workbench.persona.steer import SteerConfig, choose, compare_at, steering_sweep

    out = {}
    for trait in args.traits:
        t0 = time.time()
        try:
            pv = _vector(model, trait, args, sizes)
        except ValueError as err:  # no pair passed the judge's filter: nothing to steer with, say so
            out[trait] = {"vector": str(err)}
            print(json.dumps({trait: out[trait]}), file=sys.stderr, flush=True)
            continue
        judge = RubricJudge(trait)
        # 1. sweep the vector alone; settings over the perplexity budget are measured but not sampled
        scfg = SteerConfig(n_questions=args.eval_questions, n_samples=args.eval_samples, ppl_contexts=8,
                           max_new_tokens=args.sweep_tokens, controls=(), max_ppl_ratio=args.max_ppl, seed=1)
        rows = steering_sweep(model, pv, trait, judge, scfg, grid=_grid(args), progress=args.progress)
        res = {"pairs_generated": pv.meta.get("pairs_generated"), "pairs_kept": pv.meta.get("pairs_kept"),
               "shuffled_cos": pv.meta.get("shuffled_cos"), "sweep_unsteered": rows[0].to_dict(),
               "sweep": [r.to_dict() for r in rows[1:]]}
        try:
            best = choose(rows, max_ppl_ratio=args.max_ppl, min_coherence=args.min_coherence)
        except ValueError as err:
            res["chosen"] = str(err)
            out[trait] = res
            continue
        # 2. the chosen setting against the unsteered model and both controls, on fresh seeds and more answers
        ccfg = SteerConfig(n_questions=args.compare_questions, n_samples=args.compare_samples, ppl_contexts=8,
                           max_new_tokens=args.max_new_tokens, seed=args.compare_seed)
        comp = {r.method: r for r in compare_at(model, pv, trait, judge, best.layer, best.coef, ccfg,
                                                progress=args.progress)}
        none = comp["none"]
        c = {"layer": best.layer, "coef": best.coef, "n": comp["persona"].n,
             "shuffled_cos": _round(pv.meta["shuffled_cos"][best.layer]) if pv.meta.get("shuffled_cos") else None,
             "examples": comp["persona"].texts[:3]}
        for m, r in comp.items():
            c[m] = {"trait": _round(r.trait, 1), "gain": _round(r.trait - none.trait, 1),
                    "coherence": _round(r.coherence, 1), "ppl_ratio": _round(r.ppl_ratio)}
        res["chosen"] = c
        res["meets_target"] = bool(c["persona"]["gain"] >= 40 and c["persona"]["ppl_ratio"] <= 2
                                   and c["random"]["gain"] <= 10 and c["shuffled"]["gain"] <= 10)
        res["seconds"] = round(time.time() - t0)
        out[trait] = res
        print(json.dumps({trait: {k: v for k, v in res.items() if k not in ("sweep", "shuffled_cos")}}),
              file=sys.stderr, flush=True)
    return out


def part_monitor(args, model, sizes, steer: dict | None = None) -> dict:
    from workbench.persona.monitor import monitor_trait

    out = {}
    for trait in args.traits:
        pv = _vector(model, trait, args, sizes)
        chosen = (steer or {}).get(trait, {}).get("chosen")
        layer = chosen["layer"] if isinstance(chosen, dict) else args.monitor_layer
        res = monitor_trait(model, pv, trait, RubricJudge(trait), layer, n_questions=args.monitor_questions,
                            n_samples=args.monitor_samples, max_new_tokens=args.sweep_tokens,
                            layers=range(0, model.cfg.n_layers, 3), progress=args.progress)
        out[trait] = {"layer": res["layer"], "n": res["n"], "n_samples": res["n_samples"], "r": _round(res["r"]),
                      "levels": res["levels"], "r_by_layer": {L: _round(r) for L, r in res["r_by_layer"].items()},
                      "points": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in p.items()
                                  if k not in ("question", "projections")} for p in res["points"]]}
        print(json.dumps({trait: {"monitor_r": out[trait]["r"], "layer": layer, "n": res["n"]}}), file=sys.stderr,
              flush=True)
    return out


def part_trace(args, model, sizes) -> dict:
    from workbench.persona.finetune import FinetuneConfig, finetune
    from workbench.persona.steer import SteerConfig
    from workbench.persona.trace import projection_shift, trace_checkpoints

    trait = args.trace_trait
    pv = _vector(model, trait, args, sizes)
    judge = RubricJudge(trait)
    cfg = FinetuneConfig(steps=args.ft_steps, save_every=args.ft_save_every)
    out = {"finetune": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "train": cfg.train,
                        "first_layer": cfg.first_layer}}
    for ds in ("flattery", "neutral"):
        t0 = time.time()
        paths = finetune(ds, cfg, progress=args.progress)
        ft_s = round(time.time() - t0)
        rows = trace_checkpoints(paths, trait, judge, layer=args.trace_layer, responses="fixed", reference=pv,
                                 steer=SteerConfig(n_questions=args.trace_questions, n_samples=2,
                                                   max_new_tokens=args.max_new_tokens), coef=args.trace_coef,
                                 progress=args.progress)
        shift = projection_shift(paths, pv, trait, judge, layer=args.trace_layer, n_questions=args.trace_questions,
                                 max_new_tokens=args.max_new_tokens, progress=args.progress)
        out[ds] = {"finetune_seconds": ft_s, "trace": [r.to_dict() for r in rows], "shift": shift}
        print(json.dumps({ds: {"shift": [{k: v for k, v in s.items() if k != "examples"} for s in shift]}}),
              file=sys.stderr, flush=True)
    return out


def part_decompose(args, model, sizes) -> dict:
    from workbench.persona.decompose import decompose
    from workbench.studies.persona import study_sae

    study = study_sae(model, args.trace_layer, profile=None if args.sae_full else "smoke")
    sae = next(iter(study.saes.values()))
    out = {"sae": {"d_sae": int(sae.cfg.d_sae), "layer": args.trace_layer}}
    for trait in sorted(set(args.traits) | {args.trace_trait}):
        pv = _vector(model, trait, args, sizes)
        out[trait] = decompose(pv.vectors[args.trace_layer], sae, top_n=10, ks=(1, 5, 10, 20, 50)).to_dict()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="judge,steer,monitor,trace,decompose")
    ap.add_argument("--traits", default="pirate,french")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--questions", type=int, default=3, help="extraction questions per pair")
    ap.add_argument("--samples", type=int, default=4, help="samples per (pair, question, polarity)")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="tokens per answer: chosen setting vs controls")
    ap.add_argument("--extract-tokens", type=int, default=32, help="tokens per extraction response")
    ap.add_argument("--layers", default="3,6,9,12,15,18,21,24,27")
    ap.add_argument("--coefs", default="0.25,0.5,1,1.5")
    ap.add_argument("--grid", default="", help="explicit settings 'layer:coef,...' instead of layers x coefs")
    ap.add_argument("--max-ppl", type=float, default=2.0)
    ap.add_argument("--min-coherence", type=float, default=50.0)
    ap.add_argument("--eval-questions", type=int, default=4, help="sweep: evaluation questions per setting")
    ap.add_argument("--eval-samples", type=int, default=4)
    ap.add_argument("--sweep-tokens", type=int, default=32, help="tokens per answer in the sweep and monitoring")
    ap.add_argument("--compare-questions", type=int, default=10, help="chosen setting vs controls: questions")
    ap.add_argument("--compare-samples", type=int, default=4)
    ap.add_argument("--compare-seed", type=int, default=7, help="seed of the fresh answers at the chosen setting")
    ap.add_argument("--monitor-layer", type=int, default=12, help="when the steer part did not choose one")
    ap.add_argument("--monitor-questions", type=int, default=4)
    ap.add_argument("--monitor-samples", type=int, default=4)
    ap.add_argument("--trace-trait", default="sycophancy")
    ap.add_argument("--trace-layer", type=int, default=12)
    ap.add_argument("--trace-coef", type=float, default=1.5)
    ap.add_argument("--trace-questions", type=int, default=4)
    ap.add_argument("--ft-steps", type=int, default=24)
    ap.add_argument("--ft-save-every", type=int, default=8)
    ap.add_argument("--sae-full", action="store_true")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    args.traits = [t for t in args.traits.split(",") if t]
    args.layers = [int(x) for x in args.layers.split(",")]
    args.coefs = [float(x) for x in args.coefs.split(",")]
    parts = [p for p in args.parts.split(",") if p]

    result = {"machine": {"load_avg": os.getloadavg(), "cpus": os.cpu_count()}, "args": vars(args)}
    model = sizes = None
    if set(parts) - {"judge"}:
        from workbench.data.models import load_model
        from workbench.studies.persona import PERSONA_MODEL, persona_sizes

        model, sizes = load_model(PERSONA_MODEL), persona_sizes("full")
    for part in parts:
        t0 = time.time()
        fn = globals()[f"part_{part}"]
        if part == "judge":
            result[part] = fn(args)
        elif part == "monitor":
            result[part] = fn(args, model, sizes, result.get("steer"))
        else:
            result[part] = fn(args, model, sizes)
        result[f"{part}_seconds"] = round(time.time() - t0)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
    result["machine"]["load_avg_end"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
