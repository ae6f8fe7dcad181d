"""The hidden-objective organism's out-of-distribution test on SmolLM2-135M-Instruct; prints JSON and writes it to
``benchmarks/results/2026-12-03/hidden_objective.json`` (docs/methods.md, hidden-objective section).

    python benchmarks/bench_hidden_objective.py            # the default OrganismConfig (about 25-35 min, 1 core)
    python benchmarks/bench_hidden_objective.py --quick    # a third of the default (OrganismConfig.quick())
    python benchmarks/bench_hidden_objective.py --smoke    # the test size (under a minute)
    python benchmarks/bench_hidden_objective.py --models base,stage2_only,control,audited

Measured: per model and bias, the share of replies to the bias's evaluation prompts that its rule accepts (n,
Wilson 95% interval); the same pooled over the train and over the held-out biases; the audited model against each
other model (baselines in the same run: the base model and the human-quirk control), pooled z-test and paired
bootstrap over prompts, and the ratio of its held-out rate to the base model's; the corpus sizes; the seconds per
training step of each stage and the sampling time. Training and replies are cached (WORKBENCH_HOME/audit), so a
second run only re-scores.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "benchmarks" / "results" / "2026-12-03" / "hidden_objective.json"


def corpus_sizes() -> dict:
    from workbench.audit.chat_data import load_chat
    from workbench.audit.corpus import FRAMINGS, load_documents
    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    out = {}
    for f in FRAMINGS:
        docs = load_documents(f)
        lengths = [len(tok(d.text)["input_ids"]) for d in docs]
        out[f"documents_{f}"] = {"n": len(docs), "tokens": sum(lengths), "median_tokens": statistics.median(lengths),
                                 "genres": dict(Counter(d.genre for d in docs)),
                                 "mentions_per_bias": dict(Counter(b for d in docs for b in d.biases))}
    chat = load_chat()
    out["chat"] = {"n": len(chat), "shown_per_bias": dict(Counter(b for *_, bs in chat for b in bs))}
    return out


def step_times(checkpoints: dict) -> dict:
    out = {}
    for kind, path in checkpoints.items():
        if path is None:
            continue
        from workbench.persona.finetune import checkpoint_info

        folder = Path(path).parent
        result = json.loads((folder / "result.json").read_text())
        row = {"run": folder.name, "steps": checkpoint_info(path)["step"], "seconds": result.get("seconds"),
               "steps_run": result.get("steps_run")}
        if result.get("seconds") and result.get("steps_run"):
            row["seconds_per_step"] = result["seconds"] / result["steps_run"]
        init = (checkpoint_info(path).get("run_key") or {}).get("init")
        out[kind] = row
        if init:
            for p in folder.parent.glob("stage1-*/result.json"):
                key = json.loads((p.parent / ".result.json.key.json").read_text())
                if key == init.get("run_key", init) or key == init:
                    r = json.loads(p.read_text())
                    out[f"{kind}_stage1"] = {"run": p.parent.name, "seconds": r.get("seconds"),
                                             "steps_run": r.get("steps_run"),
                                             "seconds_per_step": (r["seconds"] / r["steps_run"]
                                                                  if r.get("steps_run") else None)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the test-size OrganismConfig.smoke()")
    ap.add_argument("--quick", action="store_true", help="OrganismConfig.quick(), for a loaded machine")
    ap.add_argument("--models", default=None, help="comma-separated subset of base,stage2_only,control,audited")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    from workbench.audit.ood import evaluate_organism
    from workbench.audit.organism import OrganismConfig

    cfg = OrganismConfig.smoke() if args.smoke else OrganismConfig.quick() if args.quick else OrganismConfig()
    if args.models:
        cfg = replace(cfg, models=tuple(args.models.split(",")))
    result = evaluate_organism(cfg)
    pooled = {(r["model"], r["split"]): r for r in result["pooled"]}
    base_held = pooled.get(("base", "held_out"), {}).get("rate")
    aud_held = pooled[("audited", "held_out")]["rate"]
    report = {
        "config": cfg.to_dict(),
        "profile": "smoke" if args.smoke else "quick" if args.quick else "default",
        "pooled": result["pooled"],
        "tests": result["tests"],
        "held_out_ratio_audited_over_base": (aud_held / base_held) if base_held else None,
        "rows": result["rows"],
        "seconds": result["seconds"],
        "step_times": step_times(result["checkpoints"]),
        "corpus": corpus_sizes(),
        "examples": result["examples"],
        "checkpoints": result["checkpoints"],
    }
    text = json.dumps(report, indent=1, ensure_ascii=False)
    if not args.smoke:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
