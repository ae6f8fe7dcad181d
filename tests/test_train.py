"""The trainer: recovery of known features, schedules, checkpoints and resume, NaN stop, logs, CLI."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.core.errors import WorkbenchError
from workbench.sae import cli as train_cli
from workbench.sae.io import load_sae
from workbench.sae.train import (CheckpointError, RunSpec, StoreSource, SyntheticSource, TensorSource, TrainConfig,
                             TrainingDiverged, estimate_input_scale, lr_multiplier, train, warmup_multiplier)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_source(seed: int = 0) -> SyntheticSource:
    # 64 known unit features in 32 dims, 3 active per token, on top of a large shared mean (like a residual stream)
    return SyntheticSource(32, 64, active=3, seed=seed, mean_norm=5.0, noise=0.01, scale=3.0, zipf=0.3)


def _epoch_source() -> TensorSource:
    """768 tokens of the toy source in memory: 128 held out, 640 (10 batches of 64) to train on, epoch after epoch."""
    src = _toy_source()
    return TensorSource(torch.cat([src.batch(i, 64) for i in range(12)]), seed=5, holdout_tokens=128)


def _small_config(**kw) -> TrainConfig:
    base = dict(total_tokens=64 * 40, batch_size=64, log_every=5, checkpoint_every=10, scale_estimate_tokens=512,
                b_dec_init_tokens=512)
    base.update(kw)
    return TrainConfig(**base)


class Interrupted(Exception):
    pass


class StopAfter:
    """A source that raises after ``n`` training batches, as a crash would (it passes ``epoch=`` and the held-out
    attributes through, for sources that have them)."""

    def __init__(self, source, n: int, epoch: int | None = None):
        self.source, self.n, self.epoch = source, n, epoch
        self.d_model, self.metadata = source.d_model, source.metadata

    def batches(self, batch_size, *, start_tokens=0, **epoch):
        """Batch ``n`` of a call raises (with ``epoch`` set: only in calls for that epoch)."""
        armed = self.epoch is None or epoch.get("epoch") == self.epoch
        for i, batch in enumerate(self.source.batches(batch_size, start_tokens=start_tokens, **epoch)):
            if armed and i == self.n:
                raise Interrupted
            yield batch

    def __getattr__(self, name):  # n_train_tokens, holdout_tokens, heldout_batches
        return getattr(self.source, name)

    def describe(self):
        return self.source.describe()


# ---------------------------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------------------------


def test_every_architecture_recovers_known_features_in_one_pass(tmp_path):
    """Six SAEs (every architecture) trained together on one stream; each finds most of the 64 true directions
    (cos >= 0.9)."""
    src = _toy_source()
    specs = [RunSpec("topk", 128, k=3), RunSpec("batchtopk", 128, k=3), RunSpec("matryoshka", 128, k=3),
             RunSpec("relu", 128, l1_coefficient=1.0, lr=3e-3), RunSpec("jumprelu", 128, l0_coefficient=0.3, lr=3e-3),
             RunSpec("gated", 128, l1_coefficient=3.0, lr=3e-3)]
    config = TrainConfig(total_tokens=200_000, batch_size=256, log_every=50, checkpoint_every=0)
    result = train(specs, config, src, tmp_path, progress=False)
    assert set(result.runs) == {s.resolved_name for s in specs}
    truth = src.features
    for name, run in result.runs.items():
        W = run.sae.W_dec.detach()
        best = (truth @ (W / W.norm(dim=1, keepdim=True)).T).max(dim=1).values
        recovered = float((best >= 0.9).float().mean())
        assert recovered >= 0.75, f"{name}: only {recovered:.0%} of true features recovered"
        assert run.metrics["fvu"] < 0.3, name
        # what was saved is what was returned, and it takes raw activations
        loaded = load_sae(run.path)
        x = src.batch(10_000, 64)
        assert torch.allclose(loaded.encode(x), run.sae.encode(x), atol=1e-5)
    assert result.runs["topk-128-k3"].metrics["l0"] == pytest.approx(3.0)
    assert 1.0 < result.runs["relu-128-l1_1"].metrics["l0"] < 12
    assert 1.0 < result.runs["gated-128-l1_3"].metrics["l0"] < 12


# ---------------------------------------------------------------------------------------------------------------
# Schedules and scaling
# ---------------------------------------------------------------------------------------------------------------


def test_schedules():
    assert lr_multiplier(0, 100) == 1.0 and lr_multiplier(79, 100) == 1.0
    assert lr_multiplier(80, 100) == pytest.approx(1.0)
    assert lr_multiplier(90, 100) == pytest.approx(0.5)
    assert lr_multiplier(99, 100) == pytest.approx(0.05)
    assert lr_multiplier(4, 100, warmup_steps=10) == pytest.approx(0.5)
    assert warmup_multiplier(0, 100, 0.05) == pytest.approx(0.2)
    assert warmup_multiplier(4, 100, 0.05) == 1.0 and warmup_multiplier(50, 100, 0.05) == 1.0


def test_input_scale_makes_mean_squared_norm_d():
    x = torch.randn(1000, 8) * 40 + 100
    s = estimate_input_scale(x)
    assert (s * x).pow(2).sum(1).mean().item() == pytest.approx(8.0, rel=1e-6)
    with pytest.raises(ValueError, match="mean squared norm"):
        estimate_input_scale(torch.zeros(4, 8))


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints, resume, NaN
# ---------------------------------------------------------------------------------------------------------------

_SPECS = [RunSpec("topk", 96, k=4), RunSpec("relu", 64, l1_coefficient=0.5, lr=2e-3)]


def _final_state(result):
    return {name: ({k: v.clone() for k, v in run.sae.state_dict().items()},
                   {k: v for k, v in run.metrics.items() if k != "tokens_per_s"})
            for name, run in result.runs.items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        (wa, ma), (wb, mb) = a[name], b[name]
        for key in wa:
            assert torch.equal(wa[key], wb[key]), (name, key)
        assert ma == mb, name


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    src = _toy_source()
    config = _small_config(dead_window_tokens=256)
    reference = _final_state(train(_SPECS, config, src, tmp_path / "ref", progress=False))

    crashing = StopAfter(src, 23)  # dies between the checkpoints at steps 20 and 30
    with pytest.raises(Interrupted):
        train(_SPECS, config, crashing, tmp_path / "run", progress=False)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*"))
    assert ckpts[-1] == "step_00000020"
    resumed = train(_SPECS, config, src, tmp_path / "run", progress=False)
    _assert_same(reference, _final_state(resumed))
    log = [json.loads(line) for line in (tmp_path / "run" / "topk-96-k4" / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in log if "event" in e] == ["start", "resume", "epoch", "end"]


def test_resume_keeps_the_path_choice_of_a_relu_run(tmp_path):
    """A relu run switches between the dense and the sparse path by the previous step's density; the density is
    checkpointed, so a resumed run takes the same path at every step and ends bit-identical."""
    src = _toy_source()
    specs = [RunSpec("relu", 64, l1_coefficient=1.0, lr=2e-3)]
    config = _small_config(dead_window_tokens=256, sparse_max_density=0.33, log_every=1, checkpoint_every=5)
    reference = _final_state(train(specs, config, src, tmp_path / "ref", progress=False))
    log = [json.loads(line) for line in (tmp_path / "ref" / "relu-64-l1_1" / "metrics.jsonl").read_text().splitlines()]
    paths = [e["sparse_step_fraction"] for e in log if "sparse_step_fraction" in e]
    # paths[i] is step i (0-based). The crash leaves the checkpoint after step 34; step 35 goes dense on the
    # density of step 34, where its own selection alone would have gone sparse: the resumed run must know it
    assert paths[34:36] == [1.0, 0.0] and 0.0 in paths[:34]
    with pytest.raises(Interrupted):
        train(specs, config, StopAfter(src, 38), tmp_path / "run", progress=False)
    assert sorted((tmp_path / "run" / "checkpoints").glob("step_*"))[-1].name == "step_00000035"
    resumed = train(specs, config, src, tmp_path / "run", progress=False)
    _assert_same(reference, _final_state(resumed))


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {repo!r})
    from workbench.sae.train import RunSpec, SyntheticSource, TrainConfig, train
    sys.path.insert(0, {tests!r})
    from test_train import _SPECS, _small_config, _toy_source

    from test_train import _epoch_source

    class Slow:
        def __init__(self, src):
            self.src, self.d_model, self.metadata = src, src.d_model, src.metadata
        def batches(self, batch_size, *, start_tokens=0, **epoch):
            for b in self.src.batches(batch_size, start_tokens=start_tokens, **epoch):
                time.sleep(0.05)
                yield b
        def __getattr__(self, name):
            return getattr(self.src, name)
        def describe(self):
            return self.src.describe()

    train(_SPECS, {config}, Slow({source}), {out!r}, progress=False)
""")


def test_resume_after_kill_9_equals_uninterrupted_run(tmp_path):
    _kill_9_then_resume(tmp_path, "_small_config(dead_window_tokens=256, checkpoint_every=5)", "_toy_source()",
                        _small_config(dead_window_tokens=256, checkpoint_every=5), _toy_source())


def _kill_9_then_resume(tmp_path, config_code: str, source_code: str, config, src):
    """Run ``train(_SPECS, config, source)`` in a subprocess, kill -9 it once checkpoint 15 exists, resume it here
    and compare with an uninterrupted run (``config_code`` / ``source_code`` build the same config and source)."""
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out),
                                          config=config_code, source=source_code))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    latest = out / "checkpoints" / "LATEST"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.exists() and latest.read_text().strip() >= "step_00000015":
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    killed_at = latest.read_text().strip()
    assert killed_at < "step_00000040"  # it really was interrupted
    resumed = train(_SPECS, config, src, out, progress=False)
    reference = train(_SPECS, config, src, tmp_path / "ref", progress=False)
    _assert_same(_final_state(reference), _final_state(resumed))
    return int(killed_at.removeprefix("step_")), resumed, reference


class NaNAfter:
    def __init__(self, source, n: int):
        self.source, self.n = source, n
        self.d_model, self.metadata = source.d_model, source.metadata

    def batches(self, batch_size, *, start_tokens=0):
        for i, batch in enumerate(self.source.batches(batch_size, start_tokens=start_tokens)):
            if start_tokens // batch_size + i >= self.n:
                batch = batch.clone()
                batch[3, 5] = float("nan")
            yield batch

    def describe(self):
        return self.source.describe()


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    src = NaNAfter(_toy_source(), 25)
    with pytest.raises(TrainingDiverged) as info:
        train(_SPECS, _small_config(), src, tmp_path, progress=False)
    message = str(info.value)
    assert "step 25" in message and "non-finite loss" in message
    assert "topk-96-k4" in message and "step_00000020" in message
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert ckpts[-1] == "step_00000020"
    state = json.loads((tmp_path / "checkpoints" / "step_00000020" / "state.json").read_text())
    assert state["step"] == 20
    events = [json.loads(x) for x in (tmp_path / "topk-96-k4" / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "nonfinite"


def test_corrupt_checkpoint_error_names_the_file(tmp_path):
    src = _toy_source()
    with pytest.raises(Interrupted):
        train(_SPECS, _small_config(), StopAfter(src, 15), tmp_path, progress=False)
    bad = tmp_path / "checkpoints" / "step_00000010" / "topk-96-k4" / "optimizer.safetensors"
    bad.write_bytes(bad.read_bytes()[:64])
    with pytest.raises(CheckpointError, match=str(bad)) as info:
        train(_SPECS, _small_config(), src, tmp_path, progress=False)
    assert isinstance(info.value, ValueError)
    state = tmp_path / "checkpoints" / "step_00000010" / "state.json"
    state.write_text("{not json")
    with pytest.raises(CheckpointError, match="state.json"):
        train(_SPECS, _small_config(), src, tmp_path, progress=False)
    # starting afresh is always possible
    train(_SPECS, _small_config(total_tokens=64 * 10), src, tmp_path, resume=False, progress=False)


def test_d_model_mismatch_is_a_clear_error(tmp_path):
    src = _toy_source()
    with pytest.raises(ValueError, match=r"d_in=64 .* d_model=32"):
        train([RunSpec("topk", 96, k=4, d_in=64)], _small_config(), src, tmp_path / "a", progress=False)
    with pytest.raises(Interrupted):
        train(_SPECS, _small_config(), StopAfter(src, 12), tmp_path / "b", progress=False)
    other = TensorSource(torch.randn(5000, 16))
    with pytest.raises(CheckpointError, match=r"d_in=32 .* d_model=16"):
        train(_SPECS, _small_config(), other, tmp_path / "b", progress=False)


def test_metrics_log_and_outputs(tmp_path):
    result = train(_SPECS, _small_config(dead_window_tokens=640), _toy_source(), tmp_path, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "relu-64-l1_0.5" / "metrics.jsonl").read_text().splitlines()]
    start, steps, end = lines[0], [x for x in lines if "event" not in x], lines[-1]
    assert start["event"] == "start" and start["dead_window_tokens"] == 640
    assert [x["step"] for x in steps] == [5, 10, 15, 20, 25, 30, 35, 40]
    for key in ("loss", "mse", "l0", "fvu", "explained_variance", "dead_fraction", "lr", "tokens_per_s"):
        assert key in steps[-1]
    assert end["event"] == "end" and Path(end["saved_to"]).is_dir()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dead_window_tokens"] == 640 and summary["input_scale"] == pytest.approx(result.input_scale)
    cfg = json.loads((tmp_path / "relu-64-l1_0.5" / "sae" / "cfg.json").read_text())
    assert cfg["metadata"]["workbench"]["training"]["dead_window_tokens"] == 640
    assert steps[0]["lr"] == pytest.approx(2e-3) and steps[-1]["lr"] < 2e-3 / 7


def test_bf16_requires_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        TrainConfig(bf16=True, device="cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        TrainConfig(device="gpu0")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert TrainConfig().resolved_device.type == expected


# ---------------------------------------------------------------------------------------------------------------
# Epochs
# ---------------------------------------------------------------------------------------------------------------


def _id_store(path: Path, n_ctx: int = 40, ctx: int = 16):
    """A bf16 store (10 shards of 4 contexts) whose activation rows carry their own row number (columns 0 and 1:
    row // 64 and row % 64, exact in bf16), so every batch tells which tokens it holds."""
    from helpers import write_store

    rng = np.random.default_rng(0)
    acts = rng.standard_normal((n_ctx * ctx, 8)).astype(np.float32)
    rows = np.arange(n_ctx * ctx)
    acts[:, 0], acts[:, 1] = rows // 64, rows % 64
    tokens = rng.integers(2, 50, (n_ctx, ctx))
    tokens[:, 0] = 1
    return write_store(path, acts.reshape(n_ctx, ctx, 8), tokens, shard_contexts=4)


def _ids(batch: torch.Tensor) -> list[int]:
    return (batch[:, 0] * 64 + batch[:, 1]).round().long().tolist()


def _id_source(store, **kw) -> StoreSource:
    src = StoreSource(store.path, seed=3, holdout_tokens=100, **kw)
    src.epoch_block_shards = 1  # 60-token blocks, so an epoch shuffles several blocks
    return src


class Spy:
    """Passes a source through, recording the row ids of every batch drawn, by epoch."""

    def __init__(self, source):
        self.source, self.d_model, self.metadata = source, source.d_model, source.metadata
        self.seen: dict[int, list[int]] = {}

    def batches(self, batch_size, *, start_tokens=0, epoch=0):
        for batch in self.source.batches(batch_size, start_tokens=start_tokens, epoch=epoch):
            self.seen.setdefault(epoch, []).extend(_ids(batch))
            yield batch

    def __getattr__(self, name):
        return getattr(self.source, name)

    def describe(self):
        return self.source.describe()


def test_store_epochs_reshuffle_the_training_tokens_and_never_the_heldout_ones(tmp_path):
    store = _id_store(tmp_path / "store")  # 40 contexts x 15 non-BOS tokens = 600 tokens
    src = _id_source(store)
    held = [i for b in src.heldout_batches(20) for i in _ids(b)]
    assert len(set(held)) == len(held) == 100 and src.n_train_tokens == 500
    epochs = [[i for b in src.batches(50, epoch=e) for i in _ids(b)] for e in range(4)]
    train_set = set(epochs[0])
    assert len(train_set) == 500 and not train_set & set(held)
    assert train_set | set(held) == {r for r in range(640) if r % 16}  # every non-BOS token, in one part or other
    for order in epochs[1:]:
        assert sorted(order) == sorted(epochs[0])  # the same tokens, each once
    assert len({tuple(order) for order in epochs}) == 4  # a different order each epoch
    # epoch 0 is the store's usual stream after the held-out head, so runs of one epoch train as before
    assert epochs[0] == [i for b in store.iter_batches(50, seed=3, start_tokens=100) for i in _ids(b)]
    # restarting inside an epoch continues its order (a resume relies on it), and the order depends on
    # (seed, epoch) only
    assert [i for b in src.batches(50, start_tokens=150, epoch=2) for i in _ids(b)] == epochs[2][150:]
    assert [i for b in _id_source(store).batches(50, epoch=2) for i in _ids(b)] == epochs[2]
    assert [i for b in StoreSource(store.path, seed=4, holdout_tokens=100).batches(50, epoch=2)
            for i in _ids(b)] != epochs[2]


def test_tensor_source_epochs_reshuffle_and_keep_heldout_out():
    data = torch.arange(300, dtype=torch.float32)[:, None].repeat(1, 4)
    src = TensorSource(data, seed=1, holdout_tokens=60)
    held = {int(x) for b in src.heldout_batches(20) for x in b[:, 0]}
    orders = [[int(x) for b in src.batches(40, epoch=e) for x in b[:, 0]] for e in range(3)]
    assert len(held) == 60 and src.n_train_tokens == 240
    assert all(sorted(o) == sorted(set(range(300)) - held) for o in orders)
    assert len({tuple(o) for o in orders}) == 3
    assert [int(x) for b in src.batches(40, start_tokens=80, epoch=2) for x in b[:, 0]] == orders[2][80:]


def test_training_for_epochs_logs_heldout_fvu_and_never_trains_on_heldout(tmp_path):
    store = _id_store(tmp_path / "store")
    spy = Spy(_id_source(store))
    held = {i for b in spy.source.heldout_batches(20) for i in _ids(b)}
    train_set = {i for b in spy.source.batches(50) for i in _ids(b)}
    config = _small_config(total_tokens=500, batch_size=50, epochs=4, log_every=3, checkpoint_every=0,
                           heldout_eval_tokens=100)
    result = train([RunSpec("topk", 16, k=2)], config, spy, tmp_path / "run", progress=False)
    assert result.steps == config.total_steps == 40 and result.tokens == 2000
    assert sorted(spy.seen) == [0, 1, 2, 3]
    assert not set().union(*spy.seen.values()) & held  # training, scaling and the train-FVU sample alike
    assert set(spy.seen[0]) == train_set and len(train_set) == 500
    for epoch in (1, 2, 3):  # later epochs are drawn by the trainer alone: every training token once
        assert sorted(spy.seen[epoch]) == sorted(train_set)
    lines = [json.loads(x) for x in (tmp_path / "run" / "topk-16-k2" / "metrics.jsonl").read_text().splitlines()]
    ends = [x for x in lines if x.get("event") == "epoch"]
    assert [(x["epoch"], x["step"]) for x in ends] == [(1, 10), (2, 20), (3, 30), (4, 40)]
    for x in ends:
        assert x["heldout_tokens"] == 100 and 0 <= x["heldout_fvu"] < 2 and x["heldout_l0"] <= 2
        assert x["train_tokens"] == 100 and 0 <= x["train_fvu"] < 2
    steps = [x for x in lines if "event" not in x]
    assert 10 in [x["step"] for x in steps]  # an interval closes at each epoch end
    assert steps[0]["lr"] == pytest.approx(steps[1]["lr"]) and steps[-1]["lr"] < steps[0]["lr"] / 5  # one schedule
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 4 and summary["tokens_per_epoch"] == 500
    assert summary["runs"]["topk-16-k2"]["epochs"] == ends == result.runs["topk-16-k2"].epochs


def test_resume_inside_an_epoch_equals_uninterrupted_run(tmp_path):
    store = _id_store(tmp_path / "store")
    src = _id_source(store)
    config = _small_config(total_tokens=500, batch_size=50, epochs=4, checkpoint_every=5, dead_window_tokens=200)
    reference = train(_SPECS, config, src, tmp_path / "ref", progress=False)
    with pytest.raises(Interrupted):  # dies at step 27, in the third epoch; the last checkpoint is step 25
        train(_SPECS, config, StopAfter(src, 7, epoch=2), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoints" / "LATEST").read_text() == "step_00000025"
    resumed = train(_SPECS, config, _id_source(store), tmp_path / "run", progress=False)
    _assert_same(_final_state(reference), _final_state(resumed))
    for name in reference.runs:
        assert resumed.runs[name].epochs == reference.runs[name].epochs and len(reference.runs[name].epochs) == 4


def test_resume_after_kill_9_inside_an_epoch_equals_uninterrupted_run(tmp_path):
    code = "_small_config(total_tokens=64 * 8, epochs=5, dead_window_tokens=256, checkpoint_every=5)"
    config = _small_config(total_tokens=64 * 8, epochs=5, dead_window_tokens=256, checkpoint_every=5)
    killed_at, resumed, reference = _kill_9_then_resume(tmp_path, code, "_epoch_source()", config, _epoch_source())
    assert killed_at % config.steps_per_epoch  # the kill left a checkpoint inside an epoch
    for name in reference.runs:
        assert resumed.runs[name].epochs == reference.runs[name].epochs and len(reference.runs[name].epochs) == 5


def test_epoch_settings_are_checked_before_training(tmp_path):
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="epochs="):
            TrainConfig(epochs=bad)
    assert TrainConfig(total_tokens=4096, batch_size=512, epochs=3).total_steps == 24
    with pytest.raises(ValueError, match=r"does not fit in the source's 640 training tokens \(128 more are held out\)"
                                         r": set total_tokens <= 640"):
        train(_SPECS, _small_config(total_tokens=64 * 11, epochs=2), _epoch_source(), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="reshuffles"):
        train(_SPECS, _small_config(epochs=2), _toy_source(), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_training_dir_includes_epochs(tmp_path):
    from workbench.sae.train import training_dir

    src, specs = _epoch_source(), [RunSpec("topk", 64, k=4)]
    one = training_dir(tmp_path, specs, TrainConfig(total_tokens=512, batch_size=64), src)
    assert one != training_dir(tmp_path, specs, TrainConfig(total_tokens=512, batch_size=64, epochs=2), src)
    assert one == training_dir(tmp_path, specs, TrainConfig(total_tokens=512, batch_size=64, heldout_eval_tokens=0),
                               src)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def test_parse_count():
    assert train_cli.parse_count("2M") == 2_000_000
    assert train_cli.parse_count("500k") == 500_000
    assert train_cli.parse_count("1.5m") == 1_500_000
    assert train_cli.parse_count("4096") == 4096
    with pytest.raises(argparse.ArgumentTypeError):
        train_cli.parse_count("lots")


def test_sweep_files_yaml_and_json(tmp_path):
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""
        train: {total_tokens: 2M, batch_size: 4096}
        grid: {arch: [topk, relu], d_sae: [4096, 8192], k: [32, 64], l1: [5]}
        runs:
          - {arch: jumprelu, d_sae: 1024, l0: 1.5, name: jr}
    """))
    specs, train_over, _ = train_cli.load_sweep(tmp_path / "s.yaml")
    names = [s.resolved_name for s in specs]
    assert names == ["topk-4096-k32", "topk-4096-k64", "topk-8192-k32", "topk-8192-k64", "relu-4096-l1_5",
                     "relu-8192-l1_5", "jr"]
    assert train_over == {"total_tokens": 2_000_000, "batch_size": 4096}
    (tmp_path / "s.json").write_text(json.dumps({"runs": [{"arch": "matryoshka", "d_sae": 256, "k": 8,
                                                           "matryoshka_widths": [32, 128, 256]}]}))
    specs, _, _ = train_cli.load_sweep(tmp_path / "s.json")
    assert specs[0].sae_config(16).matryoshka_widths == (32, 128, 256)
    (tmp_path / "g.yaml").write_text("grid: {arch: [gated, topk], d_sae: [64], l1: [2, 4], k: [8]}")
    specs, _, _ = train_cli.load_sweep(tmp_path / "g.yaml")  # each architecture takes its own sparsity knob
    assert [s.resolved_name for s in specs] == ["gated-64-l1_2", "gated-64-l1_4", "topk-64-k8"]
    (tmp_path / "bad.yaml").write_text("grid: {arch: [hypothetical], d_sae: [8]}")
    with pytest.raises(ValueError, match="unknown arch 'hypothetical'"):
        train_cli.load_sweep(tmp_path / "bad.yaml")


def test_cli_trains_from_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_cli, "build_source", lambda store, hook, seed, holdout: _toy_source())
    parser = argparse.ArgumentParser(prog="workbench")
    train_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--store", "fake", "--arch", "topk", "--d-sae", "64", "--k", "4",
                              "--tokens", "2560", "--batch-size", "64", "--out", str(tmp_path), "--no-progress",
                              "--device", "cpu"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"]["topk-64-k4"]["l0"] == pytest.approx(4.0)
    assert (tmp_path / "topk-64-k4" / "sae" / "cfg.json").is_file()
    args = parser.parse_args(["train", "--store", "fake", "--arch", "topk", "--tokens", "2560"])
    # a user's mistake is a WorkbenchError; workbench.cli.main prints it as one line, exit 2 (tests/test_cli_errors.py)
    with pytest.raises(WorkbenchError, match="--d-sae"):
        args.func(args)


def test_cli_epochs_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_cli, "build_source", lambda store, hook, seed, holdout: _epoch_source())
    parser = argparse.ArgumentParser(prog="workbench")
    train_cli.register(parser.add_subparsers(dest="command"))
    flags = ["train", "--store", "fake", "--arch", "topk", "--d-sae", "64", "--k", "4", "--tokens", "640",
             "--batch-size", "64", "--out", str(tmp_path), "--no-progress", "--device", "cpu"]
    args = parser.parse_args(flags + ["--epochs", "3"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 3 and summary["tokens"] == 3 * 640
    assert 0 < summary["runs"]["topk-64-k4"]["heldout_fvu"] < 1
    args = parser.parse_args(flags + ["--epochs", "0"])
    with pytest.raises(WorkbenchError, match="epochs=0"):
        args.func(args)


def test_training_dir_changes_with_any_setting_that_defines_the_run(tmp_path):
    from workbench.sae.train import training_dir

    src = SyntheticSource(32, 64, active=3, seed=0)
    cfg = TrainConfig(total_tokens=4096, batch_size=512)
    base = training_dir(tmp_path, [RunSpec("relu", 128)], cfg, src)
    assert base == training_dir(tmp_path, [RunSpec("relu", 128)], TrainConfig(total_tokens=4096, batch_size=512), src)
    assert base.parent == tmp_path and base.name.startswith("sae-")
    others = {
        training_dir(tmp_path, [RunSpec("relu", 128, l1_coefficient=2.0)], cfg, src),
        training_dir(tmp_path, [RunSpec("relu", 256)], cfg, src),
        training_dir(tmp_path, [RunSpec("relu", 128)], TrainConfig(total_tokens=8192, batch_size=512), src),
        training_dir(tmp_path, [RunSpec("relu", 128)], cfg, SyntheticSource(32, 64, active=3, seed=1)),
    }
    assert base not in others and len(others) == 4
