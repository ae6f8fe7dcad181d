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

import pytest
import torch

from workbench.sae import cli as train_cli
from workbench.sae.io import load_sae
from workbench.sae.train import (CheckpointError, RunSpec, SyntheticSource, TensorSource, TrainConfig, TrainingDiverged,
                             estimate_input_scale, lr_multiplier, train, warmup_multiplier)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_source(seed: int = 0) -> SyntheticSource:
    # 64 known unit features in 32 dims, 3 active per token, on top of a large shared mean (like a residual stream)
    return SyntheticSource(32, 64, active=3, seed=seed, mean_norm=5.0, noise=0.01, scale=3.0, zipf=0.3)


def _small_config(**kw) -> TrainConfig:
    base = dict(total_tokens=64 * 40, batch_size=64, log_every=5, checkpoint_every=10, scale_estimate_tokens=512,
                b_dec_init_tokens=512)
    base.update(kw)
    return TrainConfig(**base)


class Interrupted(Exception):
    pass


class StopAfter:
    """A source that raises after ``n`` training batches, as a crash would."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n
        self.d_model, self.metadata = source.d_model, source.metadata

    def batches(self, batch_size, *, start_tokens=0):
        for i, batch in enumerate(self.source.batches(batch_size, start_tokens=start_tokens)):
            if i == self.n:
                raise Interrupted
            yield batch

    def describe(self):
        return self.source.describe()


# ---------------------------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------------------------


def test_every_architecture_recovers_known_features_in_one_pass(tmp_path):
    """Five SAEs trained together on one stream; each finds most of the 64 true directions (cos >= 0.9)."""
    src = _toy_source()
    specs = [RunSpec("topk", 128, k=3), RunSpec("batchtopk", 128, k=3), RunSpec("matryoshka", 128, k=3),
             RunSpec("relu", 128, l1_coefficient=1.0, lr=3e-3), RunSpec("jumprelu", 128, l0_coefficient=0.3, lr=3e-3)]
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
    assert [e["event"] for e in log if "event" in e] == ["start", "resume", "end"]


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

    class Slow:
        def __init__(self, src):
            self.src, self.d_model, self.metadata = src, src.d_model, src.metadata
        def batches(self, batch_size, *, start_tokens=0):
            for b in self.src.batches(batch_size, start_tokens=start_tokens):
                time.sleep(0.05)
                yield b
        def describe(self):
            return self.src.describe()

    train(_SPECS, _small_config(dead_window_tokens=256, checkpoint_every=5), Slow(_toy_source()), {out!r},
          progress=False)
""")


def test_resume_after_kill_9_equals_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out)))
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
    assert latest.read_text().strip() < "step_00000040"  # it really was interrupted
    config = _small_config(dead_window_tokens=256, checkpoint_every=5)
    src = _toy_source()
    resumed = train(_SPECS, config, src, out, progress=False)
    reference = train(_SPECS, config, src, tmp_path / "ref", progress=False)
    _assert_same(_final_state(reference), _final_state(resumed))


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
    (tmp_path / "bad.yaml").write_text("grid: {arch: [gated], d_sae: [8]}")
    with pytest.raises(ValueError, match="unknown arch 'gated'"):
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
    assert args.func(args) == 1
    assert "--d-sae" in capsys.readouterr().err


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
