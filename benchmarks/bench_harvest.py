"""Harvest throughput against the fastest forward a user could pick, and peak memory while harvesting.

Prints one JSON object:
* ``forward_paths``: per embedded model, tokens/s of the forward to the default hook's layer by each path, best of
  ``--reps`` interleaved repetitions on the same contexts and batch: TransformerLens ``HookedTransformer``
  (``stop_at_layer``), TransformerLens 3 ``TransformerBridge`` (``stop_at_layer``, TL hook names over HF modules),
  plain HF transformers truncated to the needed layers with a forward hook (the baseline), our
  ``workbench.data.forward.hook_forward`` and the whole ``harvest`` (tokenising, forward, bf16 conversion, checksums
  and disk writes included; after one small warm-up harvest, which pays the one-off check of the HF path against
  ``HookedTransformer``). ``harvest_vs_plain_hf`` is the target ratio (>= 0.9).
* ``throughput``: harvest tokens/s against the bare ``HookedTransformer`` forward (the earlier baseline), after the
  one-off build and check of the HF path for the loaded model (``one_off_forward_setup_s``, paid once per process).
* ``memory``: RSS sampled while harvesting ``--memory-tokens`` tokens; flat means the peak in the last
  half of the run is within 10% of the peak in the first half.

The plain HF model is rebuilt from the converted weights (``workbench.data.forward.hf_model_from_tl``; it runs the
same HF modeling code as the GGUF-dequantised ``AutoModelForCausalLM``, without a minute of dequantising).

    python benchmarks/bench_harvest.py [--tokens 65536] [--memory-tokens 1000000] [--paths-contexts 64]
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
from workbench.data.forward import hf_model_from_tl, hook_forward
from workbench.data.models import EMBEDDED_MODELS, load_model

HF_NAMES = {"gemma-3-270m": "google/gemma-3-270m", "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def bare_forward_tps(model, tokens: np.ndarray, batch: int, stop: int | None) -> float:
    device = next(model.parameters()).device
    with torch.inference_mode():
        model(torch.from_numpy(tokens[:batch].astype(np.int64)).to(device), stop_at_layer=stop)  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(tokens), batch):
            model(torch.from_numpy(tokens[i : i + batch].astype(np.int64)).to(device), stop_at_layer=stop)
        return tokens.size / (time.perf_counter() - t0)


def _timed(fn, batches) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for toks in batches:
            fn(toks)
    return sum(t.numel() for t in batches) / (time.perf_counter() - t0)


def forward_paths(name: str, n_contexts: int, batch: int, reps: int) -> dict:
    """Tokens/s of each forward path to the default hook (best of ``reps`` interleaved rounds)."""
    import warnings

    from transformer_lens.model_bridge import TransformerBridge

    model = load_model(name, device=None)
    hooks = validate_hooks(model, None)
    layer, stop = int(hooks[0].split(".")[1]), stop_layer(model, hooks)
    corpus = CorpusSpec(source="wiki")
    tokens = np.concatenate([b.tokens for b in packed_contexts(corpus, model.tokenizer, n_contexts * 128)])
    device = next(model.parameters()).device
    batches = [torch.from_numpy(tokens[i:i + batch].astype(np.int64)).to(device) for i in range(0, len(tokens), batch)]

    hf = hf_model_from_tl(model, n_layers=layer + 1)
    grabbed = {}
    hf.layers[layer].register_forward_hook(lambda mod, args, out: grabbed.__setitem__("x", out))
    full = hf_model_from_tl(model, causal_lm=True)
    full.config.architectures = [model.cfg.original_architecture]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(HF_NAMES[name], hf_model=full, tokenizer=model.tokenizer,
                                                     device=str(device))
    ours = hook_forward(model, hooks)

    def grab(act, hook):
        grabbed["x"] = act

    paths = {
        "hooked_transformer": lambda t: model.run_with_hooks(t, fwd_hooks=[(hooks[0], grab)], stop_at_layer=stop,
                                                             return_type=None),
        "transformer_bridge": lambda t: bridge.run_with_hooks(t, fwd_hooks=[(hooks[0], grab)], stop_at_layer=stop,
                                                              return_type=None),
        "plain_hf": lambda t: hf(input_ids=t, use_cache=False),
        "workbench_forward": ours,
    }
    spec_n = int(tokens.size)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fn in paths.values():  # warm-up
            with torch.inference_mode():
                fn(batches[0])
        # warm-up harvest: the one-off check of the HF path against HookedTransformer (seconds, once per model)
        harvest(HarvestSpec(model=name, n_tokens=2 * 128, corpus=corpus, hooks=tuple(hooks)), os.path.join(tmp, "w"),
                model=model, config=HarvestConfig(batch_contexts=batch, progress=False))
        for rep in range(reps):
            for key, fn in paths.items():
                best[key] = max(best.get(key, 0.0), _timed(fn, batches))
            spec = HarvestSpec(model=name, n_tokens=spec_n, corpus=corpus, hooks=tuple(hooks))
            t0 = time.perf_counter()
            harvest(spec, os.path.join(tmp, f"h{rep}"), model=model,
                    config=HarvestConfig(batch_contexts=batch, progress=False))
            best["harvest"] = max(best.get("harvest", 0.0), spec_n / (time.perf_counter() - t0))
    out = {"hook": hooks[0], "n_tokens": spec_n, "batch_contexts": batch, "reps": reps, "harvest_path": ours.path,
           "tokens_per_s": {k: round(v, 1) for k, v in best.items()}}
    out["ratios_vs_plain_hf"] = {k: round(v / best["plain_hf"], 3) for k, v in best.items()}
    out["harvest_vs_plain_hf"] = out["ratios_vs_plain_hf"]["harvest"]
    out["target"] = 0.9
    return out


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
    parser.add_argument("--paths-models", default=",".join(EMBEDDED_MODELS), help="models for forward_paths ('': skip)")
    parser.add_argument("--paths-contexts", type=int, default=64, help="contexts of 128 tokens per path and round")
    parser.add_argument("--paths-batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    import subprocess

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    paths = {name: forward_paths(name, args.paths_contexts, args.paths_batch, args.reps)
             for name in filter(None, args.paths_models.split(","))}

    torch.manual_seed(0)
    model = load_model(args.model, device=None)
    hooks = validate_hooks(model, None)
    stop = stop_layer(model, hooks)
    config = HarvestConfig(batch_contexts=args.batch, progress=False)
    corpus = CorpusSpec(source="wiki")
    result: dict = {"model": args.model, "hook": hooks[0], "device": str(next(model.parameters()).device),
                    "batch_contexts": args.batch, "context_size": 128, "torch_threads": torch.get_num_threads(),
                    "uptime_before": load, "forward_paths": paths}
    if not args.tokens:
        result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(json.dumps(result, indent=1))
        return

    with tempfile.TemporaryDirectory() as tmp:
        spec = HarvestSpec(model=args.model, n_tokens=args.tokens, corpus=corpus)
        tokens = np.concatenate([b.tokens for b in packed_contexts(corpus, model.tokenizer, args.tokens)])
        bare = bare_forward_tps(model, tokens, args.batch, stop)
        t0 = time.perf_counter()  # once per loaded model: build the HF path and check it against HookedTransformer
        hook_forward(model, hooks)
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        store = harvest(spec, os.path.join(tmp, "throughput"), model=model, config=config)
        wall = time.perf_counter() - t0
        ours = store.n_tokens / wall
        result["throughput"] = {
            "n_tokens": int(store.n_tokens),
            "bare_forward_tokens_per_s": round(bare, 1),
            "harvest_tokens_per_s": round(ours, 1),
            "throughput_ratio": round(ours / bare, 3),
            "one_off_forward_setup_s": round(setup, 2),
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
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
