"""One process against ``torchrun --nproc_per_node N`` (data parallel) on the same SAE training; prints JSON.

    python benchmarks/bench_distributed.py [--procs 2] [--tokens 524288] [--d-sae 4096] [--batch 4096]

Synthetic activations of Gemma-3-270M's width (640), a TopK SAE (k 32), the same global batch and seed in both
runs: tokens/s of each (from their summary.json), their ratio, and the largest relative difference between the
final weights (data parallel should equal one process up to float rounding). Each process gets
``threads // procs`` torch threads so the two runs use the same cores. On a 2-core CPU expect a ratio near 1:
the point is that the same command scales on machines with several GPUs or many cores. The device is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, sys, torch
from workbench.sae.distributed import Distributed, init_from_env
from workbench.sae.sources import SyntheticSource
from workbench.sae.train import RunSpec, TrainConfig, train
out, tokens, d_sae, batch, threads, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.set_num_threads(threads)
init_from_env(device)
cfg = TrainConfig(total_tokens=tokens, batch_size=batch, device=device, checkpoint_every=0, heldout_eval_tokens=0)
train([RunSpec("topk", d_sae, k=32, name="sae")], cfg, SyntheticSource(640, 8192, active=32, seed=0, mean_norm=5.0,
      noise=0.05), out, progress=False, distributed=Distributed.current())
'''


def _run(cmd: list[str], out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"tokens_per_s": summary["tokens_per_s"], "wall_s": round(time.perf_counter() - t, 1),
            "fvu": summary["runs"]["sae"].get("fvu")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=524_288)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores shared by all processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    report: dict = {"machine": {"cpu_count": os.cpu_count(), "device": args.device, "torch": torch.__version__,
                                "load_average_at_start": os.getloadavg(),
                                "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0},
                    "settings": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "worker.py").write_text(WORKER)
        common = [str(args.tokens), str(args.d_sae), str(args.batch)]
        one = _run([sys.executable, str(tmp / "worker.py"), str(tmp / "one"), *common, str(args.threads), args.device],
                   tmp / "one")
        per = max(1, args.threads // args.procs)
        many = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                     str(args.procs), str(tmp / "worker.py"), str(tmp / "many"), *common, str(per), args.device], tmp / "many")
        a = load_file(str(tmp / "one" / "sae" / "sae" / "sae_weights.safetensors"))
        b = load_file(str(tmp / "many" / "sae" / "sae" / "sae_weights.safetensors"))
        diff = max(float((a[k] - b[k]).abs().max()) / (float(a[k].abs().max()) or 1.0) for k in a)
    report["one_process"] = one
    report[f"{args.procs}_processes"] = many
    report["ratio_tokens_per_s"] = many["tokens_per_s"] / one["tokens_per_s"]
    report["max_relative_weight_difference"] = diff
    report["machine"]["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
