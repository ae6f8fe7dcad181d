"""Run profiles and the standard SAE's training plan."""
from types import SimpleNamespace

import pytest

from workbench.studies.profile import PROFILES, Profile, current_profile, runs_base, standard_training


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


def test_standard_training_refuses_a_store_too_small():
    prof = Profile("t", holdout_tokens=1000, batch_size=64)
    with pytest.raises(ValueError, match="too few.*raise n_tokens"):
        standard_training(prof, SimpleNamespace(n_tokens=1024, n_contexts=8))


def test_runs_base_is_per_model_and_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    a = runs_base("gemma-3-270m", PROFILES["smoke"])
    assert a.parent == tmp_path / "runs" and a.name == "gemma-3-270m-smoke"
    assert runs_base("org/model", PROFILES["full"]).name == "org--model-full"
