"""SAELens objects everywhere (docs/methods.md, "Using it with SAELens"): ``as_sae`` takes a workbench SAE, a
``sae_lens.SAE`` of each v6 architecture, a folder or a ``(release, sae_id)``; every entry point and widget gives
the same results for a SAELens object as for the workbench SAE converted by the file route; ``to_sae_lens`` makes an
SAE that ``HookedSAETransformer.add_sae`` splices in. All offline, on a tiny random model (tests/interop_world.py).

Also the CUDA defaults (device and dtype) with the device probes patched.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("sae_lens")

import interop_world as world  # noqa: E402
from workbench.sae.interop import as_sae, hook_name_of  # noqa: E402
from workbench.sae.model import SAE  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = world.tiny_model()
    store = world.tiny_store(model, tmp_path_factory.mktemp("interop") / "store")
    sample = torch.cat(list(store.iter_batches(64, hook=world.HOOK, shuffle=False, drop_last=False)))
    return model, store, sample


@pytest.fixture(scope="module")
def saelens_saes(tiny, tmp_path_factory):
    """name -> (SAELens object, the workbench SAE to compare with)."""
    model, store, sample = tiny
    out = {}
    for arch in world.ARCHITECTURES:
        sl = world.sae_lens_random(arch, sample)
        out[arch] = (sl, world.converted(sl))
    from_folder, ours = world.sae_lens_from_our_folder(sample, tmp_path_factory.mktemp("ours") / "sae")
    out["our folder"] = (from_folder, ours)
    trained = world.sae_lens_trained(store)
    out["trained by SAELens"] = (trained, world.converted(trained))
    return out


def test_as_sae_encodes_exactly_like_sae_lens_and_reads_the_hook_from_cfg_metadata(tiny, saelens_saes):
    _, _, sample = tiny
    for name, (sl, _) in saelens_saes.items():
        ours = as_sae(sl)
        assert isinstance(ours, SAE), name
        assert sl.cfg.metadata.hook_name == world.HOOK and ours.metadata.hook_name == world.HOOK, name
        assert not hasattr(sl, "metadata") and hook_name_of(sl) == world.HOOK
        with torch.no_grad():
            ref = world.sae_lens_inference(sl).encode(sample)
            got = ours.encode(sample)
        density = float((ref > 0).float().mean())
        assert 0.02 < density < 0.9, (name, density)  # a real comparison: codes neither empty nor dense
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5, msg=name)
        assert as_sae(ours) is ours  # a workbench SAE passes through untouched


def test_every_entry_point_gives_the_converted_saes_results(tiny, saelens_saes):
    model, store, _ = tiny
    for name in ("standard", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk", "gated", "our folder",
                 "trained by SAELens"):
        sl, ref = saelens_saes[name]
        theirs = world.entry_point_results(model, store, sl)
        ours = world.entry_point_results(model, store, ref)
        for entry in ("features", "search", "steering", "evaluation", "widgets"):
            diff = world.max_abs_diff(theirs[entry], ours[entry])
            assert diff <= ATOL, (name, entry, diff)
        assert float(ours["features"]["max_activation"].max()) > 0, name


def test_to_sae_lens_splices_into_hooked_sae_transformer(tiny, saelens_saes):
    from workbench.sae.lens import to_sae_lens

    model, _, _ = tiny
    tokens = world.context_tokens(model)[:3]
    for name in ("topk", "batchtopk", "gated", "our folder"):
        ours = saelens_saes[name][1]
        sl = to_sae_lens(ours, model=model)
        assert sl.cfg.metadata.hook_name == world.HOOK and sl.W_enc.device == torch.device("cpu")
        with torch.no_grad():
            clean = model(tokens)
            expected = model.run_with_hooks(tokens, fwd_hooks=[(world.HOOK, lambda x, hook: ours(x))])
            model.add_sae(sl)
            try:
                assert world.HOOK in model.acts_to_saes
                spliced = model(tokens)
            finally:
                model.reset_saes()
        assert (expected - clean).abs().max() > 1e-3, name  # the SAE changes the logits: a real check
        torch.testing.assert_close(spliced, expected, atol=1e-4, rtol=1e-4, msg=name)


def test_as_sae_takes_folders_releases_and_says_what_it_cannot_use(tmp_path, monkeypatch, saelens_saes):
    from workbench.sae import io as sae_io
    from workbench.sae.io import save_sae

    ours = saelens_saes["our folder"][1]
    save_sae(ours, tmp_path / "sae")
    loaded = as_sae(tmp_path / "sae")
    assert loaded.cfg == ours.cfg and torch.equal(loaded.W_enc, ours.W_enc) and not loaded.training
    assert as_sae(str(tmp_path / "sae")).metadata.hook_name == world.HOOK
    with pytest.raises(ValueError, match="is not an SAE folder"):
        as_sae(tmp_path)
    with pytest.raises(ValueError, match="cannot use a int as an SAE"):
        as_sae(3)
    monkeypatch.setattr(sae_io, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ValueError, match="hub is unreachable"):
        as_sae(("gpt2-small-res-jb", "blocks.0.hook_resid_pre"))
    import workbench

    assert workbench.as_sae is as_sae and workbench.load_pretrained is sae_io.load_pretrained
    assert workbench.to_sae_lens.__module__ == "workbench.sae.lens"


def test_as_sae_moves_the_sae_to_the_models_device(saelens_saes):
    ours = saelens_saes["our folder"][1]
    meta_model = torch.nn.Linear(2, 2, device="meta")
    sl = saelens_saes["topk"][0]
    assert as_sae(sl, model=meta_model).device.type == "meta"
    assert sl.W_enc.device.type == "cpu"  # the SAELens object itself is left where it was
    moved = as_sae(ours.__class__(ours.cfg, ours.metadata), model=meta_model)
    assert moved.device.type == "meta"
    assert as_sae(ours, device="cpu") is ours and ours.device.type == "cpu"


# ---------------------------------------------------------------------------------------------------------------
# CUDA defaults, with the probes patched
# ---------------------------------------------------------------------------------------------------------------


def _probes(monkeypatch, cuda: bool, bf16: bool = True, mps: bool = False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda,bf16,mps,device,dtype", [
    (False, False, False, "cpu", torch.float32),  # today's CPU behaviour, unchanged
    (True, True, False, "cuda", torch.bfloat16),  # Ampere or newer
    (True, False, False, "cuda", torch.float32),  # V100/T4: bf16 only emulated
    (False, False, True, "mps", torch.float32),  # Apple hardware
    (True, True, True, "cuda", torch.bfloat16),
])
def test_default_device_and_model_dtype_follow_the_hardware(monkeypatch, cuda, bf16, mps, device, dtype):
    from workbench.core.hardware import default_device, default_model_dtype
    from workbench.data.models import resolve_device, resolve_dtype

    _probes(monkeypatch, cuda, bf16, mps)
    assert default_device() == torch.device(device) and resolve_device(None) == torch.device(device)
    assert default_model_dtype(device) == dtype and resolve_dtype(None, resolve_device(None)) == dtype
    assert resolve_dtype("float32", device) == torch.float32  # the opt-out
    assert resolve_dtype(None, "cpu") == torch.float32


def test_load_model_asks_for_bf16_on_a_bf16_gpu_and_float32_on_the_cpu(monkeypatch):
    from workbench.data import models

    seen: list = []

    class Fake:
        cfg = type("C", (), {})()

        def to(self, device_or_dtype, print_details=True):  # HookedTransformer.to: one device *or* one dtype
            seen.append(device_or_dtype)
            return self

        def eval(self):
            return self

    monkeypatch.setattr(models, "_cached_gguf_model", lambda *a, **k: Fake())
    monkeypatch.setattr(models, "asset_path", lambda name: name)
    _probes(monkeypatch, cuda=False, mps=False)
    m = models.load_model("gemma-3-270m")
    assert m.cfg.dtype == torch.float32 and seen == [torch.device("cpu")]
    _probes(monkeypatch, cuda=True, bf16=True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    seen.clear()
    m = models.load_model("gemma-3-270m")
    # cast on the host, then move: half the bytes cross to the GPU
    assert m.cfg.dtype == torch.bfloat16 and seen == [torch.bfloat16, torch.device("cuda")]
    seen.clear()
    m = models.load_model("gemma-3-270m", dtype="float32")
    assert m.cfg.dtype == torch.float32 and seen == [torch.device("cuda")]
    with pytest.raises(ValueError, match="sees no Apple GPU"):
        _probes(monkeypatch, cuda=False, mps=False)
        models.resolve_device("mps")


def test_harvest_forward_batch_follows_the_device_and_the_store_layout_does_not():
    from workbench.data.corpus import CorpusSpec
    from workbench.data.harvest import HarvestConfig, HarvestSpec, cache_layout

    auto, fixed = HarvestConfig(), HarvestConfig(batch_contexts=64)
    assert auto.forward_contexts("cpu") == 32 and auto.forward_contexts(torch.device("cuda", 0)) == 256
    assert fixed.forward_contexts("cpu") == fixed.forward_contexts("cuda") == 64  # an explicit size is kept
    spec = HarvestSpec(model="gemma-3-270m", n_tokens=128 * 1000, corpus=CorpusSpec(source="wiki"))
    # shards count in units of 32 contexts whatever the device, so a GPU and a CPU harvest share the cached store
    assert cache_layout(spec, auto) == cache_layout(spec, HarvestConfig(batch_contexts=32)) == 64
    with pytest.raises(ValueError, match="batch_contexts=0 must be a whole number"):
        HarvestConfig(batch_contexts=0)
