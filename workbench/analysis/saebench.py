"""SAEBench's own evals on any SAE, offline: ``core``, ``sparse_probing``, ``absorption`` (first letter), ``tpp``
(docs/methods.md §21; Karvonen et al. 2025, ``sae-bench==0.6.0``).

    from workbench.analysis.saebench import SAEBenchConfig, run_saebench
    results = run_saebench(model, sae, evals=("core", "sparse_probing"), config=SAEBenchConfig.demo(),
                           out_dir="runs/demo/saebench")
    results["core"]["eval_result_metrics"]["model_performance_preservation"]["ce_loss_score"]

``model`` is the caller's loaded TransformerLens ``HookedTransformer``; ``sae`` a workbench SAE, a
``sae_lens.SAE`` or an SAE folder (:func:`workbench.sae.lens.to_sae_lens`). Each eval calls SAEBench's own
functions below its ``run_eval`` (which would load the model and the datasets from the hub), with the datasets of
:mod:`workbench.analysis.saebench_data`, and writes SAEBench's own output dataclass as JSON
(``<out_dir>/<eval_type_id>.json``: ``core.json``, ``sparse_probing.json``, ``absorption_first_letter.json``,
``tpp.json``); the returned dicts are those files' contents.

What differs from a hub run, on purpose:

- ``core`` reads held-out contexts of the embedded corpus through a SAELens ``ActivationsStore`` over an in-memory
  pre-tokenised ``datasets.Dataset``, and sets SAEBench's ``exclude_special_tokens_from_reconstruction=True``:
  BOS / EOS / pad positions keep their activation (the workbench's SAEs never train on BOS, whose norm is
  orders of magnitude larger), as SAELens's own evals do; losses skip those positions either way.
- ``sparse_probing`` / ``tpp`` datasets are the embedded wiki's topics and languages; SAEBench's loader is patched
  for the call (:func:`~workbench.analysis.saebench_data.local_datasets`), it has no injection point.
- ``absorption`` uses a seeded whole-word vocabulary of a few hundred tokens instead of the tokenizer's whole
  alphabetic vocabulary (``get_alpha_tokens`` is patched in SAEBench's two modules that call it), and the model's
  ``run_with_cache`` stops after the SAE's layer (``stop_at_layer``: the probes read the residual stream there, so
  the results are unchanged and the 262k-entry unembedding is skipped). Its probe files (SAEBench pickles its
  probe with ``torch.save``) live in a temporary folder that is deleted afterwards.
- ``sae_bench_commit_hash`` records ``sae-bench==<version>`` (SAEBench's helper would record the git hash of
  whatever repository the process runs in).
"""
from __future__ import annotations

import json
import random
import re
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from workbench.analysis.saebench_data import first_letter_vocab, heldout_tokens, local_datasets, probe_dataset

__all__ = ["EVALS", "OUTPUT_NAMES", "SAEBenchConfig", "prepare_sae", "run_saebench"]

EVALS = ("core", "sparse_probing", "absorption", "tpp")
OUTPUT_NAMES = {"core": "core", "sparse_probing": "sparse_probing", "absorption": "absorption_first_letter",
                "tpp": "tpp"}  # SAEBench's eval_type_id: the JSON file names
_RELEASE = "workbench"


@dataclass
class SAEBenchConfig:
    """Sizes of the four evals; the defaults run all four in a few minutes on 2 CPU cores (Gemma-3-270M,
    4096 latents). SAEBench's own defaults (GPU-sized) are noted per field."""

    seed: int = 42
    llm_batch_size: int = 8  # contexts per model pass (probing, TPP)
    sae_batch_size: int = 64
    # core: 16 prompts x 10 batches of 128 tokens in SAEBench
    core_batch_prompts: int = 4
    core_reconstruction_batches: int = 4  # three full model passes each (clean, spliced, zero-ablated)
    core_sparsity_batches: int = 8  # passes stop after the SAE's layer
    core_context_size: int = 128
    core_featurewise: bool = True  # per-latent density and weight statistics (+ misc_metrics)
    # sparse probing: 8 hub datasets, 4000 / 1000 texts per binary task, 128 tokens in SAEBench
    probe_datasets: tuple[str, ...] = ("wiki_topics_en", "wiki_topics_crosslingual", "wiki_language_id")
    probe_train_per_class: int = 24
    probe_test_per_class: int = 12
    probe_context_length: int = 64
    k_values: tuple[int, ...] = (1, 2, 5)
    # absorption: the whole alphabetic vocabulary in SAEBench
    absorption_words_per_letter: int = 40
    absorption_max_k: int = 10
    absorption_min_probe_f1: float = 0.6
    # SAEBench's min_feats_for_eval is 20 letters (for >= 2B models); Gemma-3-270M's first-letter probe on ~20
    # training words per letter clears F1 0.6 on 5 letters (measured at layer 9), so fewer are required here
    absorption_min_letters: int = 4
    absorption_probe_epochs: int = 50
    # tpp: 2 hub datasets, n up to 500 in SAEBench
    tpp_datasets: tuple[str, ...] = ("wiki_topics_en",)
    tpp_train_per_class: int = 24
    tpp_test_per_class: int = 12
    tpp_n_values: tuple[int, ...] = (2, 5, 10, 20, 50, 100)
    tpp_probe_epochs: int = 20
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("llm_batch_size", "sae_batch_size", "core_batch_prompts", "core_reconstruction_batches",
                     "core_sparsity_batches", "probe_train_per_class", "probe_test_per_class",
                     "absorption_words_per_letter", "absorption_min_letters", "tpp_train_per_class",
                     "tpp_test_per_class"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SAEBenchConfig.{name}={getattr(self, name)} must be >= 1")
        if self.core_context_size < 2 or self.probe_context_length < 2:
            raise ValueError("SAEBenchConfig context sizes must be >= 2 tokens")
        for name in ("probe_datasets", "tpp_datasets", "k_values", "tpp_n_values"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def smoke(cls) -> "SAEBenchConfig":
        """Test-sized: every eval in seconds to a minute on a small SAE (numbers are noise at this size)."""
        return cls(core_batch_prompts=2, core_reconstruction_batches=1, core_sparsity_batches=1,
                   core_context_size=32, probe_datasets=("wiki_language_id",), probe_train_per_class=6,
                   probe_test_per_class=4, probe_context_length=24, k_values=(1, 2), absorption_words_per_letter=6,
                   absorption_max_k=3, absorption_min_letters=1, absorption_min_probe_f1=0.0,
                   absorption_probe_epochs=10, tpp_datasets=("wiki_language_id",), tpp_train_per_class=6,
                   tpp_test_per_class=4, tpp_n_values=(2, 5), tpp_probe_epochs=5, progress=False)

    @classmethod
    def demo(cls) -> "SAEBenchConfig":
        """``core`` + ``sparse_probing`` in about 90 s on 2 idle cores: 256 tokens for the CE / KL passes (three
        full model passes), 1k for sparsity and variance, the English topics at 10 + 5 texts per class of 48
        tokens (numbers indicative only at this size)."""
        return cls(core_batch_prompts=2, core_reconstruction_batches=1, core_sparsity_batches=4,
                   probe_datasets=("wiki_topics_en",), probe_train_per_class=10, probe_test_per_class=5,
                   probe_context_length=48)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare_sae(sae: Any) -> Any:
    """``sae`` as a float32 CPU ``sae_lens.SAE`` with the fields SAEBench reads (``cfg.hook_layer`` ...), through
    SAEBench's own ``load_and_format_sae`` (which also warns when decoder rows are not unit norm)."""
    from sae_bench.sae_bench_utils.general_utils import load_and_format_sae

    from workbench.sae.lens import to_sae_lens

    sl = to_sae_lens(sae)
    _, sl, _ = load_and_format_sae(_RELEASE, sl, "cpu")
    return sl.to(device="cpu", dtype=__import__("torch").float32)


def _meta() -> dict[str, Any]:
    from importlib.metadata import version

    from sae_bench.sae_bench_utils import get_eval_uuid, get_sae_lens_version

    return {"eval_id": get_eval_uuid(), "sae_lens_version": get_sae_lens_version(),
            "sae_bench_commit_hash": f"sae-bench=={version('sae-bench')}"}


def _as_dict(output: Any) -> dict[str, Any]:
    """A SAEBench output dataclass as the dict its JSON file holds (its own ``to_json``)."""
    return json.loads(output.to_json(indent=1))


def _now_ms() -> int:
    return int(datetime.now().timestamp() * 1000)


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------------- core
def run_core(model: Any, sae: Any, config: SAEBenchConfig, sae_id: str = "custom_sae", tokens: Any = None) -> Any:
    """SAEBench's ``core`` (``run_evals``) on held-out contexts (or ``tokens`` [n, ctx]); a ``CoreEvalOutput``."""
    from datasets import Dataset
    from sae_bench.evals.core import main as core
    from sae_bench.evals.core.eval_config import CoreEvalConfig
    from sae_lens.training.activations_store import ActivationsStore

    cfg = config
    n_ctx = cfg.core_batch_prompts * max(cfg.core_reconstruction_batches, cfg.core_sparsity_batches)
    if tokens is None:
        tokens = heldout_tokens(model.tokenizer, n_ctx, cfg.core_context_size)
    store = ActivationsStore.from_sae(model, sae, dataset=Dataset.from_dict({"input_ids": tokens.tolist()}),
                                      context_size=int(tokens.shape[1]), streaming=False,
                                      store_batch_size_prompts=cfg.core_batch_prompts, device="cpu")
    eval_cfg = CoreEvalConfig(
        model_name=model.cfg.model_name, llm_dtype="float32", batch_size_prompts=cfg.core_batch_prompts,
        n_eval_reconstruction_batches=cfg.core_reconstruction_batches,
        n_eval_sparsity_variance_batches=cfg.core_sparsity_batches,
        dataset="workbench embedded wiki, held-out split (pre-tokenised)", context_size=int(tokens.shape[1]),
        compute_kl=True, compute_ce_loss=True, compute_l2_norms=True, compute_sparsity_metrics=True,
        compute_variance_metrics=True, compute_featurewise_density_statistics=cfg.core_featurewise,
        compute_featurewise_weight_based_metrics=cfg.core_featurewise,
        exclude_special_tokens_from_reconstruction=True, verbose=cfg.progress)
    tok = model.tokenizer
    _seed(cfg.seed)
    metrics, feature_metrics = core.run_evals(sae=sae, activation_store=store, model=model, eval_config=eval_cfg,
                                              ignore_tokens={tok.pad_token_id, tok.eos_token_id, tok.bos_token_id},
                                              verbose=cfg.progress)
    result: dict[str, Any] = {"eval_cfg": eval_cfg, "metrics": metrics, "sae_set": _RELEASE, "sae_id": sae_id}
    if cfg.core_featurewise:
        metrics["misc_metrics"] = core.calculate_misc_metrics(feature_metrics)
        result["feature_metrics"] = feature_metrics
    result = core.replace_nans_with_negative_one(result)
    meta = _meta()
    with tempfile.TemporaryDirectory(prefix="saebench-core-") as tmp:  # SAEBench's own writer builds the output
        path = core.save_single_eval_result(result, meta["eval_id"], meta["sae_lens_version"],
                                            meta["sae_bench_commit_hash"], str(Path(tmp) / "core.json"), sae)
        return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------------------------- sparse probing
def _probe_data(names: tuple[str, ...], n_train: int, n_test: int, seed: int) -> dict:
    return {name: probe_dataset(name, n_train, n_test, seed=seed) for name in names}


def run_sparse_probing(model: Any, sae: Any, config: SAEBenchConfig, sae_id: str = "custom_sae") -> Any:
    """SAEBench's ``sparse_probing`` (``run_eval_single_sae``) on the offline probe datasets."""
    from sae_bench.evals.sparse_probing import main as sp
    from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig

    cfg = config
    eval_cfg = SparseProbingEvalConfig(
        random_seed=cfg.seed, dataset_names=list(cfg.probe_datasets),
        probe_train_set_size=2 * cfg.probe_train_per_class, probe_test_set_size=2 * cfg.probe_test_per_class,
        context_length=cfg.probe_context_length, sae_batch_size=cfg.sae_batch_size,
        llm_batch_size=cfg.llm_batch_size, llm_dtype="float32", model_name=model.cfg.model_name,
        k_values=list(cfg.k_values))
    data = _probe_data(cfg.probe_datasets, cfg.probe_train_per_class, cfg.probe_test_per_class, cfg.seed)
    with local_datasets(data), tempfile.TemporaryDirectory(prefix="saebench-sp-") as art:
        results, per_class = sp.run_eval_single_sae(eval_cfg, sae, model, "cpu", art, save_activations=False)
    meta = _meta()
    return _as_dict(sp.SparseProbingEvalOutput(
        eval_config=eval_cfg, eval_id=meta["eval_id"], datetime_epoch_millis=_now_ms(),
        eval_result_metrics=sp.SparseProbingMetricCategories(
            llm=sp.SparseProbingLlmMetrics(**{k: v for k, v in results.items()
                                               if k.startswith("llm_") and not isinstance(v, dict)}),
            sae=sp.SparseProbingSaeMetrics(**{k: v for k, v in results.items()
                                               if k.startswith("sae_") and not isinstance(v, dict)})),
        eval_result_details=[sp.SparseProbingResultDetail(dataset_name=name, **res)
                             for name, res in results.items() if isinstance(res, dict)],
        eval_result_unstructured=per_class, sae_bench_commit_hash=meta["sae_bench_commit_hash"],
        sae_lens_id=sae_id, sae_lens_release_id=_RELEASE, sae_lens_version=meta["sae_lens_version"],
        sae_cfg_dict=sae.cfg.to_dict()))


# -------------------------------------------------------------------------------------------------------- tpp
def run_tpp(model: Any, sae: Any, config: SAEBenchConfig, sae_id: str = "custom_sae") -> Any:
    """SAEBench's ``tpp`` (``scr_and_tpp.run_eval_single_sae`` with ``perform_scr=False``)."""
    from sae_bench.evals.scr_and_tpp import main as tpp
    from sae_bench.evals.scr_and_tpp.eval_config import ScrAndTppEvalConfig

    cfg = config
    if max(cfg.tpp_n_values) > sae.cfg.d_sae:
        raise ValueError(f"tpp_n_values up to {max(cfg.tpp_n_values)} but the SAE has {sae.cfg.d_sae} latents: "
                         f"use smaller n values")
    eval_cfg = ScrAndTppEvalConfig(
        random_seed=cfg.seed, dataset_names=list(cfg.tpp_datasets), perform_scr=False,
        train_set_size=2 * cfg.tpp_train_per_class, test_set_size=2 * cfg.tpp_test_per_class,
        context_length=cfg.probe_context_length, probe_epochs=cfg.tpp_probe_epochs, sae_batch_size=cfg.sae_batch_size,
        llm_batch_size=cfg.llm_batch_size, llm_dtype="float32", model_name=model.cfg.model_name,
        n_values=list(cfg.tpp_n_values), column1_vals_lookup={})
    data = _probe_data(cfg.tpp_datasets, cfg.tpp_train_per_class, cfg.tpp_test_per_class, cfg.seed)
    import torch

    grad = torch.is_grad_enabled()
    try:
        with local_datasets(data), tempfile.TemporaryDirectory(prefix="saebench-tpp-") as art:
            results, per_class = tpp.run_eval_single_sae(eval_cfg, sae, model, "cpu", art, save_activations=False)
    finally:
        torch.set_grad_enabled(grad)  # SAEBench switches it on and off inside
    meta = _meta()
    return _as_dict(tpp.TppEvalOutput(
        eval_type_id=tpp.EVAL_TYPE_ID_TPP, eval_config=eval_cfg, eval_id=meta["eval_id"],
        datetime_epoch_millis=_now_ms(),
        eval_result_metrics=tpp.TppMetricCategories(
            tpp_metrics=tpp.TppMetrics(**{k: v for k, v in results.items() if not isinstance(v, dict)})),
        eval_result_details=[tpp.TppResultDetail(dataset_name=name, **res)
                             for name, res in results.items() if isinstance(res, dict)],
        eval_result_unstructured=per_class, sae_bench_commit_hash=meta["sae_bench_commit_hash"],
        sae_lens_id=sae_id, sae_lens_release_id=_RELEASE, sae_lens_version=meta["sae_lens_version"],
        sae_cfg_dict=sae.cfg.to_dict()))


# ------------------------------------------------------------------------------------------------- absorption
@contextmanager
def _stop_after(model: Any, layer: int) -> Iterator[None]:
    """``model.run_with_cache`` stops after block ``layer`` for the block's duration (an instance attribute, so
    only this model and only inside the block)."""
    from functools import partial

    had = "run_with_cache" in vars(model)
    model.run_with_cache = partial(type(model).run_with_cache, model, stop_at_layer=layer + 1)
    try:
        yield
    finally:
        if not had:
            del model.run_with_cache


def run_absorption(model: Any, sae: Any, config: SAEBenchConfig, sae_id: str = "custom_sae") -> Any:
    """SAEBench's first-letter ``absorption`` (its k-sparse probing then feature-absorption experiments) on a
    seeded whole-word vocabulary. Raises a ValueError when fewer than ``absorption_min_letters`` letters get a
    probe F1 above ``absorption_min_probe_f1`` (SAEBench then writes no result)."""
    from unittest import mock

    import torch
    from sae_bench.evals.absorption import common, feature_absorption
    from sae_bench.evals.absorption import main as absorption
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
    from sae_bench.evals.absorption.k_sparse_probing import run_k_sparse_probing_experiment

    cfg = config
    hook = str(sae.cfg.hook_name)
    if not re.fullmatch(r"blocks\.\d+\.hook_resid_post", hook):
        raise ValueError(f"SAEBench's absorption eval reads blocks.L.hook_resid_post, but this SAE is on {hook}: "
                         f"run it on a resid_post SAE or leave 'absorption' out of evals")
    layer = int(sae.cfg.hook_layer)
    eval_cfg = AbsorptionEvalConfig(
        model_name=model.cfg.model_name, random_seed=cfg.seed, max_k_value=cfg.absorption_max_k,
        llm_batch_size=cfg.llm_batch_size, llm_dtype="float32", k_sparse_probe_num_epochs=cfg.absorption_probe_epochs,
        min_GT_probe_f1=cfg.absorption_min_probe_f1, min_feats_for_eval=cfg.absorption_min_letters)
    vocab = first_letter_vocab(model.tokenizer, cfg.absorption_words_per_letter, seed=cfg.seed)
    name = f"{_RELEASE}_{sae_id}".replace("/", "_")

    def words(tokenizer: Any, *args: Any, **kwargs: Any) -> list[str]:
        return list(vocab)

    grad = torch.is_grad_enabled()
    _seed(cfg.seed)
    try:
        with tempfile.TemporaryDirectory(prefix="saebench-absorption-") as art, \
                mock.patch.object(common, "get_alpha_tokens", words), \
                mock.patch.object(feature_absorption, "get_alpha_tokens", words), _stop_after(model, layer):
            torch.set_grad_enabled(True)  # as SAEBench's run_eval does
            dirs = {"probes_dir": Path(art) / "probes"}
            probing = run_k_sparse_probing_experiment(
                model=model, sae=sae, layer=layer, sae_name=name, force=True, max_k_value=eval_cfg.max_k_value,
                f1_jump_threshold=eval_cfg.f1_jump_threshold, prompt_template=eval_cfg.prompt_template,
                prompt_token_pos=eval_cfg.prompt_token_pos, device="cpu",
                k_sparse_probe_l1_decay=eval_cfg.k_sparse_probe_l1_decay,
                k_sparse_probe_batch_size=eval_cfg.k_sparse_probe_batch_size,
                k_sparse_probe_num_epochs=eval_cfg.k_sparse_probe_num_epochs,
                eval_batch_size=eval_cfg.eval_k_sparse_probe_batch_size,
                precalc_k_sparse_probe_sae_acts=eval_cfg.precalc_k_sparse_probe_sae_acts,
                experiment_dir=Path(art) / "k_sparse_probing", verbose=cfg.progress, **dirs)
            good = int((probing["f1_probe"] > eval_cfg.min_GT_probe_f1).sum())
            if good < eval_cfg.min_feats_for_eval:
                raise ValueError(f"absorption: only {good} letters have a first-letter probe F1 above "
                                 f"{eval_cfg.min_GT_probe_f1} (SAEBench needs {eval_cfg.min_feats_for_eval}): raise "
                                 f"absorption_words_per_letter or lower absorption_min_letters")
            raw = feature_absorption.run_feature_absortion_experiment(
                model=model, sae=sae, layer=layer, sae_name=name, force=True, max_k_value=eval_cfg.max_k_value,
                feature_split_f1_jump_threshold=eval_cfg.f1_jump_threshold,
                prompt_template=eval_cfg.prompt_template, prompt_token_pos=eval_cfg.prompt_token_pos,
                batch_size=eval_cfg.llm_batch_size, device="cpu", experiment_dir=Path(art) / "feature_absorption",
                sparse_probing_experiment_dir=Path(art) / "k_sparse_probing", **dirs)
    finally:
        torch.set_grad_enabled(grad)
    agg = absorption._aggregate_results_df(raw)
    f1 = dict(zip(probing["letter"], probing["f1_probe"]))
    rows = [row for _, row in agg.iterrows() if f1.get(row["letter"], 0.0) > eval_cfg.min_GT_probe_f1]
    if not rows:
        raise ValueError("absorption: no letter with a good probe has absorption results: raise "
                         "absorption_words_per_letter")

    def sd(values: Sequence[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else 0.0

    fractions = [float(r["mean_absorption_fraction"]) for r in rows]
    full = [float(r["full_absorption_rate"]) for r in rows]
    splits = [int(r["num_split_feats"]) for r in rows]
    meta = _meta()
    return _as_dict(absorption.AbsorptionEvalOutput(
        eval_type_id=absorption.EVAL_TYPE_ID_ABSORPTION, eval_config=eval_cfg, eval_id=meta["eval_id"],
        datetime_epoch_millis=_now_ms(),
        eval_result_metrics=absorption.AbsorptionMetricCategories(mean=absorption.AbsorptionMeanMetrics(
            mean_absorption_fraction_score=statistics.mean(fractions), mean_full_absorption_score=statistics.mean(full),
            mean_num_split_features=statistics.mean(splits), std_dev_absorption_fraction_score=sd(fractions),
            std_dev_full_absorption_score=sd(full), std_dev_num_split_features=sd(splits))),
        eval_result_details=[absorption.AbsorptionResultDetail(
            first_letter=r["letter"], mean_absorption_fraction=float(r["mean_absorption_fraction"]),
            full_absorption_rate=float(r["full_absorption_rate"]), num_full_absorption=int(r["num_full_absorption"]),
            num_probe_true_positives=float(r["num_probe_true_positives"]), num_split_features=int(r["num_split_feats"]))
            for r in rows],
        sae_bench_commit_hash=meta["sae_bench_commit_hash"], sae_lens_id=sae_id, sae_lens_release_id=_RELEASE,
        sae_lens_version=meta["sae_lens_version"], sae_cfg_dict=sae.cfg.to_dict()))


@contextmanager
def _outer_shape_memo_off() -> Iterator[None]:
    """jaxtyping's ``@jaxtyped`` wrappers off for the block (its ``jaxtyping_disable`` switch, restored after).

    jaxtyping 0.3 (this environment's) lets a ``@jaxtyped`` function's dimension memo reach the ``@beartype``
    functions it calls: SAEBench's ``train_probe_on_activations`` binds ``train_dataset_size`` to the texts per
    class, then its own ``train_sklearn_probe`` gets positives + negatives (twice as many) under the same name and
    fails. With the wrappers off, each ``@beartype`` function still checks its own shapes, on its own."""
    from jaxtyping import config as jt_config

    before = jt_config.jaxtyping_disable
    jt_config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jt_config.update("jaxtyping_disable", before)


_RUNNERS = {"core": run_core, "sparse_probing": run_sparse_probing, "absorption": run_absorption, "tpp": run_tpp}


def parse_evals(evals: str | Sequence[str]) -> tuple[str, ...]:
    """``"core,tpp"`` or a sequence -> a tuple of known eval names (ValueError naming the known ones)."""
    names = [e.strip() for e in (evals.split(",") if isinstance(evals, str) else evals) if e.strip()]
    unknown = [e for e in names if e not in _RUNNERS]
    if unknown or not names:
        raise ValueError(f"unknown SAEBench eval(s) {unknown or names}: choose from {', '.join(EVALS)}")
    return tuple(dict.fromkeys(names))


def run_saebench(model: Any, sae: Any, evals: str | tuple[str, ...] = EVALS, config: SAEBenchConfig | None = None,
                 out_dir: str | Path | None = None, sae_id: str = "custom_sae",
                 timings: dict[str, float] | None = None) -> dict[str, dict]:
    """Run SAEBench's ``evals`` on ``sae`` with ``model``; {eval name: SAEBench's JSON output as a dict}.

    With ``out_dir`` each result is written as ``<out_dir>/<eval_type_id>.json`` (atomically) as soon as it is
    done. ``timings``, when given, receives each eval's wall time in seconds."""
    from tqdm.auto import tqdm

    from workbench.core.persist import atomic_write_text

    config = config or SAEBenchConfig()
    names = parse_evals(evals)
    sl = prepare_sae(sae)
    out: dict[str, dict] = {}
    timings = {} if timings is None else timings
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for name in tqdm(names, desc="SAEBench", disable=not config.progress):
        start = time.perf_counter()
        # SAEBench prints its progress notes: to stderr, so a caller's stdout (the CLI's JSON) stays clean
        with _outer_shape_memo_off(), redirect_stdout(sys.stderr):
            out[name] = _RUNNERS[name](model, sl, config, sae_id=sae_id)
        timings[name] = round(time.perf_counter() - start, 2)
        if folder is not None:
            atomic_write_text(folder / f"{OUTPUT_NAMES[name]}.json", json.dumps(out[name], indent=1))
    return out


