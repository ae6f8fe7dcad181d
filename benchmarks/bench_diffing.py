"""Model diffing end to end (workbench.diffing), the numbers of issue 14. Prints one JSON object:

* ``cross_architecture``: Gemma-3-270M vs SmolLM2-135M-Instruct on the embedded wiki (en/es/fr) + chat text:
  - ``alignment``: the fraction of each model's tokens kept, per language;
  - per crosscoder (``l1``, ``batchtopk``, ``dfc``): held-out FVU per model, L0, dead fraction, the latent kinds,
    the DFC partition check (largest forbidden weight / gradient / Adam moment), and the share of each kind's top
    activations on es/fr text next to ``language_base_rate`` (the es/fr share of all paired rows: what a latent
    blind to language scores). ``a_only_over_shared`` is the Gemma-exclusive share divided by the *shared latents'*
    share (the baseline, same crosscoder, same run); the target is >= 2. ``language_share_confirmed`` and
    ``confirmed_a_only_over_shared``: the same with the exclusive latents restricted to those Latent Scaling
    confirms (ratio < 0.5, active on >= 5 rows).
* ``fine_tune`` (``--finetune``): SmolLM2-135M-Instruct vs its flattery fine-tune, the same numbers plus the top
  fine-tune-exclusive DFC latents (Latent Scaling ratio, top tokens, top logits).
* ``timing``: seconds per stage, and the machine load when the run started (other jobs share the CPU).

Sizes: ``--profile full`` (default; harvests ~27k paired positions, minutes to tens of minutes on 2 cores the first
time, then read from the cache) or ``smoke``.

The DFC's settings default to :class:`DiffSizes`' (block-wise BatchTopK with an eighth of k per exclusive block);
``--exclusive-k-share 0`` gives the papers' single top-k, ``--weighting fvu`` per-model loss weights,
``--exclusive-fraction`` the size of each exclusive block.

    python benchmarks/bench_diffing.py [--profile smoke] [--finetune] [--balance variance]
                                       [--exclusive-k-share 0.125] [--exclusive-fraction 0.05] [--weighting none]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import torch


def _ranked_rows(paired, result, model, side: str = "b", top: int = 20) -> list[dict]:
    from workbench.diffing.analyses import exclusive_ranking, latent_kinds, latent_rows, side_features
    from workbench.diffing.latent_scaling import latent_scaling

    dfc = result.runs["dfc"].sae
    x = paired.load(scaled=False)
    scaling = latent_scaling(dfc, x.split(4096))
    freq = scaling.active_tokens.float() / x.shape[0]
    ranked = exclusive_ranking(latent_kinds(dfc), side, scaling=scaling, frequency=freq, top=top)
    res = side_features(paired, dfc, side, model, paired.path.parent / f"features-dfc-{side}")
    return latent_rows(res, ranked, scaling)


def _cross(out: dict, sizes) -> None:
    from workbench.diffing.experiments import cross_architecture_pair, pair_models, summarize, train_crosscoders

    t = time.perf_counter()
    models = pair_models()
    paired = cross_architecture_pair(sizes, models, progress=False)
    out["timing"]["pair_s"] = time.perf_counter() - t
    t = time.perf_counter()
    result = train_crosscoders(paired, sizes, progress=False)
    out["timing"]["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out["cross_architecture"] = summarize(paired, result, sizes)
    out["cross_architecture"]["top_gemma_only"] = _ranked_rows(paired, result, models[0], "a", top=10)
    out["cross_architecture"]["top_smollm2_only"] = _ranked_rows(paired, result, models[1], "b", top=10)
    out["timing"]["summary_s"] = time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=["smoke", "full"], default="full")
    parser.add_argument("--finetune", action="store_true", help="also the fine-tune diff (fine-tunes SmolLM2 once)")
    parser.add_argument("--skip-cross", action="store_true", help="only the fine-tune diff")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--balance", choices=["norm", "variance"], default="norm",
                        help="per-model scaling: the papers' mean norm sqrt(d_model), or equal centred variance")
    parser.add_argument("--exclusive-k-share", type=float, default=None,
                        help="share of k per exclusive DFC block (0: one top-k over all latents, the papers')")
    parser.add_argument("--exclusive-fraction", type=float, default=None, help="DFC latents exclusive to each model")
    parser.add_argument("--weighting", choices=["none", "fvu"], default=None,
                        help="per-model loss weights: none (plain sum) or fvu (each model's FVU counts the same)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from workbench.diffing.experiments import DiffSizes, fine_tune_models, fine_tune_pair, summarize, train_crosscoders

    out: dict = {"profile": args.profile, "load_average_at_start": list(os.getloadavg()), "timing": {}}
    sizes = DiffSizes.smoke() if args.profile == "smoke" else DiffSizes.full()
    dfc = {k: v for k, v in (("exclusive_k_share", args.exclusive_k_share),
                              ("exclusive_fraction", args.exclusive_fraction), ("weighting", args.weighting))
           if v is not None}
    sizes = replace(sizes, balance=args.balance, **dfc)
    if not args.skip_cross:
        _cross(out, sizes)
    out["sizes"] = sizes.__dict__

    if args.finetune:
        from workbench.diffing.experiments import finetune_config

        ft_sizes = DiffSizes.finetune_smoke() if args.profile == "smoke" else DiffSizes.finetune_full()
        ft_sizes = replace(ft_sizes, **dfc)
        ft_cfg = finetune_config(args.profile)
        t = time.perf_counter()
        base, tuned = fine_tune_models("flattery", ft_cfg, progress=False)
        ft_paired = fine_tune_pair(ft_sizes, (base, tuned), progress=False)
        ft_result = train_crosscoders(ft_paired, ft_sizes, progress=False)
        out["fine_tune"] = summarize(ft_paired, ft_result, ft_sizes, wanted_languages=("en",))
        out["fine_tune"]["top_exclusive"] = _ranked_rows(ft_paired, ft_result, tuned)
        out["timing"]["fine_tune_s"] = time.perf_counter() - t
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
