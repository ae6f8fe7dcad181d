"""The feature-analysis pass (workbench.analysis.features.compute_features) against a naive dense baseline.

Prints one JSON object:

* ``ours``: wall time, tokens/s and peak RSS of the full pass (sparse encode into the codes cache, density, max,
  top-K contexts, exact histograms, bucket samples, windows with per-token activations, save) for a ``--d-sae``
  TopK SAE over ``--tokens`` tokens of the store. Each phase is timed.
* ``naive``: the textbook approach on the first ``--baseline-tokens`` tokens: dense ``sae.encode`` per batch, a
  running top-K by ``torch.topk`` over (current top-K rows ∪ the batch's dense codes) along the token axis, counts
  and maxima on the dense codes. It computes *less* than ours (no histogram, buckets or windows).
* ``ours_subset``: our pass on the same ``--baseline-tokens`` tokens, for a like-for-like ``speedup``
  (naive seconds / ours seconds on the subset); ``throughput_ratio`` = ours tokens/s (full run) / naive tokens/s.

Each measurement runs in its own child process, so each peak RSS is its own.

The store: ``--store PATH``; else ``--synthetic-tokens N`` builds (once, cached under WORKBENCH_HOME/bench) a store of N
random bf16 activations (d_model 640, contexts of 128) so the pass can be timed at scale without harvesting; else the
largest complete store in the workbench cache. The SAE is a seeded random TopK SAE (its cost does not depend on
training).

    python benchmarks/bench_features.py --synthetic-tokens 2000000 [--d-sae 16384] [--k 32]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_store(n_tokens: int, d_model: int = 640, context_size: int = 128, seed: int = 0):
    """A cached store of random activations (a low-rank signal plus noise) and random token ids."""
    from workbench.core.home import cache_dir
    from workbench.data.store import ActivationStore, StoreError, StoreWriter

    n_ctx = -(-n_tokens // context_size)
    path = cache_dir("bench") / f"synthetic-{n_ctx * context_size}-d{d_model}-s{seed}"
    try:
        store = ActivationStore.open(path)
        if store.manifest.get("complete"):
            return store
    except StoreError:
        shutil.rmtree(path, ignore_errors=True)
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(64, d_model, generator=gen)
    hook = "blocks.9.hook_resid_post"
    writer = StoreWriter(path, model_name="synthetic", hooks=[hook], d_model=d_model, context_size=context_size,
                         dtype="bfloat16", shard_contexts=512)
    shard_ctx = 512
    for index, start in enumerate(range(writer.n_complete_shards * shard_ctx, n_ctx, shard_ctx)):
        n = min(shard_ctx, n_ctx - start)
        rows = n * context_size
        acts = torch.randn(rows, 64, generator=gen) @ basis + 0.5 * torch.randn(rows, d_model, generator=gen)
        tokens = torch.randint(0, 32000, (n, context_size), generator=gen, dtype=torch.int32)
        docs = np.repeat(np.arange(start, start + n, dtype=np.int64)[:, None], context_size, axis=1)
        pos = np.tile(np.arange(context_size, dtype=np.int32), (n, 1))
        writer.write_shard(writer.n_complete_shards, tokens.numpy(), docs, pos, {hook: acts})
    return writer.finalize()


def largest_cached_store():
    from workbench.core.home import cache_dir
    from workbench.data.store import ActivationStore, StoreError, StoreWriter

    best = None
    for p in cache_dir("stores").iterdir():
        if not (p / "manifest.json").exists():
            continue
        try:
            s = ActivationStore.open(p)
        except StoreError:
            continue
        if best is None or s.n_tokens > best.n_tokens:
            best = s
    return best


def make_sae(d_in: int, d_sae: int, k: int, hook: str):
    from workbench.sae.model import SAE, SAEConfig, SAEMetadata

    sae = SAE(SAEConfig("topk", d_in, d_sae, k=k), SAEMetadata(hook_name=hook), seed=0)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_sae, generator=torch.Generator().manual_seed(1)) * 0.1)
    return sae.eval()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------------------------------------------
# children


def child_ours(store_path: str, d_sae: int, k: int, tokens: int, chunk: int, threads: int | None) -> dict:
    from workbench.analysis.features import FeatureConfig, compute_features
    from workbench.data.store import ActivationStore

    store = ActivationStore.open(store_path)
    sae = make_sae(store.d_model, d_sae, k, store.hooks[0])
    out = tempfile.mkdtemp(prefix="bench-features-")
    rss0 = peak_rss_bytes()
    try:
        cfg = FeatureConfig(max_tokens=tokens, chunk_tokens=chunk, threads=threads, progress=False)
        t0, c0 = time.perf_counter(), cpu_seconds()
        timings = {}
        import workbench.analysis.features as F

        # time the phases by wrapping the module's stage functions
        def timed(name, fn):
            def wrapper(*a, **kw):
                t = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
            return wrapper

        for name in ("encode_sparse_codes", "_sweep_a", "_sweep_b", "_windows"):
            setattr(F, name, timed(name, getattr(F, name)))
        res = compute_features(store, sae, out, cfg, tokenizer=False)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
        codes = sum(f.stat().st_size for f in (Path(out) / "codes").rglob("*") if f.is_file())
        t1 = time.perf_counter()
        F.FeatureResults.load(out).feature(0)
        load_s = time.perf_counter() - t1
        return {"seconds": wall, "cpu_seconds": cpu, "tokens": res.n_contexts * store.context_size,
                "tokens_per_s": res.n_contexts * store.context_size / wall, "phases_s": timings,
                "peak_rss_gb": peak_rss_bytes() / 2**30, "rss_before_pass_gb": rss0 / 2**30,
                "results_mb": (size - codes) / 2**20, "codes_cache_mb": codes / 2**20, "load_and_view_s": load_s,
                "alive": int((res.count > 0).sum()), "fast_encode": res.meta["encode"],
                "loadavg_after": os.getloadavg()}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def child_naive(store_path: str, d_sae: int, k: int, tokens: int, chunk: int, threads: int | None,
                top_k: int = 20) -> dict:
    from workbench.data.store import ActivationStore

    if threads:
        torch.set_num_threads(threads)
    store = ActivationStore.open(store_path)
    sae = make_sae(store.d_model, d_sae, k, store.hooks[0])
    t0, c0 = time.perf_counter(), cpu_seconds()
    top_val = torch.full((top_k, d_sae), float("-inf"))
    top_idx = torch.full((top_k, d_sae), -1, dtype=torch.long)
    count = torch.zeros(d_sae, dtype=torch.long)
    mx = torch.zeros(d_sae)
    seen = 0
    with torch.no_grad():
        for x in store.iter_batches(chunk, shuffle=False, exclude_bos=True, drop_last=False, max_tokens=tokens):
            codes = sae.encode(x)  # dense [n, d_sae]
            count += (codes > 0).sum(0)
            mx = torch.maximum(mx, codes.amax(0))
            idx = torch.arange(seen, seen + x.shape[0])[:, None].expand_as(codes)
            vals = torch.cat([top_val, codes])
            v, pos = vals.topk(top_k, dim=0)
            top_idx = torch.gather(torch.cat([top_idx, idx]), 0, pos)
            top_val = v
            seen += x.shape[0]
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"seconds": wall, "cpu_seconds": cpu, "tokens": seen, "tokens_per_s": seen / wall, "peak_rss_gb": peak_rss_bytes() / 2**30,
            "computes": "dense encode + count + max + top-K (no histogram, buckets, windows)"}


def run_child(kind: str, args, tokens: int) -> dict:
    cmd = [sys.executable, __file__, "--_child", kind, "--store", args.store, "--d-sae", str(args.d_sae), "--k",
           str(args.k), "--tokens", str(tokens), "--chunk", str(args.chunk), "--threads", str(args.threads or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=None, help="store directory (default: synthetic or largest cached)")
    parser.add_argument("--synthetic-tokens", type=int, default=0, help="build/use a synthetic store of N tokens")
    parser.add_argument("--d-sae", type=int, default=16384)
    parser.add_argument("--k", type=int, default=32, help="TopK k of the benchmark SAE")
    parser.add_argument("--tokens", type=int, default=0, help="tokens to analyse (0: the whole store)")
    parser.add_argument("--baseline-tokens", type=int, default=65536, help="tokens for the naive comparison")
    parser.add_argument("--chunk", type=int, default=2048, help="tokens encoded at once (both methods)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both methods (0: torch's default)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args._child:
        fn = child_ours if args._child == "ours" else child_naive
        print(json.dumps(fn(args.store, args.d_sae, args.k, args.tokens, args.chunk, args.threads or None)))
        return

    if args.store is None:
        store = synthetic_store(args.synthetic_tokens) if args.synthetic_tokens else largest_cached_store()
        if store is None:
            raise SystemExit("no store: pass --store PATH or --synthetic-tokens N")
        args.store = str(store.path)
    from workbench.data.store import ActivationStore

    store = ActivationStore.open(args.store)
    tokens = args.tokens or store.n_tokens
    base = min(args.baseline_tokens, tokens)
    result = {"store": args.store, "store_tokens": store.n_tokens, "d_model": store.d_model, "d_sae": args.d_sae,
              "k": args.k, "chunk": args.chunk, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "device": "cpu", "threads": args.threads or torch.get_num_threads(), "loadavg_before": os.getloadavg()}
    result["naive"] = run_child("naive", args, base)
    result["ours_subset"] = run_child("ours", args, base)
    result["speedup_vs_naive_same_tokens"] = result["naive"]["seconds"] / result["ours_subset"]["seconds"]
    result["cpu_speedup_vs_naive_same_tokens"] = result["naive"]["cpu_seconds"] / result["ours_subset"]["cpu_seconds"]
    result["ours"] = run_child("ours", args, tokens)
    result["throughput_ratio_vs_naive"] = result["ours"]["tokens_per_s"] / result["naive"]["tokens_per_s"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
