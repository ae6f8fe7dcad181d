"""One error path for a user's mistakes: each bad input below ends with exit code 2 and one line on stderr that names
the problem and the fix, no traceback, and nothing written or lost (the files around it are byte-for-byte the same
before and after, and no partial ``--out`` appears).

The table is the closing note's list of bad inputs and faults (issue 17). Commands run in-process through
``workbench.cli.main`` (a subprocess per case would cost a torch import each); one case also runs as a real
subprocess. Harvest cases that get as far as a model use a tiny random model with Gemma's tokenizer.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import PLANT_HOOK, identity_sae, write_store
from workbench import cli
from workbench.data import harvest as harvest_mod

REPO = Path(__file__).resolve().parents[1]

# (name, argv with {w} for the world folder, a fragment the one-line message must hold)
BAD_INPUTS = [
    # general
    ("no command", [], "the following arguments are required: command"),
    ("unknown command", ["bogus"], "invalid choice: 'bogus'"),
    # harvest
    ("harvest --tokens 0", ["harvest", "--tokens", "0", "--out", "{w}/h"], "n_tokens must be a positive integer"),
    ("harvest --tokens -5", ["harvest", "--tokens", "-5", "--out", "{w}/h"], "'-5' is not a count"),
    ("harvest --tokens lots", ["harvest", "--tokens", "lots", "--out", "{w}/h"], "'lots' is not a count"),
    ("harvest --batch-size 0", ["harvest", "--batch-size", "0", "--out", "{w}/h"],
     "batch_contexts=0 must be a whole number >= 1, e.g. 32 (batch_contexts is --batch-size)"),
    ("harvest --batch 0 (the former name)", ["harvest", "--batch", "0", "--out", "{w}/h"],
     "batch_contexts=0 must be a whole number >= 1, e.g. 32 (batch_contexts is --batch-size)"),
    ("harvest --shard-contexts 0", ["harvest", "--shard-contexts", "0", "--out", "{w}/h"],
     "shard_contexts=0 must be a whole number"),
    ("harvest --context-size 1", ["harvest", "--context-size", "1", "--out", "{w}/h"],
     "context_size must be at least 2"),
    ("harvest --dtype float32", ["harvest", "--dtype", "float32", "--out", "{w}/h"], "invalid choice: 'float32'"),
    ("harvest --split test", ["harvest", "--split", "test", "--out", "{w}/h"], "invalid choice: 'test'"),
    ("harvest --languages xx", ["harvest", "--languages", "xx", "--out", "{w}/h"], "xx"),
    ("harvest --device cuda (CPU build)", ["harvest", "--device", "cuda", "--out", "{w}/h"],
     "sees no CUDA GPU: use device='cpu'"),
    ("harvest --device tpu9", ["harvest", "--device", "tpu9", "--out", "{w}/h"], "is not a torch device"),
    ("harvest unknown model", ["harvest", "--model", "no-such-model", "--out", "{w}/h"],
     "Unknown model 'no-such-model'"),
    ("harvest hook layer out of range", ["harvest", "--hook", "blocks.99.hook_resid_post", "--out", "{w}/h"], "99"),
    ("harvest unknown hook", ["harvest", "--hook", "not_a_hook", "--out", "{w}/h"], "not_a_hook"),
    ("harvest missing corpus file", ["harvest", "--corpus", "{w}/missing.txt", "--out", "{w}/h"], "missing.txt"),
    ("harvest non-UTF-8 corpus", ["harvest", "--corpus", "{w}/latin1.txt", "--tokens", "256", "--out", "{w}/h"],
     "latin1.txt is not UTF-8 text"),
    ("harvest into a non-store folder", ["harvest", "--corpus", "{w}/corpus.txt", "--split", "all", "--tokens",
                                         "64", "--context-size", "16", "--out", "{w}/notastore"],
     "is not an activation store"),
    ("harvest over a different finished store", ["harvest", "--out", "{w}/store"],
     "already holds a finished store from a different harvest"),
    # info
    ("info missing store", ["info", "{w}/missing"], "missing"),
    ("info corrupt manifest", ["info", "{w}/corrupt"], "manifest.json"),
    ("info truncated shard", ["info", "{w}/truncated"], "00000"),
    ("info on a file", ["info", "{w}/corpus.txt"], "corpus.txt"),
    ("info --verify bit flip", ["info", "{w}/bitflip", "--verify"], "00001"),
    # train
    ("train --d-sae 0", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "0", "--out", "{w}/t"],
     "d_sae=0 must be a whole number >= 1"),
    ("train k > d_sae", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "16", "--k", "32", "--out",
                         "{w}/t"], "k=32 must lie in (0, d_sae=16]"),
    ("train --lr -1", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32", "--lr", "-1", "--out",
                       "{w}/t"], "lr=-1.0 must be a finite number > 0"),
    ("train --lr 0", ["train", "--store", "{w}/store", "--arch", "relu", "--d-sae", "32", "--lr", "0", "--out",
                      "{w}/t"], "lr=0.0 must be a finite number > 0"),
    ("train --l1 -1", ["train", "--store", "{w}/store", "--arch", "relu", "--d-sae", "32", "--l1", "-1", "--out",
                       "{w}/t"], "l1_coefficient=-1.0 must be a finite number >= 0"),
    ("train --device cuda (CPU build)", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32",
                                         "--device", "cuda", "--out", "{w}/t"], "sees no CUDA GPU"),
    ("train --bf16 on CPU", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32", "--bf16",
                             "--device", "cpu", "--out", "{w}/t"], "bf16 autocast is only supported on CUDA"),
    ("train store too small", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32", "--tokens", "1M",
                               "--out", "{w}/t"], "does not fit in the source's"),
    ("train --holdout-tokens larger than the store", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae",
                                                      "32", "--holdout-tokens", "1M", "--out", "{w}/t"], "1000000"),
    ("train --tokens 0", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32", "--tokens", "0",
                          "--out", "{w}/t"], "must be at least one batch"),
    ("train --tokens 2x", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32", "--tokens", "2x"],
     "'2x' is not a count"),
    ("train --batch-size 0", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32", "--batch-size",
                              "0", "--out", "{w}/t"], "batch_size=0 must be a whole number >= 1, e.g. 4096 (batch_size is --batch-size)"),
    ("train --epochs 0", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32", "--epochs", "0",
                          "--out", "{w}/t"], "epochs=0 must be a whole number >= 1"),
    ("train --checkpoint-every -1", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32",
                                     "--checkpoint-every", "-1", "--out", "{w}/t"], "checkpoint_every=-1"),
    ("train --dead-window 0", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32", "--dead-window",
                               "0", "--out", "{w}/t"], "dead_window_tokens=0 must be >= 1"),
    ("train --arch nope", ["train", "--store", "{w}/store", "--arch", "nope", "--d-sae", "32"],
     "invalid choice: 'nope'"),
    ("train missing store", ["train", "--store", "{w}/missing", "--arch", "topk", "--d-sae", "32", "--out", "{w}/t"],
     "missing"),
    ("train corrupt store", ["train", "--store", "{w}/corrupt", "--arch", "topk", "--d-sae", "32", "--out", "{w}/t"],
     "manifest.json"),
    ("train unknown hook", ["train", "--store", "{w}/store", "--hook", "blocks.5.hook_mlp_out", "--arch", "topk",
                            "--d-sae", "32", "--out", "{w}/t"], "blocks.5.hook_mlp_out"),
    ("train without a store", ["train", "--arch", "topk", "--d-sae", "32", "--out", "{w}/t"],
     "no activation store: pass --store PATH"),
    ("train --d-sae without --arch", ["train", "--store", "{w}/store", "--d-sae", "32", "--out", "{w}/t"],
     "give both --arch and --d-sae"),
    ("train nothing to train", ["train", "--store", "{w}/store", "--out", "{w}/t"], "nothing to train"),
    ("train missing sweep file", ["train", "--store", "{w}/store", "--sweep", "{w}/missing.yaml", "--out", "{w}/t"],
     "cannot read the sweep file"),
    ("train invalid YAML sweep", ["train", "--store", "{w}/store", "--sweep", "{w}/bad.yaml", "--out", "{w}/t"],
     "is not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ("train sweep with an unknown key", ["train", "--store", "{w}/store", "--sweep", "{w}/unknown.yaml", "--out",
                                         "{w}/t"], "unknown key(s) ['gird']"),
    ("train resume from a corrupt checkpoint", ["train", "--store", "{w}/store", "--arch", "topk", "--d-sae", "32",
                                                "--k", "4", "--tokens", "64", "--batch-size", "16", "--out",
                                                "{w}/ckpt"], "state.json is unreadable or corrupt"),
    # scorecard
    ("scorecard missing run", ["scorecard", "{w}/missing", "--no-neurons"], "missing"),
]


def _tiny():
    from test_reliability import _tiny_model

    return _tiny_model()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder of good and bad inputs: a tiny store, broken stores, corpora, sweep files, a corrupt checkpoint."""
    w = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(16, 8, 16)).astype(np.float32)
    tokens = rng.integers(0, 100, size=(16, 8)).astype(np.int32)
    for name in ("store", "corrupt", "truncated", "bitflip"):
        write_store(w / name, acts, tokens, shard_contexts=4)
    (w / "corrupt" / "manifest.json").write_text('{"format": "workbench-activation-store", "shar')
    shard = w / "truncated" / "shards" / "00000.tokens.npy"
    shard.write_bytes(shard.read_bytes()[:-7])
    flip = w / "bitflip" / "shards" / f"00001.acts.{PLANT_HOOK.replace('.', '-')}.npy"
    data = bytearray(flip.read_bytes())
    data[-3] ^= 0x10
    flip.write_bytes(bytes(data))
    (w / "corpus.txt").write_text("A short corpus of plain text, written for this test. " * 20 + "\n\n" +
                                  "Its second paragraph is much like the first one. " * 20 + "\n")
    (w / "latin1.txt").write_bytes("Un caf\u00e9 cr\u00e8me, s'il vous pla\u00eet.".encode("latin-1"))
    (w / "notastore").mkdir()
    (w / "notastore" / "thesis.tex").write_text("\\documentclass{article}")
    (w / "bad.yaml").write_text("grid: {arch: [topk, d_sae: 3\n")
    (w / "unknown.yaml").write_text("gird: {arch: [topk], d_sae: [32]}\n")
    state = w / "ckpt" / "checkpoints" / "step_00000004"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{not json")
    (w / "ckpt" / "checkpoints" / "LATEST").write_text("step_00000004")
    return w


@pytest.fixture
def tiny_model_for_harvest(monkeypatch):
    """``load_model`` inside harvest: the real checks (name, device), then a tiny model instead of Gemma."""
    from workbench.data.models import resolve_device

    real = harvest_mod.load_model
    _tiny()  # its tokenizer comes from Gemma's first load: on a cold cache that prints, so do it before the test

    def load(name, device=None, **kwargs):
        if name != "gemma-3-270m":
            return real(name, device=device, **kwargs)
        resolve_device(device)
        return _tiny()

    monkeypatch.setattr(harvest_mod, "load_model", load)


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.name.endswith(".lock"):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.mark.parametrize("name, argv, fragment", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_line_exit_2_and_changes_nothing(world, tiny_model_for_harvest, capsys, monkeypatch,
                                                             tmp_path, name, argv, fragment):
    if "(CPU build)" in name and torch.cuda.is_available():
        pytest.skip("checks the message of a torch build without CUDA")
    monkeypatch.chdir(tmp_path)  # a default output folder (runs/...) would appear here
    monkeypatch.setenv("WORKBENCH_HOME", os.environ.get("WORKBENCH_HOME") or str(Path.home() / ".cache/workbench"))
    before = _snapshot(world)
    args = [a.format(w=world) for a in argv]
    capsys.readouterr()  # only what the command prints is judged (a cold cache's first model load prints too)
    try:
        rc = cli.main(args)
    except SystemExit as stop:  # argparse
        rc = stop.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "Traceback" not in err and out == ""
    assert fragment in lines[0], lines[0]
    assert _snapshot(world) == before  # nothing written, nothing lost
    assert list(tmp_path.iterdir()) == []


def test_the_table_is_long_enough():
    assert len(BAD_INPUTS) >= 30


def test_a_bad_input_in_a_real_subprocess_has_no_traceback(world):
    proc = subprocess.run([sys.executable, "-m", "workbench", "train", "--store", str(world / "store"), "--arch",
                           "topk", "--d-sae", "0", "--out", str(world / "t")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: d_sae=0 must be a whole number >= 1, e.g. 4096 (d_sae is --d-sae)"]
    assert not (world / "t").exists()


# ----------------------------------------------------------------------------------------------------------------
# The same mistakes through the Python API: a clear ValueError naming the fix
# ----------------------------------------------------------------------------------------------------------------


def test_library_mistakes_raise_clear_value_errors(tmp_path):
    from workbench.analysis.search import features_for_text
    from workbench.data.harvest import HarvestConfig
    from workbench.sae.io import load_sae, save_sae
    from workbench.sae.train import RunSpec, TrainConfig

    with pytest.raises(ValueError, match="d_sae=0 must be a whole number >= 1"):
        RunSpec("topk", 0)
    with pytest.raises(ValueError, match=r"k=64 must lie in \(0, d_sae=32\]"):
        RunSpec("topk", 32, k=64)
    with pytest.raises(ValueError, match="batch_contexts=0"):
        HarvestConfig(batch_contexts=0)
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        features_for_text(object(), identity_sae(4), "")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            TrainConfig(device="cuda")
        from workbench.data.models import load_model

        with pytest.raises(ValueError, match="sees no CUDA GPU: use device='cpu'"):
            load_model("gemma-3-270m", device="cuda")
    folder = save_sae(identity_sae(4), tmp_path / "sae")
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(ValueError, match=weights.name):
        load_sae(folder)
    (folder / "cfg.json").write_text("{broken")
    with pytest.raises(ValueError, match="cfg.json"):
        load_sae(folder)


def test_harvest_reads_token_counts_like_train():
    parse = cli.build_parser().parse_args
    assert parse(["harvest", "--tokens", "1M"]).tokens == 1_000_000
    assert parse(["harvest", "--tokens", "500k"]).tokens == 500_000
    assert parse(["harvest", "--tokens", "4096"]).tokens == 4096
    assert parse(["harvest"]).shard_contexts is None  # scales with the harvest
