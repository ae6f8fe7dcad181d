"""SDM benchmark: closed form vs Monte-Carlo, exponential fits, optimal radii vs a recall simulation, attention heads
read as SDM on both embedded models, and the split-digits and split-wiki-topics continual-learning tables (penalty
strengths tuned first; final accuracy on all classes, mean and s.e.m. over seeds, each method's ratio against the
ReLU MLP of the same run, and the SDMLP's gap to the ReLU and Top-K MLPs in points). Prints JSON.

    nice -n 10 .venv/bin/python benchmarks/bench_sdm.py [--quick] [--skip-heads] [--skip-continual]
"""
from __future__ import annotations

import argparse
import json
import time

from workbench.sdm.attention import AttentionSDMConfig, attention_sdm
from workbench.sdm.binary import fit_exponential, intersection_size, monte_carlo_intersection
from workbench.sdm.optimal import OptimalConfig, SimulationConfig, beta_band, optimal_radii, simulate_recall
from workbench.studies.sdm import continual_study


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    ap.add_argument("--skip-heads", action="store_true")
    ap.add_argument("--skip-continual", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    out: dict = {"closed_form_vs_mc": [], "fits": [], "optimal": {}}
    for n, d, h in [(20, 5, 4), (64, 20, 10), (64, 24, 20), (256, 90, 60)]:
        exact = intersection_size(n, d, h)
        mc = monte_carlo_intersection(n, d, h, samples=200_000, seed=0)
        out["closed_form_vs_mc"].append({"n": n, "d": d, "h": h, "closed": exact, "mc": mc, "rel_err": mc / exact - 1})
    for n in (64, 256):
        for d in [n * f // 64 for f in (10, 15, 20, 25)]:
            f = fit_exponential(n, d)
            out["fits"].append({"n": n, "d": d, "beta_hamming": f.beta_hamming, "beta_cosine": f.beta_cosine,
                                "max_error": f.max_error, "log_rmse": f.log_rmse})
    for n in (64, 256):
        cfg = OptimalConfig(n=n)
        out["optimal"][str(n)] = {k: vars(v) for k, v in optimal_radii(cfg).items()}
        out["optimal"][str(n)]["band"] = beta_band(n)
    sim_cfg = SimulationConfig.smoke() if args.quick else SimulationConfig()
    out["simulation"] = simulate_recall(sim_cfg).to_dict()
    out["simulation"]["analytic"] = {k: v.d for k, v in optimal_radii(
        OptimalConfig(n=64, neurons=sim_cfg.neurons, patterns=sim_cfg.patterns)).items()}
    if not args.skip_heads:
        out["heads"] = {}
        for m in ("gemma-3-270m", "smollm2-135m-instruct"):
            cfg = AttentionSDMConfig.smoke(m) if args.quick else AttentionSDMConfig(model=m)
            out["heads"][m] = attention_sdm(cfg).summary()
    if not args.skip_continual:
        profile = "smoke" if args.quick else "full"
        for task in ("digits", "wiki"):
            study = continual_study(task, profile)
            base = study["table"]["relu"]["final_mean"]
            for row in study["table"].values():
                row["ratio_vs_relu"] = row["final_mean"] / base
            out[f"continual_{task}"] = {"baseline": "relu", **study}
    out["seconds"] = time.time() - t0
    print(json.dumps(out, default=float, indent=1))


if __name__ == "__main__":
    main()
