"""Every SAE architecture trains bit for bit as it did when the golden fixture was written, and the registry.

Each architecture's tiny SAE (d_in 8, d_sae 32) takes a few fixed-seed optimisation steps on fixed random data through
the trainer's step (``training_loss``, backward, ``remove_parallel_decoder_grad``, Adam, ``apply_constraints``), on
the sparse and on the dense path, and the public :func:`workbench.sae.train.train` runs all of them on an in-memory
source. The resulting weights, losses and inference outputs (``encode``, ``decode``, ``forward``) must equal
(``torch.equal``) those in ``tests/data/architectures_golden.safetensors``: a refactor of the architectures
(``workbench/sae/architectures/``) may not change a single bit of what they compute. The fixture covers the five
architectures that existed before that refactor; gated, added after it, is checked against SAELens in test_sae.py.

The fixture was written by the code before that refactor. Regenerate it only for an intended change of the numbers:
``.venv/bin/python tests/test_architectures.py --regen`` (and say why in the commit).

Bit identity is a property of one torch build on one CPU kernel set: the fixture records the torch version and
``torch.backends.cpu.get_cpu_capability()`` it was written with, and is compared bit for bit only where both match.
Elsewhere the same values are compared to a tolerance (relative 1e-3, absolute 1e-4), which a change of the
arithmetic still fails. Measured: the fixture first written on an earlier machine differed, on an AVX512 machine
with the same torch 2.13.0 wheel, by at most 6e-5 relative, in 104 of 135 tensors (every case failed bit identity;
so did every case on an H200 machine's CPU under torch 2.11+cu130).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "data" / "architectures_golden.safetensors"
# The architectures the fixture covers (those that existed when it was written); a case name is arch or arch:variant.
CASES = ("relu", "relu:literal", "topk", "batchtopk", "jumprelu", "matryoshka")
D_IN, D_SAE, STEPS, BATCH = 8, 32, 6, 48

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2024)
    train_x = 1.5 * torch.randn(STEPS, BATCH, D_IN, generator=gen) + 0.7
    test_x = 1.5 * torch.randn(12, D_IN, generator=gen) + 0.7
    return train_x, test_x


def _build(case: str):
    from workbench.sae.model import SAE, SAEConfig

    arch, _, variant = case.partition(":")
    kw = {"apply_b_dec_to_input": False} if variant == "literal" else {}
    cfg = SAEConfig(arch, D_IN, D_SAE, k=3, l1_coefficient=0.5, l0_coefficient=0.3, jumprelu_bandwidth=0.4,
                    jumprelu_init_threshold=0.2, aux_k=4, threshold_ema_rate=0.2, **kw)
    return SAE(cfg, seed=7)


def _trained(case: str, sparse: bool) -> dict[str, torch.Tensor]:
    """Weights, per-step losses and inference outputs of ``case`` after STEPS steps on one path."""
    train_x, test_x = _data()
    sae = _build(case)
    sae.init_from_data(train_x[0], "mean")
    params = [p for _, p in sorted(sae.named_parameters())]
    opt = torch.optim.Adam(params, lr=2e-2)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::4] = True  # AuxK runs for the TopK family
    losses = []
    for step in range(STEPS):
        out = sae.training_loss(train_x[step], dead_mask=dead, sparsity_scale=0.5 + 0.1 * step, sparse=sparse)
        assert out.sparse is sparse
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.apply_constraints(out)
        losses.append(torch.stack([out.loss.detach(), out.mse, out.sparsity_loss, out.aux_loss, out.l0,
                                   out.min_active]))
    with torch.no_grad():
        acts = sae.encode(test_x)
        result = {"losses": torch.stack(losses), "encode": acts, "decode": sae.decode(acts), "forward": sae(test_x)}
    for name, tensor in sae.state_dict().items():
        result[name] = tensor.detach().clone()
    return result


def _trainer_runs(tmp: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Every case's SAE through the public trainer on one in-memory source (default lr, names, schedules)."""
    from workbench.sae.sources import TensorSource
    from workbench.sae.train import RunSpec, TrainConfig, train, training_dir

    gen = torch.Generator().manual_seed(99)
    source = TensorSource(2.0 * torch.randn(64 * 12, D_IN, generator=gen) + 1.0, seed=3)
    specs = [RunSpec(c.partition(":")[0], D_SAE, k=3, options={"apply_b_dec_to_input": False} if ":" in c else {},
                     name=None if ":" not in c else "relu-literal") for c in CASES]
    config = TrainConfig(total_tokens=64 * 10, batch_size=64, log_every=5, checkpoint_every=0,
                         scale_estimate_tokens=256, b_dec_init_tokens=256, selection_dtype="float32",
                         heldout_eval_tokens=0)
    result = train(specs, config, source, tmp, progress=False)
    out = {}
    for name, run in sorted(result.runs.items()):
        for key, tensor in run.sae.state_dict().items():
            out[f"train/{name}/{key}"] = tensor.detach().clone()
        out[f"train/{name}/metrics"] = torch.tensor([run.metrics[k] for k in ("loss", "mse", "l0", "fvu")],
                                                    dtype=torch.float64)
    return out, training_dir(tmp, specs, config, source).name


def _everything(tmp: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {}
    for case in CASES:
        for sparse in (True, False):
            for key, tensor in _trained(case, sparse).items():
                tensors[f"{case}/{'sparse' if sparse else 'dense'}/{key}"] = tensor
    train_tensors, run_dir = _trainer_runs(tmp)
    tensors.update(train_tensors)
    return {k: v.contiguous() for k, v in tensors.items()}, {"training_dir": run_dir}


def _golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(GOLDEN), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing: write it with `.venv/bin/python tests/test_architectures.py --regen`")
    return _golden()


def _build_identity() -> tuple[str, str]:
    return torch.__version__, torch.backends.cpu.get_cpu_capability()


def _assert_same_numbers(got: torch.Tensor, expected: torch.Tensor, meta: dict[str, str], what: str) -> None:
    """Bit for bit under the torch build that wrote the fixture, else to a tolerance (see the module docstring)."""
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != {expected.dtype}"
    if (meta.get("torch"), meta.get("cpu_capability")) == _build_identity():
        assert torch.equal(got, expected), f"{what} changed"
    else:
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4,
                                   msg=lambda m: f"{what} changed beyond build-to-build float noise "
                                                 f"(fixture: torch {meta.get('torch', '?')} "
                                                 f"{meta.get('cpu_capability', '?')}, running: "
                                                 f"{' '.join(_build_identity())}): {m}")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_training_steps_are_bit_identical_to_the_golden_fixture(golden, case, sparse):
    tensors, meta = golden
    prefix = f"{case}/{'sparse' if sparse else 'dense'}/"
    got = _trained(case, sparse)
    expected = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    assert set(got) == set(expected)
    for key, value in expected.items():
        _assert_same_numbers(got[key], value, meta, prefix + key)
    assert expected["losses"][:, 0].isfinite().all() and expected["encode"].count_nonzero() > 0


def test_the_trainer_is_bit_identical_to_the_golden_fixture(golden, tmp_path):
    tensors, meta = golden
    got, run_dir = _trainer_runs(tmp_path)
    expected = {k: v for k, v in tensors.items() if k.startswith("train/")}
    assert set(got) == set(expected)
    for key, value in expected.items():
        _assert_same_numbers(got[key], value, meta, key)
    assert run_dir == meta["training_dir"], "the training directory's fingerprint changed (resume would break)"


def test_the_registry_names_every_architecture_and_takes_new_ones():
    from workbench.sae import architectures as registry
    from workbench.sae.architectures.relu import ReLUArchitecture
    from workbench.sae.model import ARCHITECTURES, SAE, SAEConfig, THRESHOLD_ARCHITECTURES, TOPK_FAMILY
    from workbench.sae.train_config import RunSpec, default_lr

    assert tuple(ARCHITECTURES) == ("relu", "topk", "batchtopk", "jumprelu", "matryoshka", "gated")
    assert tuple(TOPK_FAMILY) == ("topk", "batchtopk", "matryoshka")
    assert set(THRESHOLD_ARCHITECTURES) == {"jumprelu", "batchtopk", "matryoshka"}
    with pytest.raises(ValueError, match="unknown SAE architecture 'nope': choose one of relu, topk, .*gated"):
        registry.get_architecture("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(type("Other", (ReLUArchitecture,), {})())

    class Wide(ReLUArchitecture):  # a new architecture: a subclass and one register call
        name = "wide_relu"
        decoder_init_norm = 0.5

        def default_lr(self, d_sae):
            return 3e-3

    registry.register(Wide())
    try:
        assert "wide_relu" in ARCHITECTURES and "wide_relu" not in TOPK_FAMILY  # live views
        sae = SAE(SAEConfig("wide_relu", D_IN, D_SAE), seed=0)
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((D_SAE,), 0.5))
        spec = RunSpec("wide_relu", D_SAE, l1_coefficient=2.0)
        assert spec.resolved_name == "wide_relu-32-l1_2" and default_lr("wide_relu", D_SAE) == 3e-3
        out = sae.training_loss(_data()[0][0], sparse=True)
        assert out.sparsity_loss > 0 and out.aux_loss == 0
    finally:
        del registry.base._REGISTRY["wide_relu"]
    assert "wide_relu" not in ARCHITECTURES


if __name__ == "__main__":
    if "--regen" not in sys.argv[1:]:
        raise SystemExit("usage: tests/test_architectures.py --regen   (rewrites the golden fixture)")
    import tempfile

    from safetensors.torch import save_file

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tensors, meta = _everything(Path(tmp))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(GOLDEN), metadata={**meta, "torch": _build_identity()[0],
                                                    "cpu_capability": _build_identity()[1]})
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(tensors)} tensors)")
