"""Run profiles, the standard SAE's training plan, and the study object (feature passes cached per setting)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import PLANT_HOOK, identity_sae, write_store
from workbench.data.corpus import CorpusSpec
from workbench.sae.model import SAE, SAEConfig, SAEMetadata
from workbench.studies.profile import (PROFILES, NestedSAEs, Profile, StandardSAE, StudySAEs, current_profile,
                                       default_sizes, runs_base, standard_harvest_spec, standard_training)


def test_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROFILE", "smoke")
    assert current_profile() is PROFILES["smoke"] and current_profile().smoke
    monkeypatch.delenv("WORKBENCH_PROFILE")
    assert current_profile().name == "full" and not current_profile().smoke
    assert current_profile("smoke").d_sae < current_profile("full").d_sae


def test_unknown_profile_names_the_choices(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROFILE", "huge")
    with pytest.raises(ValueError, match="unknown profile 'huge'.*smoke, full"):
        current_profile()


def test_standard_training_is_one_epoch_without_bos_and_holdout():
    prof = Profile("t", n_tokens=1280, holdout_tokens=200, batch_size=64, d_sae=128, k=4)
    store = SimpleNamespace(n_tokens=1280, n_contexts=10)  # 10 contexts of 128: 1270 non-BOS tokens
    specs, config = standard_training(prof, store, "batchtopk")
    assert config.total_tokens == (1270 - 200) // 64 * 64 == 1024
    assert config.batch_size == 64
    assert [(s.architecture, s.d_sae, s.k) for s in specs] == [("batchtopk", 128, 4)]


def test_profiles_carry_their_epochs_and_checkpoints_into_training():
    store = SimpleNamespace(n_tokens=1280, n_contexts=10)
    _, config = standard_training(Profile("t", holdout_tokens=200, batch_size=64, epochs=3, checkpoint_every=7), store)
    assert (config.epochs, config.checkpoint_every, config.total_tokens) == (3, 7, 1024)  # total_tokens: per epoch
    smoke, full = PROFILES["smoke"], PROFILES["full"]
    assert (smoke.epochs, smoke.checkpoint_every) == (1, 0)  # CI keeps its one-pass, uncheckpointed SAE
    assert full.n_tokens is None and full.d_sae == 16_384 and full.epochs > 1 and full.checkpoint_every > 0


def test_the_whole_corpus_profile_counts_the_corpus_once(tmp_path, monkeypatch):
    from workbench.data import corpus as corpus_mod

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    tok = _CharTokenizer()
    docs = tmp_path / "docs.txt"
    docs.write_text("\n\n".join("abcdefghij" * (i + 1) for i in range(20)))  # 2100 characters, 20 documents
    spec = CorpusSpec(source=str(docs))
    # 2100 characters + 20 EOS = 2120 stream tokens; contexts of [BOS] + 127: 16 whole ones (the rest is dropped)
    n = standard_harvest_spec("m", Profile("t", n_tokens=None), corpus=spec, tokenizer=tok).n_tokens
    assert n == 2120 // 127 * 128 == 2048
    calls = []
    monkeypatch.setattr(corpus_mod, "pack_contexts", lambda *a, **k: calls.append(1) or iter(()))
    again = standard_harvest_spec("m", Profile("t", n_tokens=None), corpus=spec, tokenizer=tok).n_tokens
    assert again == n and not calls  # the count came from the cache
    with pytest.raises(ValueError, match="pass the model's tokenizer"):
        standard_harvest_spec("m", Profile("t", n_tokens=None), corpus=spec)


class _CharTokenizer:
    """One token per character; BOS 1, EOS 2 (enough for packing)."""

    name_or_path = "chars"
    bos_token_id, eos_token_id = 1, 2

    def __len__(self):
        return 300

    def __call__(self, texts, add_special_tokens=False, **kwargs):
        return {"input_ids": [[3 + ord(c) % 250 for c in s] for s in texts]}


def test_standard_training_refuses_a_store_too_small():
    prof = Profile("t", holdout_tokens=1000, batch_size=64)
    with pytest.raises(ValueError, match="too few.*raise n_tokens"):
        standard_training(prof, SimpleNamespace(n_tokens=1024, n_contexts=8))


def test_runs_base_is_per_model_and_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    a = runs_base("gemma-3-270m", PROFILES["smoke"])
    assert a.parent == tmp_path / "runs" and a.name == "gemma-3-270m-smoke"
    assert runs_base("org/model", PROFILES["full"]).name == "org--model-full"


# ----------------------------------------------------------------------------------------------------------------
# The study object: feature passes cached per setting, one or several SAEs
# ----------------------------------------------------------------------------------------------------------------


def _planted_study(tmp_path, saes):
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(16, 9, 6)), 0).astype(np.float32)
    tokens = rng.integers(2, 50, size=(16, 9)).astype(np.int64)
    tokens[:, 0] = 1
    store = write_store(tmp_path / "store", acts, tokens)
    return StudySAEs(model=None, store=store, source=None, saes=saes, run_dir=tmp_path / "run",
                     profile=Profile("t", progress=False), feature_tokens=store.n_tokens * 3 // 4)


@pytest.mark.filterwarnings("ignore:no tokenizer")
def test_feature_passes_get_a_folder_per_setting_and_the_default_one_is_reused(tmp_path):
    study = _planted_study(tmp_path, {"relu-6": identity_sae(6)})
    default_dir = tmp_path / "run" / "relu-6" / "features"
    default = study.features()
    assert study.features_dir() == default_dir and (default_dir / "features.json").is_file()
    assert default.n_contexts == 12 < study.store.n_contexts  # 3/4 of the store: the rest held out
    stamp = (default_dir / "features.json").stat().st_mtime_ns

    whole = study.features(max_tokens=None)  # the setting notebooks 06/07 used: its own folder
    whole_dir = study.features_dir(config=study.feature_config(max_tokens=None))
    assert whole_dir.parent == default_dir.parent and whole_dir.name.startswith("features-")
    assert (whole_dir / "features.json").is_file() and whole.n_contexts == study.store.n_contexts
    assert len({default_dir, whole_dir, study.features_dir(config=study.feature_config(top_k=3))}) == 3
    # settings that leave the results alone share the default folder
    assert study.features_dir(config=study.feature_config(progress=True, threads=1, chunk_tokens=64)) == default_dir
    assert study.features_dir(config=default.meta["config"]) == default_dir

    again = study.features()  # reused from its folder, not recomputed, not overwritten by the other setting
    assert (default_dir / "features.json").stat().st_mtime_ns == stamp
    assert again.n_contexts == 12 and torch.equal(again.count, default.count)

    # explanations sit next to the results they explain, and come back from there
    expl = study.explanations()
    assert (default_dir / "explanations.json").is_file() and not (whole_dir / "explanations.json").exists()
    study.explanations(whole)
    assert (whole_dir / "explanations.json").is_file()
    assert study.explanations().texts() == expl.texts()


@pytest.mark.filterwarnings("ignore:no tokenizer")
def test_a_study_of_several_saes_orders_them_by_size_and_needs_a_name(tmp_path):
    big = SAE(SAEConfig("relu", 6, 12, apply_b_dec_to_input=False),
              SAEMetadata(model_name="planted", hook_name=PLANT_HOOK))
    study = _planted_study(tmp_path, {"big": big, "small": identity_sae(6)})
    assert study.names == ["small", "big"] and study.sizes == [6, 12]
    with pytest.raises(ValueError, match="holds 2 SAEs"):
        study.sae
    with pytest.raises(ValueError, match="unknown SAE 'huge'"):
        study.features("huge")
    results = study.features()
    assert list(results) == ["small", "big"] and results["big"].d_sae == 12
    assert (tmp_path / "run" / "big" / "features" / "features.json").is_file()
    expl = study.explanations(results)
    assert set(expl) == {"small", "big"} and (tmp_path / "run" / "small" / "features" / "explanations.json").is_file()
    assert StandardSAE is NestedSAEs is StudySAEs
    with pytest.raises(ValueError, match="at least one SAE"):
        StudySAEs(model=None, store=None, source=None, saes={}, run_dir=tmp_path, profile=Profile())


def test_default_sizes_follow_the_profile():
    assert default_sizes(PROFILES["smoke"]) == (256, 512, 1024)
    assert default_sizes(PROFILES["full"]) == (1024, 4096, 16384)
