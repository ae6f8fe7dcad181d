"""Our SAE trainer against SAELens's ``SAETrainer`` and (TopK) EleutherAI sparsify on the same cached activations;
prints JSON.

    python benchmarks/bench_train.py --store STORE [--heldout-store STORE2] --tokens 2M
    python benchmarks/bench_train.py --harvest --tokens 2M          # harvest Gemma-3-270M activations first
    python benchmarks/bench_train.py --synthetic --tokens 200k      # synthetic data of the real shape

For each architecture (default ``relu`` and ``topk``; d_sae 8192, batch 4096, k 32) both trainers see the same
batches, already in memory (so neither pays for disk reads), in the same process, one after the other. Reported:
tokens/s of each and their ratio; FVU, explained variance, L0 and dead fraction of both SAEs on held-out
activations after the same number of tokens; the GEMM peak of this machine (fp32 and bf16) and the fraction of it
our dense encoder product reaches; and the SAELens settings used.

SAELens gets its best available settings: the same input scaling (``expected_average_only_in`` with our scale
factor, folded at the end), b_dec at the geometric median of the scaled activations, the same learning rate and
schedule (constant, linear decay over the last 20%), the same dead-latent window, fp32, and for TopK the AuxK
coefficient of the paper (1/32); its ``use_sparse_activations`` path fails in backward (aten::view on a sparse
tensor) with this torch, so it runs dense.

EleutherAI ``sparsify`` (``eai-sparsify``, the ``bench`` extra) trains the TopK run too, by its own SAE class,
optimizer and update rule (see ``run_sparsify``), at the same k, d_sae, batch and tokens; ``speedup_vs_sparsify``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.sae.evaluate import evaluate_activations  # noqa: E402
from workbench.sae.model import SAE, geometric_median  # noqa: E402
from workbench.core.hardware import fast_bf16_matmul  # noqa: E402
from workbench.sae.train import (RunSpec, RunState, StoreSource, SyntheticSource, TrainConfig,  # noqa: E402
                             estimate_input_scale, train)
from workbench.sae.cli import parse_count  # noqa: E402


class ListSource:
    """Pre-loaded batches (kept in bf16 to halve memory), handed out as float32."""

    def __init__(self, batches: list[torch.Tensor], metadata, describe: dict):
        self.items, self.metadata, self._describe = batches, metadata, describe
        self.d_model = int(batches[0].shape[1])

    def batches(self, batch_size: int, *, start_tokens: int = 0) -> Iterator[torch.Tensor]:
        assert batch_size == self.items[0].shape[0] and start_tokens % batch_size == 0
        for b in self.items[start_tokens // batch_size:]:
            yield b.to(torch.float32)

    def describe(self) -> dict:
        return self._describe


def load(source, n_tokens: int, batch_size: int) -> list[torch.Tensor]:
    out = []
    for b in source.batches(batch_size):
        out.append(b.to(torch.bfloat16))
        if len(out) * batch_size >= n_tokens:
            break
    if len(out) * batch_size < n_tokens:
        raise SystemExit(f"the source holds only {len(out) * batch_size} tokens, {n_tokens} requested")
    return out


def gemm_gflops(dtype: torch.dtype, b: int, d: int, n: int, repeats: int = 10) -> float:
    """Best rate of a [b, d] x [d, n] product over the weight layouts a trainer may hold (row-major [d, n] and
    the transpose of a row-major [n, d]), each repeated; the peak our encoder GEMM is measured against."""
    x = torch.randn(b, d).to(dtype)
    layouts = (torch.randn(d, n).to(dtype), torch.randn(n, d).to(dtype).t())
    out = torch.empty(b, n, dtype=dtype)
    best = math.inf
    for w in layouts:
        torch.mm(x, w, out=out)
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(x, w, out=out)
            best = min(best, time.perf_counter() - t)
    return 2 * b * d * n / best / 1e9


def gemm_rate(spec: RunSpec, config: TrainConfig, batches: list[torch.Tensor], scale: float, trained: SAE,
              *, dense: bool = False) -> dict:
    """Profile a few steps of the trained SAE (so its codes have their end-of-training sparsity), on the trainer's
    own path choice or forced onto the dense path: GFLOP/s of its full-size GEMMs ([batch, d_in] x [d_in, d_sae]
    and the transposed products of the same size; the sparse path has one, the dense relu path five) and their
    share of the step."""
    from torch.profiler import ProfilerActivity, profile

    sae = trained.folded(1.0 / scale)  # back to the training scale
    if dense:
        config = TrainConfig(**{**config.to_dict(), "sparse_max_density": 0.0})
    state = RunState(spec, sae, config)
    xs = [b.float() * scale for b in batches[:4]]
    state.step(xs[0], 0, contextlib.nullcontext())
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i, x in enumerate(xs[1:]):
            state.step(x, i + 1, contextlib.nullcontext())
    b, d, n = xs[0].shape[0], xs[0].shape[1], spec.d_sae
    full = 2 * b * d * n
    gemm_us, n_gemms = 0.0, 0
    for e in prof.events():
        mats = [list(sh) for sh in (e.input_shapes or []) if len(sh) == 2]
        pairs = zip(mats, mats[1:])  # (m1, m2) of mm / addmm, whatever bias or out tensor surrounds them
        if e.name in ("aten::mm", "aten::addmm") and any(p[1] == q[0] and 2 * p[0] * p[1] * q[1] == full
                                                         for p, q in pairs):
            gemm_us += e.cpu_time_total
            n_gemms += 1
    total_us = sum(e.self_cpu_time_total for e in prof.events())
    steps = len(xs) - 1
    return {"profiled_steps": steps, "sparse_path": bool(state.interval[7].item() == state.interval_steps),
            "l0": state.interval[4].item() / state.interval_steps, "step_ms": total_us / 1000 / steps,
            "full_size_gemms_per_step": n_gemms / steps, "gemm_ms_per_step": gemm_us / 1000 / steps,
            "gemm_gflops": full * n_gemms / (gemm_us / 1e6) / 1e9 if gemm_us else None,
            "gemm_share_of_step": gemm_us / total_us if total_us else None}


def run_ours(spec: RunSpec, config: TrainConfig, source: ListSource, out: Path) -> dict:
    t = time.perf_counter()
    result = train([spec], config, source, out, resume=False, progress=False)
    wall = time.perf_counter() - t
    run = next(iter(result.runs.values()))
    log = [json.loads(line) for line in (out / spec.resolved_name / "metrics.jsonl").read_text().splitlines()]
    intervals = [e for e in log if "sparse_step_fraction" in e]
    steps = [e["step"] - p["step"] for p, e in zip([{"step": 0}] + intervals, intervals)]
    sparse_steps = sum(n * e["sparse_step_fraction"] for n, e in zip(steps, intervals))
    return {"sae": run.sae, "tokens_per_s": result.tokens_per_s, "wall_s": wall, "scale": result.input_scale,
            "train_metrics": {k: run.metrics.get(k) for k in ("fvu", "l0", "dead_fraction")},
            "sparse_step_fraction": sparse_steps / max(1, sum(steps)),
            "l0_by_interval": [round(e["l0"], 1) for e in intervals]}


def run_saelens(arch: str, spec: RunSpec, config: TrainConfig, source: ListSource, scale: float,
                b_dec: torch.Tensor, sparse_activations: bool) -> tuple[dict, dict]:
    from sae_lens import (LoggingConfig, StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE,
                          TopKTrainingSAEConfig)
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from workbench.sae.io import from_sae_lens

    d_in, steps = source.d_model, config.total_steps
    if arch == "topk":
        sae_cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=spec.d_sae, k=int(spec.k), aux_loss_coefficient=1 / 32,
                                        use_sparse_activations=sparse_activations,
                                        normalize_activations="expected_average_only_in")
        sae = TopKTrainingSAE(sae_cfg)
    else:
        sae_cfg = StandardTrainingSAEConfig(d_in=d_in, d_sae=spec.d_sae, l1_coefficient=spec.sae_config(d_in)
                                            .l1_coefficient, l1_warm_up_steps=int(round(0.05 * steps)),
                                            normalize_activations="expected_average_only_in")
        sae = StandardTrainingSAE(sae_cfg)
    with torch.no_grad():
        sae.b_dec.copy_(b_dec)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * config.batch_size, train_batch_size_samples=config.batch_size,
        lr=spec.resolved_lr, lr_end=spec.resolved_lr, lr_scheduler_name="constant", lr_warm_up_steps=0,
        lr_decay_steps=int(round(0.2 * steps)), adam_beta1=0.9, adam_beta2=0.999, device="cpu", autocast=False,
        dead_feature_window=max(1, config.resolved_dead_window // config.batch_size), feature_sampling_window=2000,
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False, logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=source.batches(config.batch_size))
    trainer.activation_scaler.scaling_factor = scale  # skip its estimate: use ours, folded at the end
    t = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t
    settings = {"config": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                           for k, v in sae_cfg.to_dict().items() if k != "metadata"},
                "trainer": {k: getattr(trainer_cfg, k) for k in ("lr", "lr_scheduler_name", "lr_decay_steps",
                                                               "dead_feature_window", "autocast")},
                "b_dec_init": "geometric median of scaled activations", "input_scaling": "our scale factor"}
    return {"sae": from_sae_lens(sae), "tokens_per_s": steps * config.batch_size / wall, "wall_s": wall}, settings


def run_sparsify(spec: RunSpec, config: TrainConfig, source: ListSource, scale: float) -> tuple[dict, dict]:
    """EleutherAI sparsify's TopK SAE trained by the inner loop of its ``Trainer`` (``loss_fn="fvu"``) on the same
    in-memory batches: its ``SparseCoder`` (fused encoder, sparse decoder), its default optimizer (schedule-free
    SignSGD, momentum 0.95, lr 5e-3 / sqrt(d_sae / 2^14)), b_dec at the first batch's mean, unit-norm decoder
    rows and the parallel-gradient removal each step, AuxK off (its default ``auxk_alpha=0``). Inputs get our
    scale factor (FVU does not depend on it; the sign optimizer's step sizes do), folded back at the end. Its
    ``Trainer`` itself needs an HF model and a token dataset; the step below is the part that touches the SAE."""
    import io
    from contextlib import redirect_stdout

    from workbench.sae.model import SAEConfig

    with redirect_stdout(io.StringIO()):  # sparsify prints "Triton not installed ..." on import; keep stdout JSON
        from schedulefree import ScheduleFreeWrapper
        from sparsify import SparseCoder, SparseCoderConfig
        from sparsify.sign_sgd import SignSGD

    d_in, steps = source.d_model, config.total_steps
    torch.manual_seed(0)
    with redirect_stdout(io.StringIO()):
        coder = SparseCoder(d_in, SparseCoderConfig(num_latents=spec.d_sae, k=int(spec.k)), "cpu",
                            dtype=torch.float32)
    lr = 5e-3 / (spec.d_sae / 2**14) ** 0.5
    opt = ScheduleFreeWrapper(SignSGD([dict(params=coder.parameters(), lr=lr)]), momentum=0.95)
    opt.train()
    batches = source.batches(config.batch_size)
    t = time.perf_counter()
    for step, x in zip(range(steps), batches):
        x = x * scale
        if step == 0:
            coder.b_dec.data = x.mean(0)
        coder.set_decoder_norm_to_unit_norm()
        out = coder(x)
        out.fvu.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
    wall = time.perf_counter() - t
    opt.eval()  # schedule-free: evaluate the averaged weights
    coder.set_decoder_norm_to_unit_norm()
    ours = SAE(SAEConfig("topk", d_in, spec.d_sae, k=int(spec.k)), seed=None)
    with torch.no_grad():
        ours.W_enc.copy_(coder.encoder.weight.detach().t())
        ours.b_enc.copy_(coder.encoder.bias.detach())
        ours.W_dec.copy_(coder.W_dec.detach())
        ours.b_dec.copy_(coder.b_dec.detach())
    settings = {"optimizer": "ScheduleFreeWrapper(SignSGD, momentum=0.95)", "lr": lr, "auxk_alpha": 0.0,
                "loss": "fvu", "b_dec_init": "first batch mean", "input_scaling": "our scale factor"}
    return {"sae": ours.folded(scale), "tokens_per_s": steps * config.batch_size / wall, "wall_s": wall}, settings


def evaluate(sae: SAE, heldout: list[torch.Tensor]) -> dict:
    m = evaluate_activations(sae, (b.float() for b in heldout))
    return {"fvu": m.fvu, "explained_variance": m.explained_variance, "l0": m.l0, "dead_fraction": m.dead_fraction,
            "dense_fraction": m.dense_fraction, "heldout_tokens": m.n_tokens}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="activation store of Gemma-3-270M (training stream)")
    p.add_argument("--heldout-store", help="separate store for evaluation (default: hold out from --store)")
    p.add_argument("--allow-incomplete", action="store_true", help="read a store whose harvest is unfinished")
    p.add_argument("--harvest", action="store_true", help="harvest the stores with workbench.data.harvest first")
    p.add_argument("--synthetic", action="store_true", help="synthetic activations of the real shape")
    p.add_argument("--archs", nargs="+", default=["relu", "topk"])
    p.add_argument("--d-sae", type=int, default=8192)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--l1", type=float, default=None, help="relu lambda (default: SAEConfig's)")
    p.add_argument("--lr", type=float, default=None,
                   help="our learning rate (default: the recipe's, scaled for long runs; docs/methods.md §3)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--tokens", type=parse_count, default=2_000_000, help="training tokens, both trainers")
    p.add_argument("--heldout-tokens", type=parse_count, default=122_880)
    p.add_argument("--skip-saelens", action="store_true")
    p.add_argument("--skip-sparsify", action="store_true", help="skip EleutherAI sparsify (topk runs only)")
    p.add_argument("--selection", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="precision of our selection GEMM")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    bs = args.batch_size
    if args.synthetic:
        src = SyntheticSource(640, 16384, active=48, seed=0, mean_norm=4.0, noise=0.05, scale=1500.0, zipf=0.7)
        held_src = SyntheticSource(640, 16384, active=48, seed=0, mean_norm=4.0, noise=0.05, scale=1500.0, zipf=0.7)
        train_batches = load(src, args.tokens, bs)
        heldout = [held_src.batch(10_000_000 + i, bs) for i in range(max(1, args.heldout_tokens // bs))]
        meta, desc = src.metadata, src.describe()
    else:
        store, held = args.store, args.heldout_store
        if args.harvest:
            from workbench.data.corpus import CorpusSpec
            from workbench.data.harvest import HarvestSpec, harvest_cached

            store = str(harvest_cached(HarvestSpec(n_tokens=int(args.tokens * 1.02) + 65536)).path)
            held = str(harvest_cached(HarvestSpec(n_tokens=args.heldout_tokens + 4096,
                                                  corpus=CorpusSpec(split="heldout"))).path)
        if not store:
            raise SystemExit("give --store PATH, --harvest or --synthetic")
        if held:
            train_src = StoreSource(store, seed=0, allow_incomplete=args.allow_incomplete)
            heldout = load(StoreSource(held, seed=0), args.heldout_tokens - args.heldout_tokens % bs, bs)
        else:
            train_src = StoreSource(store, seed=0, holdout_tokens=args.heldout_tokens,
                                    allow_incomplete=args.allow_incomplete)
            heldout = [b.to(torch.bfloat16) for b in train_src.heldout_batches(bs)]
        train_batches = load(train_src, args.tokens, bs)
        meta, desc = train_src.metadata, train_src.describe()
    source = ListSource(train_batches, meta, desc)
    sample = torch.cat([b.float() for b in train_batches[:16]])
    scale = estimate_input_scale(sample)
    b_dec = geometric_median(sample[:16384] * scale).float()

    report: dict = {"machine": {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                                "load_average_at_start": os.getloadavg(), "torch": torch.__version__,
                                "cpu_fast_bf16": fast_bf16_matmul("cpu")},
                    "data": {"source": desc, "train_tokens": len(train_batches) * bs,
                             "heldout_tokens": sum(b.shape[0] for b in heldout), "input_scale": scale},
                    "gemm_peak_gflops": {"float32": gemm_gflops(torch.float32, bs, source.d_model, args.d_sae),
                                         "bfloat16": gemm_gflops(torch.bfloat16, bs, source.d_model, args.d_sae)},
                    "results": {}}
    for arch in args.archs:
        spec = RunSpec(arch, args.d_sae, k=args.k, l1_coefficient=args.l1 if arch == "relu" else None, lr=args.lr)
        config = TrainConfig(total_tokens=len(train_batches) * bs, batch_size=bs, checkpoint_every=0, log_every=20,
                             selection_dtype=args.selection)
        entry: dict = {"d_sae": args.d_sae, "batch_size": bs, "tokens": config.total_steps * bs,
                       "lr": spec.resolved_lr, "dead_window_tokens": config.resolved_dead_window}
        if arch in ("topk", "batchtopk", "matryoshka"):
            entry["k"] = args.k
        else:
            entry["l1_coefficient"] = spec.sae_config(source.d_model).l1_coefficient
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_ours(spec, config, source, Path(tmp))
        entry["ours"] = {"tokens_per_s": ours["tokens_per_s"], "wall_s": ours["wall_s"],
                         "selection_dtype": str(config.resolved_selection_dtype or "float32"),
                         "sparse_max_density": config.sparse_max_density,
                         "sparse_step_fraction": ours["sparse_step_fraction"], "l0_by_interval": ours["l0_by_interval"],
                         "heldout": evaluate(ours["sae"], heldout), "train_last_interval": ours["train_metrics"]}
        entry["ours"]["gemms_end_of_training"] = gemm_rate(spec, config, train_batches[-5:], scale, ours["sae"])
        if arch == "relu":  # the early, dense phase of a relu run
            entry["ours"]["gemms_dense_path"] = gemm_rate(spec, config, train_batches[-5:], scale, ours["sae"],
                                                          dense=True)
        if not args.skip_saelens:
            theirs, settings = run_saelens(arch, spec, config, source, scale, b_dec, sparse_activations=False)
            entry["saelens"] = {"tokens_per_s": theirs["tokens_per_s"], "wall_s": theirs["wall_s"],
                                "heldout": evaluate(theirs["sae"], heldout), "settings": settings}
            entry["speedup"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
        if arch == "topk" and not args.skip_sparsify:
            try:
                theirs, settings = run_sparsify(spec, config, source, scale)
            except ImportError as err:
                entry["sparsify"] = {"error": f"{err}: pip install -e '.[bench]' (see pyproject.toml)"}
            else:
                entry["sparsify"] = {"tokens_per_s": theirs["tokens_per_s"], "wall_s": theirs["wall_s"],
                                     "heldout": evaluate(theirs["sae"], heldout), "settings": settings}
                entry["speedup_vs_sparsify"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
        report["results"][arch] = entry
        print(json.dumps({arch: entry}, default=str),
              file=sys.stderr, flush=True)
    peak = report["gemm_peak_gflops"]
    for entry in report["results"].values():
        for key in ("gemms_end_of_training", "gemms_dense_path"):
            part = entry["ours"].get(key)
            if part and part.get("gemm_gflops"):  # the sparse path selects in bf16; the dense path is float32
                low = part["sparse_path"] and entry["ours"]["selection_dtype"] != "float32"
                part["fraction_of_gemm_peak"] = part["gemm_gflops"] / peak["bfloat16" if low else "float32"]
    report["machine"]["load_average_at_end"] = os.getloadavg()
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
