"""Provenance and safety of caches: harvest refuses a model that is not the spec's, the store cache key carries the
shard layout, a CorpusSpec pins an HF dataset revision, and saved SAE folders record what SAELens and SAEBench
read (model_from_pretrained_kwargs, model_class_name, dataset_path, the weights' source, quantisation and sha,
sparsity.safetensors). A tiny random model with Gemma's tokenizer keeps every harvest to milliseconds."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from workbench.core.errors import ConfigError
from workbench.data.corpus_spec import CorpusSpec
from workbench.data.harvest import HarvestConfig, HarvestSpec, cache_layout, harvest, harvest_cached, store_dir

TINY = "tiny-provenance-test"


@pytest.fixture(scope="module")
def tiny():
    """A two-layer random HookedTransformer whose cfg.model_name is ``tiny-provenance-test``."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("gemma-3-270m")
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=64, d_head=8, n_heads=2, d_mlp=32, d_vocab=len(tok),
                                  act_fn="gelu", default_prepend_bos=True, model_name=TINY)
    return HookedTransformer(cfg, tokenizer=tok).eval()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _spec(model: str = TINY, n_tokens: int = 16 * 16) -> HarvestSpec:
    return HarvestSpec(model=model, hooks=("blocks.1.hook_resid_post",), n_tokens=n_tokens, context_size=16,
                       corpus=CorpusSpec(source="wiki", languages=("en",)))


QUIET = HarvestConfig(progress=False)  # the default layout: store_dir(spec) without shard_contexts


# ------------------------------------------------------------------------------------------- the model check
def test_a_foreign_model_under_the_default_spec_is_refused_before_anything_is_cached(tiny, home, tmp_path):
    spec = _spec(model="gemma-3-270m")  # the default model's key: a store here would be read as Gemma's
    for call in (lambda: harvest_cached(spec, model=tiny, config=QUIET),
                 lambda: harvest(spec, tmp_path / "out", model=tiny, config=QUIET)):
        with pytest.raises(ConfigError) as err:
            call()
        msg = str(err.value)
        assert "'gemma-3-270m'" in msg and TINY in msg and "d_model=16" in msg and "n_layers=2" in msg
        assert "not loaded by workbench.data.models.load_model" in msg and err.value.param == "model"
    assert not (store_dir(spec) / "manifest.json").exists() and not (tmp_path / "out").exists()
    assert not any((home / "stores").glob("gemma-3-270m-*/manifest.json"))


def test_a_model_named_by_the_spec_harvests_and_the_manifest_records_its_identity(tiny, home):
    store = harvest_cached(_spec(), model=tiny, config=QUIET)
    extra = store.manifest["extra"]
    assert extra["model_identity"] == {"name": None, "tl_model_name": TINY, "d_model": 16, "n_layers": 2,
                                       "d_vocab": tiny.cfg.d_vocab}
    assert extra["model_class_name"] == "HookedTransformer"
    with pytest.raises(ConfigError, match="spec.model='other-model'"):
        harvest_cached(_spec(model="other-model"), model=tiny, config=QUIET)


def test_a_workbench_loaded_model_is_matched_by_its_load_model_name(tiny):
    from workbench.data.provenance import check_model_matches

    tiny.workbench_name = "gemma-3-270m"
    try:
        check_model_matches(tiny, "gemma-3-270m")  # as load_model("gemma-3-270m") labels it
        with pytest.raises(ConfigError, match="smollm2-135m-instruct"):
            check_model_matches(tiny, "smollm2-135m-instruct")
    finally:
        del tiny.workbench_name


# -------------------------------------------------------------------------------------- layout in the key
def test_the_shard_layout_is_part_of_the_cache_key(tiny, home):
    spec = _spec()
    assert cache_layout(spec, QUIET) == 32  # 16 contexts: one forward batch, one shard
    assert cache_layout(spec, HarvestConfig(batch_contexts=4)) == 4  # a smaller batch gives smaller shards
    default = harvest_cached(spec, model=tiny, config=QUIET)
    eights = harvest_cached(spec, model=tiny, config=HarvestConfig(batch_contexts=4, shard_contexts=8, progress=False))
    assert default.path == store_dir(spec) and default.shard_contexts == 32 and default.n_shards == 1
    assert eights.n_shards == 2
    assert eights.path == store_dir(spec, shard_contexts=8) != default.path and eights.shard_contexts == 8
    # asked again in either layout: each gets its own store back, whichever was harvested first
    assert harvest_cached(spec, model=tiny, config=QUIET).shard_contexts == 32
    again = harvest_cached(spec, model=tiny, config=HarvestConfig(batch_contexts=4, shard_contexts=8, progress=False))
    assert again.path == eights.path and again.shard_contexts == 8
    assert (default.token_ids() == eights.token_ids()).all()  # same contents, another layout


def test_a_legacy_store_of_another_layout_under_the_plain_name_is_refiled_not_returned(tiny, home):
    spec = _spec()
    plain = store_dir(spec)
    harvest(spec, plain, model=tiny, config=HarvestConfig(batch_contexts=4, shard_contexts=2, progress=False))
    store = harvest_cached(spec, model=tiny, config=QUIET)
    assert store.path == plain and store.shard_contexts == 32
    moved = store_dir(spec, shard_contexts=2)
    assert json.loads((moved / "manifest.json").read_text())["shard_contexts"] == 2
    again = harvest_cached(spec, model=tiny, config=HarvestConfig(batch_contexts=4, shard_contexts=2, progress=False))
    assert again.path == moved and again.shard_contexts == 2
    # and the other way round: a legacy plain store asked for in its own layout moves there, not harvested again
    shutil.rmtree(plain)
    moved.rename(plain)
    import workbench.data.harvest as harvest_mod

    real, harvest_mod.harvest = harvest_mod.harvest, lambda *a, **k: pytest.fail("harvested again")
    try:
        found = harvest_cached(spec, model=tiny, config=HarvestConfig(batch_contexts=4, shard_contexts=2,
                                                                      progress=False))
    finally:
        harvest_mod.harvest = real
    assert found.path == moved and found.shard_contexts == 2 and not plain.exists()
    # a legacy duplicate under the plain name of a store that also sits under its own name is dropped
    shutil.copytree(moved, plain)
    assert harvest_cached(spec, model=tiny, config=QUIET).shard_contexts == 32 and moved.exists()
    with pytest.raises(ConfigError, match="shard_contexts=32, not the 2"):
        harvest(spec, plain, model=tiny, config=HarvestConfig(batch_contexts=4, shard_contexts=2, progress=False))


def test_a_spec_saved_before_hf_revision_existed_still_matches():
    spec = _spec()
    old = spec.to_dict()
    assert "hf_revision" not in old["corpus"]  # omitted while unset
    assert spec.matches(old) and spec.matches(json.loads(json.dumps(old)))
    assert not spec.matches({**old, "n_tokens": 512}) and not spec.matches(None)


# ----------------------------------------------------------------------------------------- HF revision
def test_hf_revision_is_in_the_fingerprint_only_when_set():
    plain = CorpusSpec(source="hf:org/data")
    pinned = CorpusSpec(source="hf:org/data", hf_revision="3f2a9c1")
    assert plain.fingerprint() == CorpusSpec.from_dict(plain.to_dict()).fingerprint()
    assert pinned.fingerprint() != plain.fingerprint() != CorpusSpec(source="hf:org/data", hf_revision="v2").fingerprint()
    assert CorpusSpec.from_dict(pinned.to_dict()) == pinned and "revision='3f2a9c1'" in pinned.describe()
    assert _spec().key() == HarvestSpec.key(_spec())  # stable
    with pytest.raises(ConfigError, match="hf_revision"):
        CorpusSpec(source="hf:org/data", hf_revision="  ")


# ---------------------------------------------------------------------------------------------- cfg.json
@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A TopK SAE trained for a few steps on a tiny store, saved by the trainer."""
    from workbench.sae.sources import StoreSource
    from workbench.sae.train import train
    from workbench.sae.train_config import RunSpec, TrainConfig

    root = tmp_path_factory.mktemp("prov")
    store = harvest(_spec(n_tokens=64 * 16), root / "store", model=tiny, config=QUIET)
    source = StoreSource(store.path, holdout_tokens=128)
    cfg = TrainConfig(total_tokens=512, batch_size=64, device="cpu", heldout_eval_tokens=128, checkpoint_every=0,
                      scale_estimate_tokens=256, b_dec_init_tokens=256)
    result = train([RunSpec("topk", d_sae=32, k=4, name="sae")], cfg, source, root / "run", progress=False)
    return store, result.runs["sae"].path


def test_cfg_json_records_what_sae_lens_and_saebench_read(trained):
    store, folder = trained
    meta = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert meta["model_name"] == TINY and meta["hook_name"] == "blocks.1.hook_resid_post"
    assert meta["model_class_name"] == "HookedTransformer"
    assert meta["model_from_pretrained_kwargs"] == {}  # a TransformerLens name: its own from_pretrained defaults
    assert meta["dataset_path"] == "workbench:wiki/en"
    assert meta["workbench"]["store"]["corpus_fingerprint"] == store.manifest["corpus_fingerprint"]
    assert meta["workbench"]["store"]["model_identity"]["d_model"] == 16
    assert meta["weights"]["source"] == "hf-hub"


def test_sparsity_file_is_sae_lens_log10_density(trained):
    from safetensors.torch import load_file

    from workbench.sae.evaluate import evaluate_activations
    from workbench.sae.io import load_sae
    from workbench.sae.sources import StoreSource

    store, folder = trained
    sparsity = load_file(str(folder / "sparsity.safetensors"))["sparsity"]
    sae = load_sae(folder)
    assert sparsity.shape == (sae.cfg.d_sae,) and sparsity.dtype == torch.float32
    assert float(sparsity.max()) <= 0.0 and float(sparsity.min()) >= -10.0 - 1e-4
    from workbench.sae.provenance import read_sparsity

    assert torch.equal(read_sparsity(folder), sparsity) and read_sparsity(folder / "no-such-folder") is None
    # the densities of the last epoch's held-out evaluation (the first 128 held-out tokens)
    held = torch.cat(list(StoreSource(store.path, holdout_tokens=128).heldout_batches(64)))
    density = evaluate_activations(sae, [held]).density
    torch.testing.assert_close(sparsity, torch.log10(density + 1e-10), atol=1e-4, rtol=0)


def test_sae_lens_loads_our_folder_and_sees_the_provenance(trained):
    from sae_lens import SAE as LensSAE

    from workbench.sae.io import load_sae

    _, folder = trained
    lens = LensSAE.load_from_disk(str(folder))
    ours = load_sae(folder)
    assert lens.cfg.metadata.model_class_name == "HookedTransformer"
    assert lens.cfg.metadata.dataset_path == "workbench:wiki/en"
    assert lens.cfg.metadata.model_from_pretrained_kwargs == {}
    x = torch.randn(8, 16) * 3
    torch.testing.assert_close(lens.encode(x), ours.encode(x), atol=1e-5, rtol=1e-5)


def test_embedded_model_records_gguf_quantisation_and_sha():
    from workbench.data.assets import ASSETS
    from workbench.sae.model import SAE, SAEConfig, SAEMetadata
    from workbench.sae.io import sae_lens_config

    sae = SAE(SAEConfig("topk", 640, 64, k=4), SAEMetadata(model_name="gemma-3-270m", hook_name="blocks.6.hook_resid_post",
                                                            context_size=128))
    meta = sae_lens_config(sae)["metadata"]
    assert meta["weights"]["quantization"] == "Q4_K_M" and meta["weights"]["dequantized_to"] == "float32"
    assert meta["weights"]["sha256"] == ASSETS["gemma-3-270m"].sha256
    assert meta["weights"]["origin"] == "google/gemma-3-270m"
    assert meta["model_from_pretrained_kwargs"] == {"fold_ln": False, "center_writing_weights": False,
                                                    "center_unembed": False, "fold_value_biases": False,
                                                    "refactor_factored_attn_matrices": False}


def test_a_folder_saved_before_the_provenance_fields_still_loads(trained, tmp_path):
    from sae_lens import SAE as LensSAE

    from workbench.sae.io import load_sae

    _, folder = trained
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / "sparsity.safetensors").unlink()
    cfg = json.loads((old / "cfg.json").read_text())
    for key in ("model_class_name", "model_from_pretrained_kwargs", "dataset_path", "weights"):
        del cfg["metadata"][key]
    del cfg["metadata"]["workbench"]["store"]
    (old / "cfg.json").write_text(json.dumps(cfg))
    x = torch.randn(4, 16)
    torch.testing.assert_close(load_sae(old).encode(x), load_sae(folder).encode(x))
    assert LensSAE.load_from_disk(str(old)).cfg.metadata.hook_name == "blocks.1.hook_resid_post"


def test_a_missing_extra_names_the_extra_to_install():
    from workbench.core.extras import MissingExtra, require

    with pytest.raises(MissingExtra, match=r"pip install 'workbench\[saebench\]' && pip install --no-deps sae-bench"):
        require("workbench_no_such_module", "saebench")
    with pytest.raises(ValueError, match=r"workbench\[hf\]"):
        require("workbench_no_such_module.parquet", "hf", "reading x.parquet")
    assert require("json", "hf").dumps([1]) == "[1]"
