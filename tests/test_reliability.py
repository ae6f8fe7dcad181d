"""What survives what: SIGINT / SIGTERM during training, harvesting and the feature pass (real signals, the command
line in subprocesses), a full disk under the store writer (injected, and on a real tmpfs when root), small
harvests that checkpoint, resumed metrics logs, and inputs that used to give silent wrong results.

The README's "Reliability" section points at these tests.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import PLANT_HOOK, identity_sae, write_store
from workbench import cli
from workbench.core.signals import Interrupted, StopSignals, exit_code
from workbench.data.store import ActivationStore, StoreError, StoreWriteError, StoreWriter

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _planted_store(path: Path, n_ctx: int = 256, ctx: int = 16, d: int = 16, shard_contexts: int = 64,
                   seed: int = 0) -> ActivationStore:
    rng = np.random.default_rng(seed)
    acts = rng.normal(size=(n_ctx, ctx, d)).astype(np.float32)
    acts[..., 0] += 3.0  # a shared direction, like a residual stream's mean
    tokens = rng.integers(0, 100, size=(n_ctx, ctx)).astype(np.int32)
    return write_store(path, acts, tokens, shard_contexts=shard_contexts)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the subprocess ended first (rc {proc.returncode}): "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the subprocess")


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


# ----------------------------------------------------------------------------------------------------------------
# Signals
# ----------------------------------------------------------------------------------------------------------------


def test_stop_signals_first_requests_second_stops_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        with StopSignals(what="work") as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert stop.requested and stop.signum == signal.SIGTERM  # the first one only asks
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the second one raises in here
            pytest.fail("a second SIGTERM should stop at once")
    assert info.value.exit_code == 143 == exit_code(signal.SIGTERM)
    assert "second signal" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is before
    assert exit_code(signal.SIGINT) == 130


_TRAIN_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from workbench import cli
    from workbench.sae import cli as train_cli

    real = train_cli.build_source

    class Slow:  # the same batches, slowly, so the signal lands mid-run
        def __init__(self, src):
            self.src = src
        def batches(self, *a, **k):
            for b in self.src.batches(*a, **k):
                time.sleep(0.03)
                yield b
        def __getattr__(self, name):
            return getattr(self.src, name)

    train_cli.build_source = lambda *a, **k: Slow(real(*a, **k))
    sys.exit(cli.main({args!r}))
""")


def _train_args(store: Path, out: Path) -> list[str]:
    return ["train", "--store", str(store), "--arch", "topk", "--d-sae", "32", "--k", "4", "--tokens", "3840",
            "--batch-size", "32", "--out", str(out), "--no-progress", "--device", "cpu", "--log-every", "5",
            "--checkpoint-every", "1000", "--seed", "3"]


def test_sigterm_during_training_checkpoints_says_how_to_resume_and_resumes_exactly(tmp_path, capsys):
    """``workbench train`` gets SIGTERM mid-run: it finishes the step, writes a checkpoint there (none was due),
    prints one line with the command to rerun and exits 143; rerunning it ends with the SAE of an uninterrupted run,
    and metrics.jsonl holds each step once."""
    store = _planted_store(tmp_path / "store").path
    out = tmp_path / "out"
    script = tmp_path / "train.py"
    script.write_text(_TRAIN_SCRIPT.format(repo=str(REPO), args=_train_args(store, out)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    metrics = out / "topk-32-k4" / "metrics.jsonl"
    try:
        assert cli.main(_train_args(store, tmp_path / "reference")) == 0  # while the subprocess starts up
        _wait_for(lambda: metrics.exists() and '"step": 10,' in metrics.read_text(), proc)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.stderr.close()
    assert rc == 143, stderr[-3000:]
    line = _one_line(stderr)
    assert line.startswith("interrupted: training stopped at step ") and "SIGTERM" in line
    rerun = line.split("rerun: ", 1)[1]
    assert rerun.split() == ["workbench", *_train_args(store, out)]
    stopped = int(line.split("at step ")[1].split()[0])
    assert 10 <= stopped < 120  # 120 steps in all (256 contexts of 15 tokens after <bos>, 32 a batch)
    assert (out / "checkpoints" / "LATEST").read_text().strip() == f"step_{stopped:08d}"
    assert not (out / "topk-32-k4" / "sae").exists()

    assert cli.main(_train_args(store, out)) == 0  # the printed command, run again
    capsys.readouterr()
    resumed = _sae_tensors(out / "topk-32-k4" / "sae")
    reference = _sae_tensors(tmp_path / "reference" / "topk-32-k4" / "sae")
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=0)
    steps = [r["step"] for r in _records(metrics) if "loss" in r and r.get("event") is None]
    assert steps == list(range(5, 121, 5))  # each once


def _sae_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "sae_weights.safetensors"))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@functools.lru_cache(maxsize=None)
def _tiny_model():
    """A two-layer random HookedTransformer with Gemma's tokenizer: harvests in milliseconds, deterministically."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("gemma-3-270m")
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=64, d_head=8, n_heads=2, d_mlp=32, d_vocab=len(tok),
                                  act_fn="gelu", default_prepend_bos=True)
    return HookedTransformer(cfg, tokenizer=tok).eval()


_HARVEST_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    sys.path.insert(0, {repo!r})
    from test_reliability import _tiny_model
    from workbench import cli
    from workbench.data import harvest

    model = _tiny_model()
    model.embed.register_forward_pre_hook(lambda *a: time.sleep(0.25))  # slow enough to signal mid-harvest
    harvest.load_model = lambda *a, **k: model
    sys.exit(cli.main({args!r}))
""")


def _harvest_args(out: Path) -> list[str]:
    return ["harvest", "--tokens", "4k", "--context-size", "64", "--batch", "4", "--hook", "blocks.1.hook_resid_post",
            "--languages", "en", "--dtype", "float16", "--out", str(out)]


def test_sigint_during_a_small_harvest_keeps_its_shards_and_resumes_byte_identical(tmp_path):
    """A 4k-token harvest (63 contexts) is cut into 16 shards of one batch (not one 65k-token shard): Ctrl-C in the
    middle keeps the finished shards, prints one line and exits 130; rerunning the printed command skips them and
    writes the same bytes as an uninterrupted harvest."""
    from workbench.data import harvest as harvest_mod

    out = tmp_path / "store"
    script = tmp_path / "harvest.py"
    script.write_text(_HARVEST_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), args=_harvest_args(out)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    progress = out / "progress.jsonl"
    try:
        model = _tiny_model()  # while the subprocess starts up
        _wait_for(lambda: progress.exists() and progress.read_text().count("\n") >= 2, proc, timeout=240)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.stderr.close()
    assert rc == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    messages = [m for m in stderr.replace("\r", "\n").splitlines() if m.startswith(("interrupted", "error"))]
    assert len(messages) == 1, stderr[-3000:]  # one line (the rest is the progress bar)
    line = messages[0]
    assert line.startswith("interrupted: harvest stopped with ") and "of 16 shards" in line and "SIGINT" in line
    assert line.split("rerun: ", 1)[1].split() == ["workbench", *_harvest_args(out)]
    kept = sum(1 for _ in progress.open())
    assert 2 <= kept < 16
    assert not (out / "manifest.json").exists() or not json.loads((out / "manifest.json").read_text())["complete"]

    real_load = harvest_mod.load_model
    try:
        harvest_mod.load_model = lambda *a, **k: model
        from workbench.data.harvest import HarvestConfig, HarvestSpec, harvest
        from workbench.data.corpus import CorpusSpec

        spec = HarvestSpec(model="gemma-3-270m", hooks=("blocks.1.hook_resid_post",), n_tokens=4000,
                           corpus=CorpusSpec(source="wiki", languages=("en",)), context_size=64, dtype="float16")
        resumed = harvest(spec, out, config=HarvestConfig(batch_contexts=4, progress=False))
        reference = harvest(spec, tmp_path / "reference", config=HarvestConfig(batch_contexts=4, progress=False))
    finally:
        harvest_mod.load_model = real_load
    assert resumed.manifest["shard_contexts"] == 4 and len(resumed.manifest["shards"]) == 16
    assert [s["files"] for s in resumed.manifest["shards"]] == [s["files"] for s in reference.manifest["shards"]]


def test_signal_during_the_feature_pass_keeps_encoded_shards_and_the_rerun_matches(tmp_path, monkeypatch):
    """SIGTERM while the feature pass encodes shard 3 of 4: Interrupted (exit code 143) names the codes folder; the
    rerun with the same out_dir reuses the 2 saved shards and gives the results of an uninterrupted pass."""
    from workbench.analysis import feature_codes
    from workbench.analysis.features import FeatureConfig, compute_features

    store = _planted_store(tmp_path / "store", n_ctx=32, ctx=8, d=8, shard_contexts=8)
    sae = identity_sae(8)
    cfg = FeatureConfig(progress=False, top_k=4, n_buckets=2, per_bucket=2, context_before=2, context_after=1,
                        device="cpu")
    before = signal.getsignal(signal.SIGTERM)
    real_write = feature_codes.SparseCodes.write_shard
    written = []

    def write_then_signal(self, shard, *args, **kwargs):
        real_write(self, shard, *args, **kwargs)
        written.append(shard)
        if len(written) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)

    monkeypatch.setattr(feature_codes.SparseCodes, "write_shard", write_then_signal)
    with pytest.raises(Interrupted) as info:
        compute_features(store, sae, tmp_path / "features", cfg, tokenizer=False)
    assert info.value.exit_code == 143 and str(tmp_path / "features" / "codes") in str(info.value)
    monkeypatch.setattr(feature_codes.SparseCodes, "write_shard", real_write)
    assert signal.getsignal(signal.SIGTERM) is before
    resumed = compute_features(store, sae, tmp_path / "features", cfg, tokenizer=False)
    assert resumed.meta["encode"] == {"encoded_shards": 2, "reused_shards": 2}
    reference = compute_features(store, sae, tmp_path / "reference", cfg, tokenizer=False)
    for key, value in reference.arrays.items():
        assert torch.equal(resumed.arrays[key], value), key


# ----------------------------------------------------------------------------------------------------------------
# Full disks and failed writes
# ----------------------------------------------------------------------------------------------------------------


def _shard_arrays(i: int, n_ctx: int = 8, ctx: int = 16, d: int = 64):
    rng = np.random.default_rng(i)
    tokens = rng.integers(0, 1000, size=(n_ctx, ctx)).astype(np.int32)
    docs = np.full((n_ctx, ctx), i, dtype=np.int64)
    pos = np.tile(np.arange(ctx, dtype=np.int32), (n_ctx, 1))
    return tokens, docs, pos, {PLANT_HOOK: rng.normal(size=(n_ctx * ctx, d)).astype(np.float32)}


def _writer(path: Path) -> StoreWriter:
    return StoreWriter(path, model_name="planted", hooks=[PLANT_HOOK], d_model=64, context_size=16,
                       dtype="bfloat16", shard_contexts=8)


def _write_all(path: Path, n: int = 4) -> ActivationStore:
    w = _writer(path)
    for i in range(w.n_complete_shards, n):
        w.write_shard(i, *_shard_arrays(i))
    return w.finalize()


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".writer.lock"}


def test_injected_full_disk_removes_temp_files_names_the_path_and_the_store_resumes(tmp_path, monkeypatch):
    from workbench.data import store_format

    root = tmp_path / "store"
    w = _writer(root)
    w.write_shard(0, *_shard_arrays(0))
    w.write_shard(1, *_shard_arrays(1))
    real_write = store_format._HashingWriter.write

    def full(self, data):
        if len(bytes(data)) > 1000:  # the activations of the next shard: the disk fills up half-way through
            real_write(self, bytes(data)[:500])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(store_format._HashingWriter, "write", full)
    with pytest.raises(StoreWriteError) as info:
        w.write_shard(2, *_shard_arrays(2))
    message = str(info.value)
    assert isinstance(info.value, OSError) and isinstance(info.value, StoreError)
    assert "no space left on device writing" in message and str(root / "shards") in message
    assert "the shard needs 18 kB" in message  # 8 x 16 tokens x 64 dims in bfloat16 + tokens, ids, positions
    assert "keeps its 2 complete shard(s)" in message and "rerun" in message
    leftovers = [p.name for p in (root / "shards").iterdir() if not p.name.startswith(("00000.", "00001."))]
    assert leftovers == []  # no temp file, no half-written shard file
    w.close()
    monkeypatch.setattr(store_format._HashingWriter, "write", real_write)

    resumed = _write_all(root)
    assert resumed.n_contexts == 32
    assert _file_hashes(root / "shards") == _file_hashes(_write_all(tmp_path / "reference").path / "shards")


def test_failed_progress_append_leaves_no_torn_record(tmp_path, monkeypatch):
    from workbench.data import store_writer

    root = tmp_path / "store"
    w = _writer(root)
    w.write_shard(0, *_shard_arrays(0))
    before = (root / "progress.jsonl").read_bytes()
    real_write = os.write

    def half_then_fail(fd, data):  # the record's first half reaches the disk, then the device fails
        if bytes(data[:2]) == b'{"':
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(store_writer.os, "write", half_then_fail)
    with pytest.raises(StoreWriteError, match=r"cannot write .*progress.jsonl \(Input/output error; the shard needs"):
        w.write_shard(1, *_shard_arrays(1))
    monkeypatch.setattr(store_writer.os, "write", real_write)
    assert (root / "progress.jsonl").read_bytes() == before
    assert sorted(p.name for p in (root / "shards").iterdir()) == sorted(
        f"00000.{r}.npy" for r in ("tokens", "doc_ids", "positions", "acts.blocks-0-hook_resid_post"))
    w.close()
    assert _write_all(root).n_contexts == 32


def _can_mount_tmpfs(where: Path) -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    if shutil.which("mount") is None:
        return "no mount command"
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    return None if proc.returncode == 0 else f"mount -t tmpfs failed: {proc.stderr.strip()}"


def test_real_full_tmpfs_gives_one_clear_error_and_resumes_after_freeing_space(tmp_path):
    """On a 1 MB tmpfs, with a filler file leaving ~100 kB: the third shard (~36 kB a shard) does not fit; the error
    names the file and the space; no temporary file stays; after deleting the filler the same writer code resumes."""
    mnt = tmp_path / "mnt"
    why = _can_mount_tmpfs(mnt)
    if why:
        pytest.skip(why)
    try:
        root = mnt / "store"
        w = _writer(root)
        free = shutil.disk_usage(mnt).free
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * max(0, free - 90_000))
        with pytest.raises(StoreWriteError) as info:
            for i in range(4):
                w.write_shard(i, *_shard_arrays(i))
        message = str(info.value)
        assert "no space left on device writing" in message and str(root) in message and "kB free there" in message
        kept = w.n_complete_shards
        assert 1 <= kept < 4
        names = {p.name for p in (root / "shards").iterdir()}
        assert all(not n.startswith(f"{kept:05d}.") and ".tmp" not in n for n in names), names
        w.close()
        filler.unlink()
        store = _write_all(root)
        assert store.n_contexts == 32
        ActivationStore.open(root, verify="full")  # every shard's SHA-256 matches
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("fault", ["injected", "tmpfs"])
def test_workbench_harvest_on_a_full_disk_prints_one_line_exits_1_and_resumes(tmp_path, monkeypatch, capsys, fault):
    """The original report: ``workbench harvest`` onto a full disk gave a 26-line traceback and left a temporary
    file. Now: one line naming the file and the space, exit code 1, no temporary files; rerun after freeing space."""
    from workbench.data import harvest as harvest_mod
    from workbench.data import store_format

    model = _tiny_model()
    monkeypatch.setattr(harvest_mod, "load_model", lambda *a, **k: model)
    base = tmp_path / "mnt"
    if fault == "tmpfs":
        why = _can_mount_tmpfs(base)
        if why:
            pytest.skip(why)
        filler = base / "filler"
        filler.write_bytes(b"\0" * max(0, shutil.disk_usage(base).free - 60_000))
    else:
        base.mkdir()
        real_write = store_format._HashingWriter.write
        calls = []

        def fill_up(self, data):
            calls.append(1)
            if len(calls) > 20:  # after a few shards
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(self, data)

        monkeypatch.setattr(store_format._HashingWriter, "write", fill_up)
    out = base / "store"
    args = _harvest_args(out) + ["--tokens", "2k"]
    try:
        assert cli.main(args) == 1
        err = capsys.readouterr().err
        lines = [m for m in err.replace("\r", "\n").splitlines() if m.startswith("error")]
        assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
        assert "no space left on device writing " + str(out) in lines[0] and "the shard needs" in lines[0]
        assert "rerun the same harvest to resume" in lines[0]
        assert not [p for p in out.rglob("*") if ".tmp" in p.name]
        kept = sum(1 for _ in (out / "progress.jsonl").open())
        assert 1 <= kept < 8
        if fault == "tmpfs":
            filler.unlink()
        else:
            monkeypatch.setattr(store_format._HashingWriter, "write", real_write)
        assert cli.main(args) == 0
        capsys.readouterr()
        assert cli.main(["info", str(out), "--verify"]) == 0
        assert json.loads(capsys.readouterr().out)["n_contexts"] == 32
    finally:
        if fault == "tmpfs":
            subprocess.run(["umount", str(base)], capture_output=True)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints, logs, shards
# ----------------------------------------------------------------------------------------------------------------


def test_metrics_log_holds_each_step_once_after_a_crash_between_checkpoints(tmp_path):
    """A crash at step 17 (logged up to 15, checkpointed at 10): the resumed run logs 15 again, so the lines after
    the checkpoint are dropped first; the torn last line of a kill -9 goes too."""
    from workbench.sae.train import RunSpec, SyntheticSource, TrainConfig, train

    class Crash(Exception):
        pass

    class CrashAt:
        def __init__(self, src, n):
            self.src, self.n = src, n
            self.d_model, self.metadata = src.d_model, src.metadata

        def batches(self, batch_size, *, start_tokens=0):
            for i, b in enumerate(self.src.batches(batch_size, start_tokens=start_tokens)):
                if start_tokens == 0 and i == self.n and batch_size == 64 and self.n:
                    raise Crash
                yield b

        def describe(self):
            return self.src.describe()

    src = SyntheticSource(16, 32, active=2, seed=0)
    cfg = TrainConfig(total_tokens=64 * 30, batch_size=64, log_every=5, checkpoint_every=10,
                      scale_estimate_tokens=256, b_dec_init_tokens=256, heldout_eval_tokens=256, device="cpu")
    spec = [RunSpec("topk", 32, k=2)]
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(spec, cfg, CrashAt(src, 17), out, progress=False)
    log = out / "topk-32-k2" / "metrics.jsonl"
    with open(log, "a") as fh:
        fh.write('{"step": 20, "loss": 1.0, "tok')  # a kill -9 mid-line
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()[:-1] if '"loss"' in line] == [5, 10, 15]
    train(spec, cfg, src, out, progress=False)
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    steps = [r["step"] for r in records if "loss" in r and r.get("event") is None]
    assert steps == [5, 10, 15, 20, 25, 30]
    assert [r["event"] for r in records if r.get("event")] == ["start", "resume", "epoch", "end"]


@pytest.mark.parametrize("n_contexts, batch, expected", [(1, 32, 32), (32, 4, 4), (64, 4, 4), (782, 32, 64),
                                                         (7813, 32, 512), (10 ** 6, 32, 512), (100, 600, 600)])
def test_shard_size_scales_with_the_harvest(tmp_path, n_contexts, batch, expected):
    from workbench.data.harvest import HarvestConfig, resolve_shard_contexts

    assert resolve_shard_contexts(HarvestConfig(batch_contexts=batch), n_contexts, tmp_path) == expected
    assert resolve_shard_contexts(HarvestConfig(batch_contexts=batch, shard_contexts=7), n_contexts, tmp_path) == 7
    (tmp_path / "manifest.json").write_text(json.dumps({"shard_contexts": 48}))  # a partial store resumes its size
    assert resolve_shard_contexts(HarvestConfig(batch_contexts=batch), n_contexts, tmp_path) == 48


# ----------------------------------------------------------------------------------------------------------------
# No silent wrong results
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, line", [
    ("latin1.txt", "first paragraph\n\ncaf\u00e9 au lait".encode("latin-1"), 3),
    ("latin1.jsonl", b'{"text": "ok"}\n{"text": "na\xefve"}\n', 2),
])
def test_non_utf8_local_corpus_is_refused_not_stored_with_replacement_characters(tmp_path, name, content, line):
    from workbench.data.corpus import CorpusSpec, iter_documents

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{name} is not UTF-8 text \(byte 0x[ef][9f] on line {line}\): convert it"):
        list(iter_documents(CorpusSpec(source=str(path))))
    path.write_bytes(content.decode("latin-1").encode("utf-8"))
    texts = " ".join(d.text for d in iter_documents(CorpusSpec(source=str(path), split="all")))
    assert ("caf\u00e9" in texts or "na\u00efve" in texts) and "\ufffd" not in texts


def test_features_for_empty_text_raise_instead_of_returning_bos_features():
    from workbench.analysis.search import features_for_text

    with pytest.raises(ValueError, match="text must be a non-empty string"):
        features_for_text(object(), identity_sae(4), "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a build without CUDA")
def test_load_model_on_cuda_without_cuda_names_the_fix():
    from workbench.data.models import load_model

    with pytest.raises(ValueError, match="sees no CUDA GPU: use device='cpu'"):
        load_model("gemma-3-270m", device="cuda")


def test_plain_info_says_checksums_were_not_verified(tmp_path, capsys):
    store = _planted_store(tmp_path / "store", n_ctx=8, ctx=8, d=4, shard_contexts=4)
    assert cli.main(["info", str(store.path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checksums"].startswith("not verified") and f"workbench info {store.path} --verify" in info["checksums"]
    assert cli.main(["info", str(store.path), "--verify"]) == 0
    assert json.loads(capsys.readouterr().out)["checksums"].startswith("verified")
