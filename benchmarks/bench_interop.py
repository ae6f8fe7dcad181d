"""The interop table: each SAELens architecture x each entry point, a SAELens object against the workbench SAE.

For every SAELens v6 architecture (built by SAELens with random weights; one opened by SAELens from a folder the
workbench saved; one trained for a few steps by SAELens's own trainer on a workbench store), the SAELens object
goes through each public entry point (features, search, steering, evaluation, two widgets) and so does the
workbench SAE converted by the file route (SAELens saves, the workbench loads). A row passes when every result
agrees within 1e-4; ``max_abs_diff`` is the largest difference over that entry point's outputs. ``encode_vs_sae_lens``
is the baseline in the same run: our codes against SAELens's own ``encode`` (its inference class) on the store;
``HookedSAETransformer.add_sae``: the logits with ``to_sae_lens`` of the converted SAE added to the model against
those with SAELens's own inference object added.

Tiny random model (tests/interop_world.py), CPU, offline; about a minute.

    python benchmarks/bench_interop.py > benchmarks/results/2026-12-03/interop.json
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import interop_world as world  # noqa: E402
from workbench.sae.interop import as_sae  # noqa: E402

ATOL = 1e-4
ENTRY_POINTS = ("features", "search", "steering", "evaluation", "widgets")


def add_sae_diff(model, sl, tokens: torch.Tensor) -> float:
    """Logits with ``to_sae_lens(as_sae(sl))`` added to the HookedSAETransformer against those with SAELens's own
    inference object for ``sl`` added."""
    from workbench.sae.lens import to_sae_lens

    out = []
    with torch.no_grad():
        for sae in (to_sae_lens(as_sae(sl), model=model), world.sae_lens_inference(sl)):
            model.add_sae(sae)
            try:
                out.append(model(tokens))
            finally:
                model.reset_saes()
    return float((out[0] - out[1]).abs().max())


def main() -> dict:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = world.tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        store = world.tiny_store(model, Path(tmp) / "store")
        sample = torch.cat(list(store.iter_batches(64, hook=world.HOOK, shuffle=False, drop_last=False)))
        cases = {}
        for arch in world.ARCHITECTURES:
            sl = world.sae_lens_random(arch, sample)
            cases[arch] = (sl, world.converted(sl), "random weights, built by SAELens")
        sl, ours = world.sae_lens_from_our_folder(sample, Path(tmp) / "ours")
        cases["topk (our folder)"] = (sl, ours, "saved by the workbench, opened by sae_lens.SAE.load_from_disk")
        trained = world.sae_lens_trained(store)
        cases["batchtopk (trained by SAELens)"] = (trained, world.converted(trained),
                                                   "8 steps of SAELens's SAETrainer on a workbench store")
        rows = []
        for name, (sl, ref, how) in cases.items():
            with torch.no_grad():
                codes = world.sae_lens_inference(sl).encode(sample)
                encode_diff = float((as_sae(sl).encode(sample) - codes).abs().max())
            theirs = world.entry_point_results(model, store, sl)
            ours = world.entry_point_results(model, store, ref)
            row = {"architecture": name, "sae_lens_class": type(sl).__name__, "built": how,
                   "code_density": float((codes > 0).float().mean()), "encode_vs_sae_lens": encode_diff}
            for entry in ENTRY_POINTS:
                diff = world.max_abs_diff(theirs[entry], ours[entry])
                row[entry] = {"pass": diff <= ATOL, "max_abs_diff": diff,
                              "outputs": sorted(theirs[entry])}
            diff = add_sae_diff(model, sl, world.context_tokens(model))
            row["HookedSAETransformer.add_sae"] = {"pass": diff <= ATOL, "max_abs_diff": diff,
                                                   "outputs": ["logits vs SAELens's own object added"]}
            rows.append(row)
    return {"benchmark": "interop", "atol": ATOL, "model": "random 2-layer HookedSAETransformer, d_model 16",
            "d_sae": world.D_SAE, "hook": world.HOOK, "entry_points": list(ENTRY_POINTS),
            "baseline": "encode_vs_sae_lens: our codes vs SAELens's own inference encode",
            "all_pass": all(r[e]["pass"] for r in rows for e in ENTRY_POINTS + ("HookedSAETransformer.add_sae",)),
            "rows": rows,
            "wall_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__,
            "sae_lens": __import__("importlib.metadata").metadata.version("sae-lens")}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
