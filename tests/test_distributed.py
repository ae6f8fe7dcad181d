"""Training over several processes (workbench.sae.distributed), with gloo on CPU and torchrun, on tiny synthetic
data: data-parallel training equals one process with the same global batch, SAEs spread over ranks equal the
one-process multi-SAE pass, and a run whose rank was killed resumes to the same result."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.sae.distributed import Distributed, rank_slice, runs_of_rank

WORKER = Path(__file__).parent / "distributed" / "train_worker.py"
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(v, None)
    return env


def _single(out: Path, mode: str, steps: int) -> None:
    subprocess.run([sys.executable, str(WORKER), str(out), mode, str(steps)], check=True, env=_env(), timeout=120)


def _torchrun(out: Path, mode: str, steps: int, sleep: float = 0.0, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(out), mode, str(steps), str(sleep)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    text, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, text[-3000:]
    return proc


def _weights(out: Path, run: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / "train" / run / "sae" / "sae_weights.safetensors"))


def _assert_close(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        scale = float(a[k].abs().max()) or 1.0
        err = float((a[k] - b[k]).abs().max()) / scale
        assert err <= rtol, f"{k}: relative difference {err:.2e} > {rtol:g}"


def test_rank_slices_cover_the_batch_once():
    rows = torch.arange(12)
    parts = [rows[rank_slice(12, r, 3)] for r in range(3)]
    assert torch.equal(torch.cat(parts), rows)
    with pytest.raises(ValueError, match="divisible"):
        rank_slice(10, 0, 3)
    assert runs_of_rank(5, 1, 2) == [1, 3]
    with pytest.raises(ValueError, match="cannot be spread"):
        runs_of_rank(1, 0, 2)
    with pytest.raises(ValueError, match="unknown distributed mode"):
        Distributed(0, 2, "pipeline")
    one = Distributed.current()
    assert (one.rank, one.world_size, one.active) == (0, 1, False)
    assert torch.equal(one.local_rows(rows), rows)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    _single(out, "data", 12)
    return out


def test_data_parallel_equals_one_process(reference, tmp_path):
    _torchrun(tmp_path, "data", 12)
    for run in ("a", "b"):
        _assert_close(_weights(reference, run), _weights(tmp_path, run), 1e-5)
    # rank 0 alone wrote the logs: one start line and no duplicated steps
    lines = (tmp_path / "train" / "a" / "metrics.jsonl").read_text().splitlines()
    assert sum('"event": "start"' in line for line in lines) == 1
    assert not list(tmp_path.glob("train/summary.rank*"))


def test_runs_spread_over_ranks_equal_the_one_process_pass(reference, tmp_path):
    _torchrun(tmp_path, "runs", 12)
    for run in ("a", "b"):
        _assert_close(_weights(reference, run), _weights(tmp_path, run), 1e-6)
    assert sorted(p.name for p in (tmp_path / "train" / "checkpoints").iterdir()) == ["rank0-of-2", "rank1-of-2"]


def test_a_killed_rank_resumes_from_the_last_checkpoint(reference, tmp_path):
    proc = _torchrun(tmp_path, "data", 12, sleep=0.3, wait=False)
    ckpt = tmp_path / "train" / "checkpoints" / "step_00000005"
    deadline = time.time() + 120
    while not (ckpt / "state.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint was written"
    os.kill(int((tmp_path / "pid.1").read_text()), signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not (tmp_path / "train" / "a" / "sae").exists()
    _torchrun(tmp_path, "data", 12)
    lines = (tmp_path / "train" / "a" / "metrics.jsonl").read_text()
    assert '"event": "resume"' in lines
    for run in ("a", "b"):
        _assert_close(_weights(reference, run), _weights(tmp_path, run), 1e-5)


def test_the_train_command_runs_under_torchrun(tmp_path):
    """``torchrun -m workbench train`` on a store: one summary printed (rank 0), the same SAE as one process."""
    import numpy as np

    from helpers import write_store

    gen = np.random.default_rng(0)
    write_store(tmp_path / "store", gen.standard_normal((32, 16, 8)).astype(np.float32),
                gen.integers(5, 50, (32, 16)), shard_contexts=8)
    args = ["train", "--store", str(tmp_path / "store"), "--arch", "topk", "--d-sae", "32", "--k", "4",
            "--tokens", "256", "--batch-size", "64", "--device", "cpu", "--no-progress", "--checkpoint-every", "2"]
    one = subprocess.run([sys.executable, "-m", "workbench", *args, "--out", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "workbench", *args, "--out", str(tmp_path / "two")], env=_env(), capture_output=True,
                         text=True, timeout=180)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    assert two.stdout.count('"input_scale"') == 1
    run = "topk-32-k4"
    a = load_file(str(tmp_path / "one" / run / "sae" / "sae_weights.safetensors"))
    b = load_file(str(tmp_path / "two" / run / "sae" / "sae_weights.safetensors"))
    _assert_close(a, b, 1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Harvesting over ranks
# ----------------------------------------------------------------------------------------------------------------


def _rank_store(path, shards, n_ctx=4, ctx=8, d=6, hook="blocks.0.hook_resid_post"):
    """A rank's store holding the given global shards (token ids encode the global shard and context)."""
    import numpy as np

    from workbench.data.store import StoreWriter

    w = StoreWriter(path, model_name="m", hooks=[hook], d_model=d, context_size=ctx, dtype="bfloat16",
                    shard_contexts=n_ctx)
    for local, g in enumerate(shards):
        tok = (np.arange(n_ctx * ctx).reshape(n_ctx, ctx) + 1000 * g).astype(np.int32)
        acts = np.full((n_ctx * ctx, d), float(g), dtype=np.float32)
        w.write_shard(local, tok, np.zeros_like(tok), np.tile(np.arange(ctx), (n_ctx, 1)), {hook: acts})
    w.close()


def test_rank_stores_merge_in_global_order_and_resume(tmp_path):
    import numpy as np

    from workbench.data.store import ActivationStore, StoreWriter
    from workbench.data.store_ranks import merge_rank_stores, rank_store_dir, shards_of_rank

    assert shards_of_rank(5, 0, 2) == [0, 2, 4] and shards_of_rank(5, 1, 2) == [1, 3]
    out = tmp_path / "store"
    _rank_store(rank_store_dir(out, 0, 2), [0, 2, 4])
    _rank_store(rank_store_dir(out, 1, 2), [1])  # rank 1 has not finished shard 3
    args = dict(model_name="m", hooks=["blocks.0.hook_resid_post"], d_model=6, context_size=8, dtype="bfloat16",
                shard_contexts=4)
    final = StoreWriter(out, **args)
    with pytest.raises(Exception, match="rank 1 did not finish"):
        merge_rank_stores(final, 2, 5)
    assert final.n_complete_shards == 3  # shards 0, 1, 2 moved; the merge resumes from shard 3
    final.close()
    _rank_store(tmp_path / "r1b", [1, 3])  # a finished rank 1, as a rerun writes it
    shutil.rmtree(rank_store_dir(out, 1, 2))
    (tmp_path / "r1b").rename(rank_store_dir(out, 1, 2))
    # shard 1 of the rerun's rank store is already in the final store: only shard 3 and 4 move
    final = StoreWriter(out, **args)
    merge_rank_stores(final, 2, 5)
    store = final.finalize()
    assert not rank_store_dir(out, 0, 2).exists() and not rank_store_dir(out, 1, 2).exists()
    store = ActivationStore.open(out, verify="full")
    ids = store.token_ids()
    assert [int(ids[4 * g, 0]) // 1000 for g in range(5)] == [0, 1, 2, 3, 4]
    acts = np.stack([store.activations(4 * g).float().numpy()[0, 0] for g in range(5)])
    assert acts.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_two_rank_harvest_equals_one_process(tmp_path):
    """``torchrun -m workbench harvest`` on the small embedded model: the same token ids, positions and
    activations as one process, one store, checksummed."""
    import numpy as np

    from workbench.data.store import ActivationStore

    args = ["harvest", "--model", "smollm2-135m-instruct", "--tokens", "3072", "--context-size", "64",
            "--batch", "4", "--shard-contexts", "4", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "workbench", *args, "--out", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "workbench", *args, "--out", str(tmp_path / "two")], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    a, b = ActivationStore.open(tmp_path / "one"), ActivationStore.open(tmp_path / "two", verify="full")
    assert b.manifest["extra"]["processes"] == 2 and len(b.manifest["shards"]) == 12
    assert np.array_equal(a.token_ids(), b.token_ids()) and np.array_equal(a.positions(), b.positions())
    assert np.array_equal(a.doc_ids(), b.doc_ids())
    for c in range(a.n_contexts):
        assert torch.equal(a.activations(c), b.activations(c)), c
    assert not list(tmp_path.glob("two.rank*"))
