"""SAEBench's own evals run offline on workbench SAEs (docs/methods.md §21): the conversion, the offline datasets,
and where SAEBench's core metrics meet the workbench's (same tokens, same activations)."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("sae_bench", reason="sae-bench is installed by `make install` (pip install --no-deps)")

from workbench.analysis.saebench import OUTPUT_NAMES, SAEBenchConfig, parse_evals, prepare_sae, run_core, \
    run_saebench  # noqa: E402
from workbench.analysis.saebench_data import local_datasets, probe_dataset  # noqa: E402
from workbench.sae.io import save_sae  # noqa: E402
from workbench.sae.lens import to_sae_lens  # noqa: E402
from workbench.sae.model import SAE, SAEConfig, SAEMetadata  # noqa: E402
from workbench.studies.saebench import find_sae_folder, saebench_run  # noqa: E402

HOOK = "blocks.6.hook_resid_post"


def _tiny_sae(arch: str = "topk", d_in: int = 16, d_sae: int = 48, seed: int = 0) -> SAE:
    gen = torch.Generator().manual_seed(seed)
    sae = SAE(SAEConfig(arch, d_in, d_sae, k=4 if arch == "topk" else None),
              SAEMetadata(model_name="gemma-3-270m", hook_name=HOOK, context_size=32))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return sae.eval()


# ------------------------------------------------------------------------------------------- fast: no model
@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_to_sae_lens_encodes_like_the_workbench_sae(tmp_path, arch):
    from sae_lens import SAE as LensSAE

    sae = _tiny_sae(arch)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1)) * 2
    sl = to_sae_lens(sae)
    assert isinstance(sl, LensSAE) and sl.cfg.d_sae == 48 and sl.cfg.metadata.hook_name == HOOK
    with torch.no_grad():
        ref, got = sae.encode(x), sl.encode(x)
        assert (ref > 0).sum() > 0
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sl.decode(got), sae.decode(ref), rtol=1e-5, atol=1e-5)
    save_sae(sae, tmp_path / "sae")
    from_folder = to_sae_lens(tmp_path / "sae")
    torch.testing.assert_close(from_folder.encode(x), ref, rtol=1e-5, atol=1e-5)
    assert to_sae_lens(sl) is sl
    with pytest.raises(ValueError, match="not an SAE folder"):
        to_sae_lens(tmp_path)
    with pytest.raises(ValueError, match="cannot convert"):
        to_sae_lens(object())


def test_prepare_sae_gives_saebench_its_fields():
    sl = prepare_sae(_tiny_sae())
    assert sl.cfg.hook_layer == 6 and sl.cfg.model_name == "gemma-3-270m" and sl.cfg.architecture_str == "topk"
    assert sl.W_enc.dtype == torch.float32


def test_probe_datasets_are_balanced_disjoint_and_labelled():
    train, test = probe_dataset("wiki_topics_en", 5, 3)
    assert len(train) == 7 and set(train) == set(test)
    assert all(len(v) == 5 for v in train.values()) and all(len(v) == 3 for v in test.values())
    every = [t for v in train.values() for t in v] + [t for v in test.values() for t in v]
    assert len(set(every)) == len(every)  # no article twice
    xtrain, xtest = probe_dataset("wiki_topics_crosslingual", 5, 4)
    assert xtrain == train  # trained on the same English articles
    es_train, _ = probe_dataset("wiki_topics_es", 2, 1)
    fr_train, _ = probe_dataset("wiki_topics_fr", 2, 1)
    topic = "Mathematics"
    assert xtest[topic][:2] == es_train[topic] and xtest[topic][2:] == fr_train[topic]  # 2 es + 2 fr
    ltrain, ltest = probe_dataset("wiki_language_id", 4, 2)
    assert sorted(ltrain) == ["en", "es", "fr"] and all(len(v) == 2 for v in ltest.values())
    assert not set(ltrain["en"]) & set(ltrain["es"]) and not set(ltrain["en"]) & set(ltest["en"])
    with pytest.raises(ValueError, match="unknown probe dataset"):
        probe_dataset("LabHC/bias_in_bios_class_set1", 4, 2)


def test_local_datasets_answers_for_its_names_only_and_restores():
    import sae_bench.sae_bench_utils.dataset_info as dataset_info
    import sae_bench.sae_bench_utils.dataset_utils as dataset_utils

    original = dataset_utils.get_multi_label_train_test_data
    data = {"toy": ({"a": ["x", "y"], "b": ["z", "w"]}, {"a": ["q"], "b": ["r"]})}
    with local_datasets(data):
        train, test = dataset_utils.get_multi_label_train_test_data("toy", 4, 2, 0)
        assert train == data["toy"][0] and test == data["toy"][1]
        assert dataset_info.chosen_classes_per_dataset["toy"] == ["a", "b"]
        with pytest.raises(ValueError, match="not built offline"):
            dataset_utils.get_multi_label_train_test_data("fancyzhx/ag_news", 4, 2, 0)
    assert dataset_utils.get_multi_label_train_test_data is original
    assert "toy" not in dataset_info.chosen_classes_per_dataset


def test_config_and_eval_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="core_batch_prompts"):
        SAEBenchConfig(core_batch_prompts=0)
    assert parse_evals("core, tpp,core") == ("core", "tpp")
    with pytest.raises(ValueError, match="choose from"):
        parse_evals("core,scr")
    assert SAEBenchConfig.demo().probe_datasets == ("wiki_topics_en",)


def test_find_sae_folder_skips_checkpoints_and_refuses_ambiguity(tmp_path):
    save_sae(_tiny_sae(), tmp_path / "sae" / "topk" / "sae")
    save_sae(_tiny_sae(), tmp_path / "sae" / "checkpoints" / "step_1" / "sae")
    assert find_sae_folder(tmp_path) == tmp_path / "sae" / "topk" / "sae"
    assert find_sae_folder(tmp_path / "sae" / "topk" / "sae") == tmp_path / "sae" / "topk" / "sae"
    save_sae(_tiny_sae(seed=1), tmp_path / "sae" / "other" / "sae")
    with pytest.raises(ValueError, match="holds 2 SAE folders"):
        find_sae_folder(tmp_path)
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    save_sae(_tiny_sae(), tmp_path / "empty" / "checkpoints" / "sae")
    with pytest.raises(ValueError, match="no SAE folder"):
        find_sae_folder(tmp_path / "empty")


def test_cli_names_a_missing_run(tmp_path, capsys):
    from workbench.cli import main

    assert main(["saebench", str(tmp_path / "nope"), "--evals", "core"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not exist" in err and "\n" not in err


# ----------------------------------------------------------------------------------- slow: the real model
@pytest.fixture(scope="module")
def gemma_sae(gemma):
    """A 256-latent TopK SAE on layer 6, data-initialised from 16 training contexts (cheap, non-trivial)."""
    from workbench.data.corpus import CorpusSpec, packed_contexts

    toks = torch.from_numpy(next(iter(packed_contexts(CorpusSpec(), gemma.tokenizer, 16 * 64, context_size=64,
                                                      batch_contexts=16))).tokens.astype("int64"))
    with torch.no_grad():
        _, cache = gemma.run_with_cache(toks, names_filter=[HOOK], stop_at_layer=7)
    x = cache[HOOK][:, 1:].reshape(-1, gemma.cfg.d_model)
    gen = torch.Generator().manual_seed(0)
    sae = SAE(SAEConfig("topk", x.shape[1], 256, k=16),
              SAEMetadata(model_name="gemma-3-270m", hook_name=HOOK, context_size=64))
    sae.init_from_data(x, method="mean")
    with torch.no_grad():
        d = x[torch.randperm(x.shape[0], generator=gen)[:256]] - sae.b_dec
        d = d / d.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(d)
        sae.W_enc.copy_(d.t() * 0.02)
    return sae.eval()


@pytest.fixture(scope="module")
def core_run(gemma, gemma_sae):
    from workbench.analysis.saebench_data import heldout_tokens

    cfg = SAEBenchConfig(core_batch_prompts=2, core_reconstruction_batches=2, core_sparsity_batches=2,
                         core_context_size=32, progress=False)
    tokens = heldout_tokens(gemma.tokenizer, 4, 32)
    sl = prepare_sae(gemma_sae)
    return {"tokens": tokens, "sl": sl, "out": run_core(gemma, sl, cfg, tokens=tokens)}


@pytest.mark.slow
def test_core_ce_and_kl_scores_match_sae_lens_and_the_workbench(gemma, gemma_sae, core_run):
    """SAEBench's ce_loss_score / kl_div_score = SAELens's evals on the same tokens (both splice every
    non-special position, zero every position for the baseline, count predictions from non-special positions),
    and the workbench's downstream_metrics (the same definitions, docs/methods.md §4)."""
    from datasets import Dataset
    from sae_lens.evals import get_downstream_reconstruction_metrics
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.training.activations_store import ActivationsStore

    from workbench.sae.evaluate import downstream_metrics

    tokens, sl = core_run["tokens"], core_run["sl"]
    m = core_run["out"]["eval_result_metrics"]
    ce, kl = m["model_performance_preservation"], m["model_behavior_preservation"]
    assert ce["ce_loss_with_ablation"] > ce["ce_loss_with_sae"] > ce["ce_loss_without_sae"] > 0
    store = ActivationsStore.from_sae(gemma, sl, dataset=Dataset.from_dict({"input_ids": tokens.tolist()}),
                                      context_size=32, streaming=False, store_batch_size_prompts=2)
    tok = gemma.tokenizer
    lens = get_downstream_reconstruction_metrics(sl, gemma, store, ActivationScaler(), compute_kl=True,
                                                 compute_ce_loss=True, n_batches=2, eval_batch_size_prompts=2,
                                                 ignore_tokens=[tok.pad_token_id, tok.eos_token_id, tok.bos_token_id])
    assert ce["ce_loss_score"] == pytest.approx(lens["ce_loss_score"], abs=1e-4)
    assert kl["kl_div_score"] == pytest.approx(lens["kl_div_score"], abs=1e-4)
    assert ce["ce_loss_with_ablation"] == pytest.approx(lens["ce_loss_with_ablation"], rel=1e-4)
    ours = downstream_metrics(gemma, gemma_sae, tokens, batch_size=2)
    assert ours.ablation == "all positions"
    assert ours.ce_clean == pytest.approx(ce["ce_loss_without_sae"], rel=1e-3)
    assert ours.ce_zero_ablation == pytest.approx(ce["ce_loss_with_ablation"], rel=1e-3)
    assert ours.ce_loss_score == pytest.approx(ce["ce_loss_score"], abs=2e-3)
    # KL differs by which positions count: SAEBench / SAELens average it over every non-special position, the
    # last one of each context included (KL needs no target); the workbench over the positions that predict a
    # next token (as for CE). Both recomputed from the same logits:
    special = torch.isin(tokens, torch.tensor([tok.pad_token_id, tok.eos_token_id, tok.bos_token_id]))

    def splice(act, hook=None):
        return torch.where(special[..., None], act, gemma_sae(act))

    with torch.no_grad():
        clean = gemma(tokens).log_softmax(-1)
        spliced = gemma.run_with_hooks(tokens, fwd_hooks=[(HOOK, splice)]).log_softmax(-1)
    kl_pos = (clean.exp() * (clean - spliced)).sum(-1)
    del clean, spliced
    assert kl["kl_div_with_sae"] == pytest.approx(float(kl_pos[~special].mean()), rel=1e-3)
    assert ours.kl_div == pytest.approx(float(kl_pos[:, :-1][~special[:, :-1]].mean()), rel=1e-3)
    assert ours.kl_div != pytest.approx(kl["kl_div_with_sae"], rel=1e-3)
    assert ours.kl_div_score == pytest.approx(kl["kl_div_score"], abs=0.03)
    # the workbench's pre-0.3 baseline kept BOS: a far worse zero-ablated loss, so a higher score
    old = downstream_metrics(gemma, gemma_sae, tokens, batch_size=2, keep_bos_in_ablation=True)
    assert old.ce_zero_ablation > ours.ce_zero_ablation + 1.0 and old.ce_loss_score > ours.ce_loss_score


@pytest.mark.slow
def test_core_sparsity_and_variance_against_the_workbench(gemma, gemma_sae, core_run):
    """Same activations (non-special positions of the same tokens): SAEBench's l0 is the workbench's; its
    ``explained_variance`` is NOT the centred EV. SAEBench 0.6.0 takes the total variance as
    E||x||^2 - (E||x||^2 / d)^2 (the mean of squares where the squared mean belongs), which for Gemma's
    residual stream (E||x||^2 / d in the thousands) is negative and puts the score above 1; the workbench's
    explained variance is 1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2. Both are recomputed here."""
    from workbench.sae.evaluate import evaluate_activations

    tokens = core_run["tokens"]
    m = core_run["out"]["eval_result_metrics"]
    tok = gemma.tokenizer
    with torch.no_grad():
        _, cache = gemma.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=7)
    special = torch.isin(tokens, torch.tensor([tok.pad_token_id, tok.eos_token_id, tok.bos_token_id]))
    x = cache[HOOK][~special].double()
    ours = evaluate_activations(gemma_sae, [x.float()])
    assert m["sparsity"]["l0"] == pytest.approx(ours.l0, rel=1e-6)
    with torch.no_grad():
        err = (gemma_sae(x.float()).double() - x).pow(2).sum(1).mean()
    centred = 1 - err / (x - x.mean(0)).pow(2).sum(1).mean()
    assert ours.explained_variance == pytest.approx(float(centred), abs=1e-4)
    sq = x.pow(2).sum(1).mean()
    saebench_formula = 1 - err / (sq - (sq / x.shape[1]) ** 2)
    assert m["reconstruction_quality"]["explained_variance"] == pytest.approx(float(saebench_formula), rel=1e-3)
    assert m["reconstruction_quality"]["explained_variance"] > 1.0 > ours.explained_variance
    assert m["misc_metrics"]["frac_alive"] > 0 and len(core_run["out"]["eval_result_details"]) == 256


@pytest.mark.slow
def test_every_eval_writes_saebench_json_and_is_cached(gemma, gemma_sae, tmp_path):
    """sparse_probing, absorption and tpp at smoke size through the study layer: one SAEBench JSON per eval under
    the run's saebench/, values in range; a second call reads them back."""
    save_sae(gemma_sae, tmp_path / "run" / "sae" / "topk" / "sae")
    cfg = SAEBenchConfig.smoke()
    evals = ("sparse_probing", "absorption", "tpp")
    got = saebench_run(tmp_path / "run", evals=evals, config=cfg, model=gemma)
    out = tmp_path / "run" / "saebench"
    assert got["out_dir"] == out and got["cached"] == []
    for name in evals:
        saved = json.loads((out / f"{OUTPUT_NAMES[name]}.json").read_text())
        assert saved["eval_type_id"] == OUTPUT_NAMES[name] and saved["sae_lens_release_id"] == "workbench"
        assert saved["sae_bench_commit_hash"].startswith("sae-bench==")
    sp = got["summary"]["sparse_probing"]
    assert sp["llm_test_accuracy"] > 0.6  # en / es / fr vs the rest (chance 0.5), 6 texts per class at smoke size
    assert 0.0 <= sp["sae_top_1_test_accuracy"] <= 1.0
    assert [d["dataset_name"] for d in got["results"]["sparse_probing"]["eval_result_details"]] == \
        ["wiki_language_id_results"]
    ab = got["summary"]["absorption"]
    assert 0.0 <= ab["mean_absorption_fraction_score"] <= 1.0 and 0.0 <= ab["mean_full_absorption_score"] <= 1.0
    tpp = got["summary"]["tpp"]
    assert {"tpp_threshold_2_total_metric", "tpp_threshold_5_intended_diff_only"} <= set(tpp)
    assert all(-1.0 <= v <= 1.0 for v in tpp.values() if isinstance(v, float))
    again = saebench_run(tmp_path / "run", evals=evals, config=cfg, model=gemma)
    assert again["cached"] == list(evals) and again["summary"] == got["summary"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["timings"]) == set(evals) and all(t > 0 for t in summary["timings"].values())


@pytest.mark.slow
def test_run_saebench_core_through_the_public_entry_point(gemma, gemma_sae, tmp_path):
    cfg = SAEBenchConfig.smoke()
    res = run_saebench(gemma, gemma_sae, evals="core", config=cfg, out_dir=tmp_path)
    assert json.loads((tmp_path / "core.json").read_text()) == res["core"]
    assert res["core"]["eval_config"]["exclude_special_tokens_from_reconstruction"] is True
    assert res["core"]["eval_result_metrics"]["token_stats"]["total_tokens_eval_reconstruction"] == 2 * 32
