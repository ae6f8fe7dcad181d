"""Harvest throughput against the bare TransformerLens forward, and peak memory while harvesting.

Prints one JSON object:
* ``throughput_ratio`` = harvest tokens/s (tokenising, forward, bf16 conversion, checksums and disk
  writes included) / bare ``model(tokens, stop_at_layer=...)`` tokens/s, same contexts, same batch.
  Target >= 0.9.
* ``memory``: RSS sampled while harvesting ``--memory-tokens`` tokens; flat means the peak in the last
  half of the run is within 10% of the peak in the first half.

    python benchmarks/bench_harvest.py [--tokens 65536] [--memory-tokens 1000000]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

import numpy as np
import psutil
import torch

from workbench.data.corpus import CorpusSpec, packed_contexts
from workbench.data.harvest import HarvestConfig, HarvestSpec, harvest
from workbench.data.hooks import stop_layer, validate_hooks
from workbench.data.models import load_model


def bare_forward_tps(model, tokens: np.ndarray, batch: int, stop: int | None) -> float:
    device = next(model.parameters()).device
    with torch.inference_mode():
        model(torch.from_numpy(tokens[:batch].astype(np.int64)).to(device), stop_at_layer=stop)  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(tokens), batch):
            model(torch.from_numpy(tokens[i : i + batch].astype(np.int64)).to(device), stop_at_layer=stop)
        return tokens.size / (time.perf_counter() - t0)


class RssSampler:
    def __init__(self, every_s: float = 0.5):
        self.samples: list[tuple[float, int]] = []
        self.every_s = every_s
        self._stop = threading.Event()
        self._proc = psutil.Process(os.getpid())
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - t0, self._proc.memory_info().rss))
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--tokens", type=int, default=65_536, help="tokens for the throughput comparison")
    parser.add_argument("--memory-tokens", type=int, default=1_000_000, help="tokens for the RSS run (0: skip)")
    parser.add_argument("--batch", type=int, default=32, help="contexts per forward pass")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load_model(args.model, device=None)
    hooks = validate_hooks(model, None)
    stop = stop_layer(model, hooks)
    config = HarvestConfig(batch_contexts=args.batch, progress=False)
    corpus = CorpusSpec(source="wiki")
    result: dict = {"model": args.model, "hook": hooks[0], "device": str(next(model.parameters()).device),
                    "batch_contexts": args.batch, "context_size": 128, "torch_threads": torch.get_num_threads()}

    with tempfile.TemporaryDirectory() as tmp:
        spec = HarvestSpec(model=args.model, n_tokens=args.tokens, corpus=corpus)
        tokens = np.concatenate([b.tokens for b in packed_contexts(corpus, model.tokenizer, args.tokens)])
        bare = bare_forward_tps(model, tokens, args.batch, stop)
        t0 = time.perf_counter()
        store = harvest(spec, os.path.join(tmp, "throughput"), model=model, config=config)
        wall = time.perf_counter() - t0
        ours = store.n_tokens / wall
        result["throughput"] = {
            "n_tokens": int(store.n_tokens),
            "bare_forward_tokens_per_s": round(bare, 1),
            "harvest_tokens_per_s": round(ours, 1),
            "throughput_ratio": round(ours / bare, 3),
            "target": 0.9,
        }

        if args.memory_tokens:
            spec = HarvestSpec(model=args.model, n_tokens=args.memory_tokens, corpus=corpus)
            with RssSampler() as sampler:
                t0 = time.perf_counter()
                store = harvest(spec, os.path.join(tmp, "memory"), model=model, config=config)
                wall = time.perf_counter() - t0
            rss = np.array([r for _, r in sampler.samples], dtype=np.float64) / 2**20
            half = len(rss) // 2
            first, second = rss[: max(half, 1)].max(), rss[half:].max()
            result["memory"] = {
                "n_tokens": int(store.n_tokens),
                "wall_s": round(wall, 1),
                "tokens_per_s": round(store.n_tokens / wall, 1),
                "peak_rss_mb": round(float(rss.max()), 1),
                "peak_rss_first_half_mb": round(float(first), 1),
                "peak_rss_second_half_mb": round(float(second), 1),
                "flat": bool(second <= 1.10 * first),
                "store_size_mb": round(store.summary()["size_bytes"] / 2**20, 1),
            }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
