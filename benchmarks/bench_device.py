"""Harvest, SAE training and the feature pass on an accelerator against the same machine's CPU; prints JSON.

    python benchmarks/bench_device.py [--model gemma-3-270m] [--tokens 1048576] [--baseline-tokens 65536]
                                      [--d-sae 16384] [--k 32] [--random-weights DIR] [--out FILE]

Both devices run the same three steps, each with the workbench's own defaults for that device (``load_model``:
bf16 weights on a GPU with native bf16, float32 on the CPU; the trainer and the feature pass follow the device):

1. ``harvest`` of the middle-layer residual stream of the embedded wiki corpus (tokenising, forward, bf16
   conversion, checksums and disk writes included), at the default 32 contexts per forward and, on the
   accelerator, also at ``--device-batch-contexts``;
2. ``train`` of one TopK SAE (``--d-sae``, ``--k``, batch 4096) over that store, fp32, and on CUDA also with
   ``TrainConfig(bf16=True)``;
3. ``compute_features`` of the trained SAE over the whole store (top examples, histograms, buckets, windows).

The CPU is the named baseline (``--baseline-tokens``, fewer, since it is slower; throughputs are compared as
ratios of tokens/s). Agreement figures check that the accelerator computes the same thing: the first contexts
of both stores (same corpus order) as a relative error of the activations (bf16 weights against float32 ones),
and the feature pass of one SAE over one store on both devices (max activation and density per feature, top
example overlap).

``--random-weights DIR`` (a folder with the converted model's ``tl_config.json`` and ``tokenizer/``) builds the
model with seeded random weights of the same architecture instead of loading the GGUF: a GPU machine that cannot
receive the 250 MB checkpoint still times the same computation (the cost of a forward, a training step or an
encode does not depend on the weights' values). The JSON says which weights were used.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from workbench.analysis.feature_results import FeatureConfig
from workbench.analysis.features import compute_features
from workbench.data.harvest import HarvestConfig, HarvestSpec, harvest
from workbench.data.models import load_model
from workbench.sae.sources import StoreSource
from workbench.sae.train import train
from workbench.sae.train_config import RunSpec, TrainConfig

HOLDOUT = 16_384


def random_weight_model(folder: Path, name: str, device: torch.device, seed: int = 0):
    """A ``HookedTransformer`` of the converted model's architecture and tokenizer, seeded random weights, with the
    dtype ``load_model`` would give on ``device``."""
    from transformers import AutoTokenizer
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import resolve_dtype

    data = json.loads((folder / "tl_config.json").read_text())
    data.pop("n_params", None)
    data.update(dtype=torch.float32, device="cpu", seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", add_bos_token=True)
    model = HookedTransformer(HookedTransformerConfig.from_dict(data), tokenizer=tokenizer, move_to_device=False)
    # every tensor set here (TransformerLens leaves some of Gemma 3's uninitialised): matrices N(0, 0.02), norm
    # scales 1, biases 0
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            leaf = pname.rsplit(".", 1)[-1]
            if leaf.startswith("b") or leaf.startswith("_b"):
                p.zero_()
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            else:
                p.fill_(1.0)
    dtype = resolve_dtype(None, device)
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints "Moving model to device"
        model = model.to(dtype).to(device) if dtype != torch.float32 else model.to(device)
    model.cfg.device, model.cfg.dtype = str(device), dtype
    model.eval()
    model.workbench_name = name  # the store is labelled with the spec's model name
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _harvest(model, name: str, n_tokens: int, out: Path, batch_contexts: int, device: torch.device) -> tuple:
    spec = HarvestSpec(model=name, n_tokens=n_tokens)
    t0 = time.perf_counter()
    store = harvest(spec, out, model=model, config=HarvestConfig(batch_contexts=batch_contexts, progress=False))
    _sync(device)
    wall = time.perf_counter() - t0
    extra = store.manifest.get("extra", {})
    return store, {"batch_contexts": batch_contexts, "tokens": store.n_tokens, "wall_s": round(wall, 2),
                   "tokens_per_s": round(store.n_tokens / wall, 1),
                   "forward_tokens_per_s": round(extra.get("tokens_per_second") or 0.0, 1),
                   "forward_path": extra.get("forward"), "hook": store.hooks[0]}


def _train(store_path: Path, args, device: torch.device, out: Path, bf16: bool = False) -> tuple:
    source = StoreSource(store_path, holdout_tokens=HOLDOUT)
    tokens = (source.n_train_tokens // args.batch) * args.batch
    cfg = TrainConfig(total_tokens=tokens, batch_size=args.batch, device=str(device), bf16=bf16, checkpoint_every=0,
                      heldout_eval_tokens=min(HOLDOUT, 8192))
    t0 = time.perf_counter()
    result = train([RunSpec("topk", args.d_sae, k=args.k, name="sae")], cfg, source, out, resume=False, progress=False)
    _sync(device)
    wall = time.perf_counter() - t0
    run = result.runs["sae"]
    metrics = {k: run.metrics.get(k) for k in ("fvu", "explained_variance", "l0", "dead_fraction")}
    return run.sae, {"bf16": bf16, "tokens": result.tokens, "steps": result.steps, "wall_s": round(wall, 2),
                     "tokens_per_s": round(result.tokens_per_s, 1), **metrics}


def _features(store, sae, device: torch.device, out: Path) -> tuple:
    t0 = time.perf_counter()
    res = compute_features(store, sae, out, FeatureConfig(device=str(device)), tokenizer=False)
    _sync(device)
    wall = time.perf_counter() - t0
    return res, {"tokens": store.n_tokens, "wall_s": round(wall, 2), "tokens_per_s": round(store.n_tokens / wall, 1),
                 "alive": int(res.alive().numel())}


def _model(args, device: torch.device):
    t0 = time.perf_counter()
    if args.random_weights:
        model = random_weight_model(Path(args.random_weights), args.model, device)
    else:
        model = load_model(args.model, device=device)
    return model, round(time.perf_counter() - t0, 2)


def run_device(args, device: torch.device, n_tokens: int, root: Path, batches: list[int]) -> dict:
    model, load_s = _model(args, device)
    out: dict = {"device": str(device), "model_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                 "load_s": load_s, "harvest": []}
    store = None
    for b in batches:
        s, row = _harvest(model, args.model, n_tokens, root / f"store_b{b}", b, device)
        out["harvest"].append(row)
        store = store or s
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    assert store is not None
    sae, row = _train(store.path, args, device, root / "train")
    out["train"] = [row]
    if device.type == "cuda":
        out["train"].append(_train(store.path, args, device, root / "train_bf16", bf16=True)[1])
    res, out["features"] = _features(store, sae, device, root / "features")
    if device.type == "cuda":
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return {"row": out, "store": store, "sae": sae, "features": res}


def _store_agreement(a, b, n_contexts: int) -> dict:
    n = min(n_contexts, a.n_contexts, b.n_contexts)
    same = all((a.context(i)["tokens"] == b.context(i)["tokens"]).all() for i in range(n)) if n else False
    num = den = 0.0
    for i in range(n):
        x, y = a.activations(i)[1:], b.activations(i)[1:]  # BOS rows aside: their norms dwarf the rest
        num += float((x - y).pow(2).sum())
        den += float(y.pow(2).sum())
    return {"contexts": n, "same_tokens": bool(same), "relative_error": round((num / max(den, 1e-30)) ** 0.5, 5)}


def _feature_agreement(dev_res, cpu_res) -> dict:
    alive = (dev_res.count > 0) | (cpu_res.count > 0)
    mx_d, mx_c = dev_res.max_activation[alive].double(), cpu_res.max_activation[alive].double()
    rel_max = float(((mx_d - mx_c).abs() / mx_c.abs().clamp_min(1e-6)).median())
    dens_d, dens_c = dev_res.density[alive], cpu_res.density[alive]
    top_d, top_c = dev_res.arrays["top_tok"][alive], cpu_res.arrays["top_tok"][alive]
    overlap = [len(set(r.tolist()) & set(s.tolist()) - {-1}) / max(1, len(set(s.tolist()) - {-1}))
               for r, s in zip(top_d, top_c)]
    return {"features": int(alive.sum()), "median_rel_diff_max_activation": round(rel_max, 5),
            "max_abs_diff_density": float((dens_d - dens_c).abs().max()),
            "mean_top_example_overlap": round(sum(overlap) / max(1, len(overlap)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=1_048_576, help="harvested on the accelerator")
    parser.add_argument("--baseline-tokens", type=int, default=65_536, help="harvested on the CPU baseline")
    parser.add_argument("--device-batch-contexts", type=int, default=256)
    parser.add_argument("--d-sae", type=int, default=16_384)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--random-weights", default=None, help="folder with tl_config.json and tokenizer/")
    parser.add_argument("--no-baseline", action="store_true", help="skip the CPU baseline")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    report: dict = {"model": args.model,
                    "weights": "seeded random, same architecture" if args.random_weights else "embedded GGUF",
                    "d_sae": args.d_sae, "k": args.k, "batch": args.batch, "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        batches = [32] + ([args.device_batch_contexts] if device.type != "cpu" else [])
        dev = run_device(args, device, args.tokens, root / "device", batches)
        report["accelerator"] = dev["row"]
        if not args.no_baseline:
            cpu = run_device(args, torch.device("cpu"), args.baseline_tokens, root / "cpu", [32])
            report["baseline_cpu"] = cpu["row"]
            report["speedup_vs_cpu"] = {
                "harvest": round(dev["row"]["harvest"][-1]["tokens_per_s"] / cpu["row"]["harvest"][0]["tokens_per_s"], 1),
                "harvest_default_batch": round(dev["row"]["harvest"][0]["tokens_per_s"]
                                               / cpu["row"]["harvest"][0]["tokens_per_s"], 1),
                "train": round(dev["row"]["train"][0]["tokens_per_s"] / cpu["row"]["train"][0]["tokens_per_s"], 1),
                "train_last_variant": round(dev["row"]["train"][-1]["tokens_per_s"] / cpu["row"]["train"][0]["tokens_per_s"], 1),
                "features": round(dev["row"]["features"]["tokens_per_s"] / cpu["row"]["features"]["tokens_per_s"], 1),
            }
            n_ctx = max(1, args.baseline_tokens // 128 // 8)
            report["agreement"] = {"harvest_bf16_vs_fp32": _store_agreement(dev["store"], cpu["store"], n_ctx)}
            # one SAE (the accelerator's) over one store (the CPU's) on both devices
            same_on_dev, _ = _features(cpu["store"], dev["sae"], device, root / "agree_dev")
            same_on_cpu, _ = _features(cpu["store"], dev["sae"].to("cpu"), torch.device("cpu"), root / "agree_cpu")
            report["agreement"]["feature_pass"] = _feature_agreement(same_on_dev, same_on_cpu)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
