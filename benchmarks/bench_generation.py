"""Our hooked, seeded sampling loop against HF ``generate`` with its key-value cache; prints JSON.

    python benchmarks/bench_generation.py [--models gemma-3-270m,smollm2-135m-instruct] [--new 32] [--samples 4]

Same model weights (the HF model is rebuilt from the converted TransformerLens weights,
``workbench.data.forward.hf_model_from_tl``), same prompts, same sampling settings (temperature 0.7, top-p 0.9,
``--samples`` continuations of each prompt batched together, ``--new`` tokens each, no early stop at EOS), the
same torch thread count (``--threads``, default 1 as ``GenerationConfig``), steering hooks off. ``ours`` is ``workbench.intervene.generation.generate`` as users call it (its HF backend
for these models); ``ours_on_hooked_transformer`` forces its TransformerLens backend, the loop before the HF backend.
Rounds alternate between them; the best round of each is reported, with ``ratio`` = ours / HF in generated tokens per second
(target >= 0.9).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.core.hardware import torch_threads  # noqa: E402
from workbench.data.forward import hf_model_from_tl  # noqa: E402
from workbench.data.models import EMBEDDED_MODELS, load_model  # noqa: E402
from workbench.intervene.generation import GenerationConfig, generate, prepare_for_decoding, prompt_tokens  # noqa: E402

PROMPTS = ["The history of the city begins", "La capital de Francia es", "In mathematics, a prime number is"]


def bench_model(name: str, n_new: int, n_samples: int, threads: int, reps: int) -> dict:
    model = load_model(name, device="cpu")
    prepare_for_decoding(model)  # before the HF model is built, so its LM head views the same (relaid) memory
    hf = hf_model_from_tl(model, causal_lm=True)
    hf.generation_config.eos_token_id = None  # run every sample to n_new tokens, as ours with stop_at_eos=False
    hf.generation_config.pad_token_id = 0
    config = GenerationConfig(max_new_tokens=n_new, n_samples=n_samples, temperature=0.7, top_p=0.9, seed=0,
                              stop_at_eos=False, threads=threads)

    def ours(backend: str = "auto"):
        def run() -> int:
            made = 0
            for i, prompt in enumerate(PROMPTS):
                out = generate(model, prompt, GenerationConfig(**{**config.__dict__, "seed": i, "backend": backend}))
                made += out.ids.numel()
            return made
        return run

    def theirs() -> int:
        made = 0
        with torch_threads(threads), torch.inference_mode():
            for i, prompt in enumerate(PROMPTS):
                torch.manual_seed(i)
                ids = prompt_tokens(model, prompt)[None].expand(n_samples, -1)
                out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                  temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=n_new, min_new_tokens=n_new,
                                  use_cache=True)
                made += out[:, ids.shape[1]:].numel()
        return made

    paths = {"ours": ours(), "ours_on_hooked_transformer": ours("hooked_transformer"), "hf_generate": theirs}
    best = dict.fromkeys(paths, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in paths.values():  # warm-up
            fn()
        for _ in range(reps):
            for key, fn in paths.items():
                t0 = time.perf_counter()
                made = fn()
                best[key] = max(best[key], made / (time.perf_counter() - t0))
    return {"tokens_per_s": {k: round(v, 1) for k, v in best.items()},
            "ratio": round(best["ours"] / best["hf_generate"], 3), "target": 0.9,
            "ratio_hooked_transformer_loop": round(best["ours_on_hooked_transformer"] / best["hf_generate"], 3),
            "prompts": len(PROMPTS), "samples_per_prompt": n_samples, "new_tokens": n_new}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(EMBEDDED_MODELS))
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    result = {"uptime_before": uptime(), "threads": args.threads, "sampling": {"temperature": 0.7, "top_p": 0.9}}
    result["models"] = {name: bench_model(name, args.new, args.samples, args.threads, args.reps)
                        for name in args.models.split(",")}
    result["uptime_after"] = uptime()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
