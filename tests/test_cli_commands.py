"""The command line's exit codes (2 a user's mistake, 3 divergence, a bug keeps its traceback), its new commands
(features, explain, evaluate, export, --version) and the delphi latent-cache export, read back with delphi's own
loader when it is installed. Tiny sizes: a 16-context store of 8 tokens, an identity SAE of 16 latents."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

from helpers import PLANT_HOOK, identity_sae, write_store
from workbench import cli
from workbench.core.errors import ConfigError, InputError, WorkbenchError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from workbench.sae.io import save_sae

    w = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(16, 8, 16)).astype(np.float32)
    tokens = rng.integers(0, 100, size=(16, 8)).astype(np.int32)
    write_store(w / "store", acts, tokens, shard_contexts=4)
    save_sae(identity_sae(16), w / "sae")
    return w


def _main(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_error_root_keeps_existing_families_and_the_fix():
    from workbench.data.assets import AssetError
    from workbench.data.store_format import StoreError, StoreWriteError
    from workbench.persona.traits import TraitFileError
    from workbench.sae.checkpoint import CheckpointError

    for cls in (StoreError, AssetError, TraitFileError, CheckpointError):
        assert issubclass(cls, InputError) and issubclass(cls, WorkbenchError) and issubclass(cls, ValueError)
    assert StoreWriteError.exit_code == 1 and issubclass(StoreWriteError, OSError)
    err = ConfigError("k=64 must lie in (0, d_sae=32]", fix="lower k", param="k")
    assert str(err) == "k=64 must lie in (0, d_sae=32]; lower k" and err.fix == "lower k" and err.param == "k"
    import pickle

    back = pickle.loads(pickle.dumps(err))
    assert (type(back), str(back), back.fix, back.param) == (ConfigError, str(err), "lower k", "k")


def test_exit_codes_2_3_and_a_bug_keeps_its_traceback(run, capsys, monkeypatch):
    from workbench.sae import cli as train_cli
    from workbench.sae.train import TrainingDiverged

    rc, out, err = _main(capsys, "train", "--store", run / "store", "--arch", "topk", "--d-sae", "16", "--k", "40")
    assert rc == 2 and out == ""
    assert err.strip() == "error: k=40 must lie in (0, d_sae=16]: lower k or raise d_sae (k is --k, d_sae is --d-sae)"

    def diverge(*a, **k):
        raise TrainingDiverged("training stopped at step 3: SAE 'x' has a non-finite loss")

    monkeypatch.setattr(train_cli, "train", diverge)
    rc, out, err = _main(capsys, "train", "--store", run / "store", "--arch", "topk", "--d-sae", "16", "--k", "4",
                         "--tokens", "64", "--batch-size", "16", "--out", run / "t")
    assert rc == cli.EXIT_DIVERGED == 3
    assert err.strip().splitlines() == ["error: training diverged: training stopped at step 3: SAE 'x' has a "
                                        "non-finite loss"]

    def bug(args):
        raise ValueError("a plain ValueError from inside: a bug, not the user's mistake")

    monkeypatch.setattr(cli, "_cmd_info", bug)
    with pytest.raises(ValueError, match="a bug"):  # not swallowed: python prints its traceback and exits 1
        cli.main(["info", str(run / "store")])


def test_version_and_the_old_batch_flag(capsys):
    from workbench import __version__

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"workbench {__version__}"
    parse = cli.build_parser().parse_args
    assert parse(["harvest", "--batch", "7"]).batch_size == 7 == parse(["harvest", "--batch-size", "7"]).batch_size
    assert "--batch " not in cli.build_parser().commands["harvest"].format_help()  # hidden alias


def test_features_explain_evaluate_export(run, capsys, tmp_path):
    rc, out, err = _main(capsys, "features", run / "store", "--sae", run / "sae", "--out", tmp_path / "f",
                         "--no-progress")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["d_sae"] == 16 and summary["hook"] == PLANT_HOOK
    from workbench.analysis.features import FeatureResults
    from workbench.data.store import ActivationStore

    store = ActivationStore.open(run / "store")
    x = torch.stack([store.activations(c) for c in range(store.n_contexts)]).float()  # [16, 8, 16]
    fired = (x[:, 1:] > 0).sum((0, 1))  # identity SAE: feature j = relu(x_j); BOS excluded
    results = FeatureResults.load(tmp_path / "f")
    assert torch.equal(results.count.long(), fired.long())

    rc, out, err = _main(capsys, "explain", tmp_path / "f", "--features", "0-3", "--no-progress")
    assert rc == 0, err
    assert json.loads(out)["n"] == 4 and (tmp_path / "f" / "explanations.json").is_file()

    rc, out, err = _main(capsys, "evaluate", run / "store", "--sae", run / "sae", "--batch-size", "32")
    assert rc == 0, err
    metrics = json.loads(out)
    assert metrics["l0"] == pytest.approx(float((x[:, 1:].reshape(-1, 16) > 0).sum(1).float().mean()), rel=1e-3)

    rc, out, err = _main(capsys, "export", tmp_path / "f", "--to", "neuronpedia", "--out", tmp_path / "np")
    assert rc == 0, err
    records = json.loads((tmp_path / "np" / "explanations.json").read_text())
    assert len(records) == 4 and {r["typeName"] for r in records} == {"workbench_token-ngrams"}

    rc, _, err = _main(capsys, "evaluate", run / "store", "--sae-release", "only-a-release")
    assert rc == 2 and "needs both --sae-release and --sae-id" in err

    rc, out, err = _main(capsys, "export", tmp_path / "f", "--to", "delphi", "--out", tmp_path / "d", "--splits", "3")
    assert rc == 0, err
    _check_delphi_layout(tmp_path / "d" / PLANT_HOOK, x, store)
    _read_with_delphi(tmp_path / "d", x)


def _check_delphi_layout(folder, x, store):
    """What delphi's loader assumes (latents/loader.py, latents/cache.py save_splits): files named start_end
    (end inclusive), locations (context, position, latent - start) in uint16/uint32, float16 activations, the
    [n_contexts, ctx] tokens in each file, and a config.json with model_name."""
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"), key=lambda p: int(p.stem.split("_")[0]))
    assert [p.stem for p in files] == ["0_4", "5_9", "10_15"]
    assert json.loads((folder / "config.json").read_text())["model_name"] == store.model_name
    dense = torch.zeros_like(x)
    for p in files:
        d = load_file(str(p))
        start = int(p.stem.split("_")[0])
        assert d["locations"].dtype == np.uint16 and d["activations"].dtype == np.float16
        assert np.array_equal(d["tokens"], store.token_ids().astype(np.int64))
        loc = d["locations"].astype(np.int64)
        dense[loc[:, 0], loc[:, 1], loc[:, 2] + start] = torch.from_numpy(d["activations"].astype(np.float32))
    want = x.clamp_min(0)
    want[:, 0] = 0  # BOS positions are not analysed
    torch.testing.assert_close(dense, want, atol=2e-2, rtol=1e-2)  # float16 of bf16 activations


def _read_with_delphi(root, x):
    pytest.importorskip("asyncer", reason="delphi's loader needs asyncer (pip install --no-deps eai-delphi asyncer)")
    for name in ("faiss", "sentence_transformers"):  # only its neighbour / embedding constructors use these
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                stub = types.ModuleType(name)
                stub.SentenceTransformer = object
                sys.modules[name] = stub
    loader = pytest.importorskip("delphi.latents.loader", reason="delphi (pip install --no-deps eai-delphi) absent")
    buf = loader.TensorBuffer(str(root / PLANT_HOOK / "5_9.safetensors"), PLANT_HOOK)
    records = {rec.latent.latent_index: rec.activations for rec in buf}
    for latent, data in records.items():  # delphi's own reading of our file: each latent's locations and values
        loc = data.locations
        assert loc.shape[1] == 3 and int(loc[:, 2].min()) == int(loc[:, 2].max()) == latent
        vals = x[loc[:, 0], loc[:, 1], loc[:, 2]]
        torch.testing.assert_close(data.activations.float(), vals, atol=2e-2, rtol=1e-2)
    assert sorted(records) == [j for j in range(5, 10) if (x[:, 1:, j] > 0).any()]
