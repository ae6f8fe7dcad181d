"""One process of a distributed-training test: trains tiny SAEs on synthetic activations.

    python train_worker.py OUT MODE STEPS [SLEEP]          (one process)
    torchrun --nproc_per_node 2 train_worker.py OUT MODE STEPS [SLEEP]

MODE is ``data`` (DDP) or ``runs`` (SAEs spread over ranks). SLEEP (seconds per batch) slows the source so a test
can kill a rank mid-run. Each rank writes its pid to OUT/pid.<rank>.
"""
import os
import sys
import time
from pathlib import Path

import torch

from workbench.sae.distributed import Distributed, init_from_env
from workbench.sae.sources import SyntheticSource
from workbench.sae.train import RunSpec, TrainConfig, train


class SlowSource(SyntheticSource):
    def __init__(self, *args, sleep: float = 0.0, **kw):
        super().__init__(*args, **kw)
        self.sleep = sleep

    def batch(self, index, batch_size):
        if self.sleep:
            time.sleep(self.sleep)
        return super().batch(index, batch_size)


def main() -> None:
    out, mode, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    sleep = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    torch.set_num_threads(1)
    init_from_env("cpu")
    dist = Distributed.current(mode)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pid.{dist.rank}").write_text(str(os.getpid()))
    source = SlowSource(16, 48, active=4, seed=3, mean_norm=1.0, noise=0.01, sleep=sleep)
    specs = [RunSpec("topk", 64, k=4, name="a"), RunSpec("relu", 32, l1_coefficient=1.0, name="b")]
    cfg = TrainConfig(total_tokens=64 * steps, batch_size=64, device="cpu", selection_dtype="float32",
                      checkpoint_every=5, keep_checkpoints=2, log_every=5, scale_estimate_tokens=256,
                      b_dec_init_tokens=256, heldout_eval_tokens=0)
    train(specs, cfg, source, out / "train", progress=False, distributed=dist)


if __name__ == "__main__":
    main()
