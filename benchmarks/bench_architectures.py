"""SAE architectures side by side on one store of Gemma-3-270M activations, at matched L0; baseline: ReLU-L1.

Prints one JSON object: every SAE's row (L0, explained variance, SAEBench's CE loss score and KL score with the SAE
spliced in, dead fraction, k=1 topic-probe balanced accuracy in English and English -> Spanish/French, and with
``--saebench`` SAEBench's own sparse-probing and absorption headline numbers), the row nearest the target L0 per
architecture (``matched``), and for each matched architecture the ratio of its FVU and probe accuracy to the
matched ReLU-L1 SAE's, all trained in the same run on the same batches (workbench.studies.architectures).

    python benchmarks/bench_architectures.py [--tokens 200000] [--d-sae 4096] [--k 32] [--epochs 3] [--saebench]
"""
from __future__ import annotations

import argparse
import json
import platform
import time


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None, help="smoke: the 16k-token CI store and tiny SAEs")
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--extra", default="", help="more registered architectures, comma-separated (e.g. gated)")
    ap.add_argument("--saebench", action="store_true", help="also SAEBench's sparse_probing and absorption evals")
    ap.add_argument("--out", default="runs/bench_architectures")
    return ap.parse_args()


def main() -> None:
    args = parse()
    from workbench.studies.architectures import (ArchitectureComparisonConfig, compare_architectures,
                                                 comparison_inputs)
    from workbench.studies.profile import current_profile

    smoke = current_profile(args.profile).smoke
    cfg = ArchitectureComparisonConfig.smoke() if smoke else ArchitectureComparisonConfig(
        d_sae=args.d_sae, k=args.k, epochs=args.epochs)
    cfg.extra = tuple(a for a in args.extra.split(",") if a)
    if args.saebench:
        cfg.saebench_evals = ("sparse_probing", "absorption")
    t0 = time.perf_counter()
    model, store, heldout = comparison_inputs(profile=args.profile)
    t_inputs = time.perf_counter() - t0
    cmp = compare_architectures(model, store, cfg, args.out, heldout=heldout)
    matched = cmp.matched()
    base = next((r for r in matched if r["architecture"] == "relu"), None)
    ratios = {}
    if base is not None:
        for r in matched:
            ratios[r["name"]] = {
                "fvu_vs_relu": (1 - r["explained_variance"]) / max(1 - base["explained_variance"], 1e-12),
                "l0_vs_relu": r["l0"] / max(base["l0"], 1e-12),
                "probe_en_k1_vs_relu": r.get("probe_en_k1", float("nan")) / max(base.get("probe_en_k1", 1.0), 1e-12),
            }
    print(json.dumps({"benchmark": "architectures", "baseline": "relu (April-2024 recipe) at matched L0",
                      "store_tokens": store.n_tokens, "config": cmp.config, "rows": cmp.rows, "matched": matched,
                      "ratios": ratios, "seconds": {"inputs": round(t_inputs, 1),
                                                    "total": round(time.perf_counter() - t0, 1)},
                      "machine": platform.processor() or platform.machine()}, indent=1, default=str))


if __name__ == "__main__":
    main()
