"""Training several SAEs from one stream of activation batches (sizes x sparsities x architectures, one pass).

    from workbench.sae.train import RunSpec, TrainConfig, StoreSource, train
    result = train([RunSpec("topk", 8192, k=32), RunSpec("relu", 8192)], TrainConfig(total_tokens=2_000_000),
                   StoreSource("path/to/store"), out_dir="runs/gemma-l6")

What happens:

- Input scaling: one scalar ``s`` with E||s x||^2 = d_in, estimated from the first batches of the stream; every
  SAE trains on ``s x`` and is saved with ``s`` folded into its weights (it then takes raw activations).
- b_dec starts at the geometric median (or the mean) of a sample of scaled activations.
- Optimisation: Adam (fused where available), gradient-norm clipping, a constant lr decaying linearly to 0 over
  the last ``lr_decay_fraction`` of steps, a sparsity coefficient (relu's lambda, jumprelu's L0 weight) warming
  up linearly over the first ``sparsity_warmup_fraction``. Unit-norm architectures have the decoder gradient's
  component along each row removed, and rows renormalised after each step.
- Dead latents: a latent is dead when it has not fired in the last ``dead_window_tokens`` tokens (10M in the
  paper, scaled down to a tenth of the run by default; the window used is logged). TopK-family AuxK uses them.
- Epochs: ``TrainConfig(total_tokens=per_epoch, epochs=N)`` makes N passes over a cached store (harvesting is the
  expensive part, ~1.4k tokens/s on 2 cores, against 15-29k for training). Epoch 0 reads the source's usual order,
  every later one a fresh permutation seeded by (seed, epoch); held-out tokens are never trained on. At the end of
  each epoch every SAE's FVU / L0 on ``heldout_eval_tokens`` held-out tokens and as many training tokens is logged
  (``"event": "epoch"`` in metrics.jsonl, the progress bar, ``summary.json``): a growing gap is overfitting.
- Output under ``out_dir``: ``train_config.json``; ``<run>/metrics.jsonl`` (one JSON object a line);
  ``<run>/sae/`` the final SAE in SAELens format; ``summary.json``; ``checkpoints/`` (see :class:`Checkpointer`).
- Resume: ``train(..., resume=True)`` continues from the latest checkpoint, also in the middle of an epoch; the
  batches, schedules and optimiser state continue exactly, so the final SAEs equal those of an uninterrupted run
  with the same seed.
- A NaN or inf loss stops training with :class:`TrainingDiverged`, keeping the last good checkpoint.
- SIGINT / SIGTERM finish the current step, write a checkpoint and raise
  :class:`workbench.core.signals.Interrupted` (the command line exits 130 / 143 with one line saying how to
  resume); metrics.jsonl lines after the checkpoint a run resumes from are dropped, so no step repeats.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.errors import ConfigError, InputError
from workbench.core.persist import atomic_write_text
from workbench.core.signals import StopSignals
from workbench.sae.distributed import Distributed
from workbench.sae.checkpoint import CHECKPOINT_FORMAT, CheckpointError, Checkpointer, RunState, trim_log
from workbench.sae.io import save_sae
from workbench.sae.model import SAE, SAEMetadata
from workbench.sae.sources import (BatchSource, StoreSource, SyntheticSource, TensorSource, epoch_seed,
                                   estimate_input_scale, take_tokens, takes_epoch)
from workbench.sae.train_config import (RESUME_FREE_SETTINGS, RunSpec, TrainConfig, default_lr, lr_multiplier,
                                        warmup_multiplier)

__all__ = ["BatchSource", "CheckpointError", "Checkpointer", "RunResult", "RunSpec", "RunState", "StoreSource",
           "SyntheticSource", "TensorSource", "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged",
           "default_lr", "epoch_seed", "estimate_input_scale", "lr_multiplier", "take_tokens", "train",
           "training_dir", "warmup_multiplier"]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the message names the run, the step and the checkpoint that was kept."""


# ----------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    name: str
    sae: SAE  # folded: takes raw activations
    path: Path  # the SAELens-format folder
    metrics: dict  # the last logged metrics
    epochs: list = field(default_factory=list)  # one record per finished epoch (see Trainer._end_epoch)


@dataclass
class TrainResult:
    runs: dict[str, RunResult]
    input_scale: float
    tokens: int
    steps: int
    dead_window_tokens: int
    tokens_per_s: float  # training throughput over this call's steps (all SAEs together)

    def __repr__(self) -> str:
        return (f"TrainResult({len(self.runs)} SAE(s): {', '.join(self.runs)}; {self.tokens:,} tokens, "
                f"{self.steps} steps)")

    def _repr_html_(self) -> str:
        from workbench.core.html_repr import repr_table

        keys = ("explained_variance", "l0", "dead_fraction")
        rows = [[name, *(r.metrics.get(k) for k in keys), str(r.path)] for name, r in self.runs.items()]
        return repr_table(repr(self), ["SAE", *keys, "folder"], rows,
                          f"{self.tokens_per_s:,.0f} tokens/s over this call's steps")


def _fingerprint(config: TrainConfig, specs: Sequence[RunSpec], d_in: int, source: dict) -> dict:
    train_part = {k: v for k, v in config.to_dict().items() if k not in RESUME_FREE_SETTINGS}
    if train_part.get("epochs") == 1:  # runs from before epochs existed keep their key and their checkpoints
        del train_part["epochs"]
    runs = [{"name": s.resolved_name, "lr": s.resolved_lr, "sae": s.sae_config(d_in).to_dict()} for s in specs]
    return {"train": train_part, "runs": runs, "source": source}


def training_dir(base: str | Path, specs: Sequence[RunSpec], config: TrainConfig, source: BatchSource) -> Path:
    """``base/sae-<hash>``, the hash taken over everything that defines the run (configs, resolved SAE settings,
    data source), so that a changed setting, or a changed default after an upgrade, trains afresh next to the old
    run instead of failing to resume from its checkpoints."""
    fp = _fingerprint(config, specs, int(source.d_model), source.describe())
    key = hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(base) / f"sae-{key}"


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _diff_keys(x, y, f"{prefix}{i}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class Trainer:
    """Trains every :class:`RunSpec` on the same batches of a :class:`BatchSource`, writing under ``out_dir``."""

    def __init__(self, specs: Sequence[RunSpec], config: TrainConfig, out_dir: str | Path,
                 distributed: Distributed | None = None):
        if not specs:
            raise ConfigError("no SAE to train: give at least one RunSpec")
        names = [s.resolved_name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"run names must be unique, {dupes} repeat: set RunSpec.name")
        self.specs, self.config = list(specs), config
        self.out_dir = Path(out_dir)
        # several processes (torchrun): data parallel, or the SAEs spread over ranks (see workbench.sae.distributed)
        self.dist = distributed or Distributed.current()
        self.dist.runs(len(self.specs))  # ValueError now if the SAEs cannot be spread over the ranks
        ckpt_root = self.out_dir / "checkpoints"
        if self.dist.active and self.dist.mode == "runs":
            ckpt_root = ckpt_root / f"rank{self.dist.rank}-of-{self.dist.world_size}"
        self.checkpointer = Checkpointer(ckpt_root, keep=config.keep_checkpoints)
        self.device = config.resolved_device
        self.runs: list[RunState] = []
        self.input_scale = 1.0
        self.step = 0
        self.last_checkpoint: Path | None = None
        self._wandb: Any = None  # a wandb run, when wandb_project is set
        self.epoch_log: dict[str, list[dict]] = {self.specs[i].resolved_name: [] for i in self.dist.runs(len(specs))}
        self._eval_samples: dict[str, Tensor] | None = None

    # ----- setup -----

    def _build_runs(self, d_in: int, metadata: SAEMetadata) -> None:
        self.runs = []
        for i in self.dist.runs(len(self.specs)):  # every SAE keeps the seed of its place in the whole list
            spec = self.specs[i]
            seed = self.config.seed + 1000 * i
            build = getattr(spec, "build_sae", None)  # a RunSpec subclass may build an SAE subclass (crosscoders)
            sae = (build(d_in, metadata, seed=seed, device=self.device) if build is not None
                   else SAE(spec.sae_config(d_in), metadata, seed=seed, device=self.device))
            run = RunState(spec, sae, self.config)
            run.dist = self.dist if self.dist.data_parallel else None
            attach = getattr(sae, "attach_optimizer", None)  # lets a model keep masked optimizer state at zero (DFC)
            if attach is not None:
                attach(run.optimizer)
            self.runs.append(run)

    def _check_source(self, source: BatchSource) -> int:
        d_in = int(source.d_model)
        for spec in self.specs:
            wanted = spec.d_in
            if wanted is not None and int(wanted) != d_in:
                raise InputError(f"SAE {spec.resolved_name!r} was configured with d_in={wanted} but the activations "
                                 f"have d_model={d_in} ({source.describe()}): train on a store of the matching "
                                 f"model/hook, or drop d_in")
        return d_in

    def _fresh_start(self, source: BatchSource, d_in: int) -> None:
        cfg = self.config
        self._build_runs(d_in, source.metadata)
        n_sample = max(cfg.scale_estimate_tokens, cfg.b_dec_init_tokens, 1)
        sample = take_tokens(source.batches(cfg.batch_size, start_tokens=0), n_sample)
        self._check_batch(sample, d_in, source)
        self.input_scale = estimate_input_scale(sample[: cfg.scale_estimate_tokens])
        init_sample = (sample[: cfg.b_dec_init_tokens] * self.input_scale).to(self.device)
        for run in self.runs:
            run.sae.init_from_data(init_sample, cfg.b_dec_init)  # type: ignore[arg-type]
        self.step = 0

    def _resume(self, path: Path, source: BatchSource, d_in: int, fingerprint: dict) -> None:
        state = self.checkpointer.read_state(path)
        saved_d_in = ((state.get("fingerprint") or {}).get("runs") or [{}])[0].get("sae", {}).get("d_in")
        if saved_d_in is not None and int(saved_d_in) != d_in:
            raise CheckpointError(f"checkpoint {path} holds SAEs with d_in={saved_d_in} but the activations have "
                                  f"d_model={d_in}: resume with the store it was trained on, or use another out_dir")
        diff = _diff_keys(state.get("fingerprint"), fingerprint)
        if diff:
            raise CheckpointError(f"checkpoint {path} was written for a different configuration (differs in: "
                                  f"{', '.join(diff[:8])}): use another out_dir, or start afresh (resume=False)")
        self._build_runs(d_in, source.metadata)
        for run in self.runs:
            d = path / run.name
            run.load_sae_tensors(self.checkpointer.read_tensors(d / "sae.safetensors"), str(d / "sae.safetensors"))
            run.load_optimizer_tensors(self.checkpointer.read_tensors(d / "optimizer.safetensors"),
                                       str(d / "optimizer.safetensors"))
            run.load_tracker_tensors(self.checkpointer.read_tensors(d / "tracker.safetensors"),
                                     str(d / "tracker.safetensors"))
            run.last = dict((state.get("runs") or {}).get(run.name) or {})
            self.epoch_log[run.name] = list((state.get("epochs") or {}).get(run.name) or [])
        self.input_scale = float(state["input_scale"])
        self.step = int(state["step"])
        self.last_checkpoint = path

    @staticmethod
    def _check_batch(batch: Tensor, d_in: int, source: BatchSource) -> None:
        if batch.dim() != 2 or batch.shape[1] != d_in:
            raise InputError(f"the activation source yields batches of shape {tuple(batch.shape)} but declares "
                             f"d_model={d_in} ({source.describe()})")

    # ----- logging -----

    def _open_logs(self, resumed: bool) -> None:
        for run in self.runs:
            d = self.out_dir / run.name
            d.mkdir(parents=True, exist_ok=True)
            run.log_path = d / "metrics.jsonl"
            if resumed and self.dist.writes_shared_files:  # lines after the checkpoint resumed from: drop them
                trim_log(run.log_path, self.step)
            event = {"event": "resume" if resumed else "start", "run": run.name, "step": self.step,
                     "sae": run.sae.cfg.to_dict(), "lr": run.base_lr, "train": self.config.to_dict(),
                     "dead_window_tokens": self.config.resolved_dead_window, "input_scale": self.input_scale,
                     "time": time.time()}
            self._log(run, event)
        if self.config.wandb_project and self._wandb is None:
            try:
                import wandb
            except ImportError as err:
                raise ConfigError("wandb_project is set but wandb is not installed: pip install wandb, or leave "
                                 "wandb_project unset") from err
            self._wandb = wandb.init(project=self.config.wandb_project, dir=str(self.out_dir),
                                     config={"train": self.config.to_dict(),
                                             "runs": [r.sae.cfg.to_dict() for r in self.runs]})

    def _log(self, run: RunState, record: dict) -> None:
        if not self.dist.writes_shared_files:  # data parallel: rank 0 logs for all
            return
        with open(run.log_path, "a") as fh:
            fh.write(json.dumps(record, allow_nan=True) + "\n")

    def _state(self, fingerprint: dict) -> dict:
        return {"format": CHECKPOINT_FORMAT, "step": self.step, "tokens": self.step * self.config.batch_size,
                "input_scale": self.input_scale, "fingerprint": fingerprint,
                "runs": {r.name: r.last for r in self.runs}, "epochs": self.epoch_log, "time": time.time()}

    def _checkpoint(self, fingerprint: dict) -> None:
        for run in self.runs:
            bad = [n for n, p in zip(run.param_names, run.params) if not bool(torch.isfinite(p).all())]
            if bad:
                self._diverged(run, f"non-finite parameters {bad}")
        if self.dist.writes_shared_files:
            self.last_checkpoint = self.checkpointer.save(self.step, self._state(fingerprint), self.runs)
        else:  # data parallel: rank 0 wrote the same state
            self.last_checkpoint = self.checkpointer.root / f"step_{self.step:08d}"

    def _diverged(self, run: RunState, what: str) -> None:
        tokens = self.step * self.config.batch_size
        kept = (f"the last good checkpoint {self.last_checkpoint} was kept" if self.last_checkpoint else
                "no checkpoint had been written yet")
        self._log(run, {"event": "nonfinite", "step": self.step, "tokens": tokens, "what": what})
        raise TrainingDiverged(
            f"training stopped at step {self.step} ({tokens} tokens): SAE {run.name!r} has {what}; {kept} and nothing "
            f"was written after it. Check the activations for NaN/inf, lower the learning rate or train in float32 "
            f"(no bf16), then resume or restart.")

    # ----- the loop -----

    def fit(self, source: BatchSource, *, resume: bool = True, progress: bool = True) -> TrainResult:
        cfg = self.config
        d_in = self._check_source(source)
        self._check_epochs(source)
        fingerprint = _fingerprint(cfg, self.specs, d_in, source.describe())
        latest = self.checkpointer.latest() if resume else None
        self.dist.barrier()  # every rank has looked for a checkpoint before rank 0 may clear the folder
        if latest is not None:
            self._resume(latest, source, d_in, fingerprint)
        else:
            if self.dist.writes_shared_files:
                if self.checkpointer.root.exists():  # resume=False, or a run that died before its first checkpoint
                    shutil.rmtree(self.checkpointer.root)
                for run_name in self.epoch_log:
                    (self.out_dir / run_name / "metrics.jsonl").unlink(missing_ok=True)
            self._fresh_start(source, d_in)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.rank == 0:
            atomic_write_text(self.out_dir / "train_config.json", json.dumps(
                {"train": cfg.to_dict(), "runs": [asdict(s) for s in self.specs], "source": source.describe(),
                 "input_scale": self.input_scale, "dead_window_tokens": cfg.resolved_dead_window,
                 "processes": self.dist.world_size, "distributed_mode": self.dist.mode}, indent=2))
        self._open_logs(resumed=latest is not None)

        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        total, per_epoch = cfg.total_steps, cfg.steps_per_epoch
        start_step = self.step
        self._progress = progress
        bar = tqdm(total=total * cfg.batch_size, initial=self.step * cfg.batch_size, unit="tok", unit_scale=True,
                   disable=not progress or self.dist.rank != 0, desc="train", dynamic_ncols=True)
        t0 = time.perf_counter()
        stop = StopSignals(what=f"training in {self.out_dir}")  # SIGINT/SIGTERM: checkpoint, then stop
        stop.__enter__()
        try:
            while self.step < total:
                epoch, offset = divmod(self.step, per_epoch)
                epoch_end = (epoch + 1) * per_epoch
                batches = self._epoch_batches(source, epoch, offset * cfg.batch_size)
                while self.step < epoch_end:
                    batch = next(batches, None)
                    if batch is None:
                        done = (self.step - epoch * per_epoch) * cfg.batch_size
                        raise InputError(f"the activation source ran out after {done} tokens of epoch {epoch + 1} "
                                         f"but an epoch asks for {per_epoch * cfg.batch_size} (total_tokens): "
                                         f"harvest more tokens or lower total_tokens")
                    if self.step == start_step:
                        self._check_batch(batch, d_in, source)
                    x = self.dist.local_rows(batch).to(self.device, torch.float32, non_blocking=True) * self.input_scale
                    losses = [run.step(x, self.step, autocast) for run in self.runs]
                    finite = torch.isfinite(torch.stack(losses))
                    if not bool(finite.all()):
                        bad = self.runs[int((~finite).nonzero()[0, 0])]
                        self._diverged(bad, f"a non-finite loss ({float(losses[self.runs.index(bad)]):g})")
                    self.step += 1
                    bar.update(cfg.batch_size)
                    if self.step % cfg.log_every == 0 or self.step == epoch_end:
                        self._log_interval(bar, t0, start_step)
                    if self.step == epoch_end:
                        self._end_epoch(epoch, source, bar)
                    if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or self.step == total:
                        self._checkpoint(fingerprint)
                    if self.dist.any_flag(stop.requested):  # all ranks stop after the same step
                        self._stop(stop, fingerprint)
                del batches  # frees the epoch's read buffer before the next epoch allocates its own
        finally:
            stop.__exit__(None, None, None)
            bar.close()
        elapsed = time.perf_counter() - t0
        rate = (self.step - start_step) * cfg.batch_size / elapsed if elapsed > 0 else float("nan")
        return self._finish(rate)

    def _stop(self, stop: StopSignals, fingerprint: dict) -> None:
        """A signal arrived: checkpoint the finished step (unless it just was) and raise :class:`Interrupted`."""
        if self.last_checkpoint is None or self.last_checkpoint.name != f"step_{self.step:08d}":
            self._checkpoint(fingerprint)
        raise stop.interrupted(f"training stopped at step {self.step} of {self.config.total_steps}, checkpoint "
                               f"{self.last_checkpoint} written")

    def _check_epochs(self, source: BatchSource) -> None:
        """Refuse, before anything is written, a run whose epochs the source cannot serve."""
        cfg = self.config
        if cfg.epochs > 1 and not takes_epoch(source):
            raise ConfigError(f"epochs={cfg.epochs} needs a source that reshuffles its tokens each epoch (StoreSource, "
                             f"TensorSource); {type(source).__name__} ({source.describe()}) serves a single stream: "
                             f"train with epochs=1 and total_tokens covering the whole run")
        n_train = getattr(source, "n_train_tokens", None)
        epoch_tokens = cfg.steps_per_epoch * cfg.batch_size
        if n_train is not None and epoch_tokens > int(n_train):
            held = int(getattr(source, "holdout_tokens", 0) or 0)
            fit = int(n_train) // cfg.batch_size * cfg.batch_size
            raise ConfigError(
                f"one epoch of total_tokens={cfg.total_tokens} ({cfg.steps_per_epoch} batches of {cfg.batch_size}) "
                f"does not fit in the source's {int(n_train)} training tokens"
                + (f" ({held} more are held out)" if held else "")
                + (f": set total_tokens <= {fit} (tokens per epoch) and raise epochs to train longer, or harvest "
                   f"more tokens" if fit else ": harvest more tokens or hold fewer out"))

    def _epoch_batches(self, source: BatchSource, epoch: int, start_tokens: int) -> Iterator[Tensor]:
        if self.config.epochs == 1:  # any BatchSource, including ones that know nothing of epochs
            return source.batches(self.config.batch_size, start_tokens=start_tokens)
        return source.batches(self.config.batch_size, start_tokens=start_tokens, epoch=epoch)  # type: ignore[call-arg]

    def _eval_sets(self, source: BatchSource) -> dict[str, Tensor]:
        """The fixed token samples every epoch end is evaluated on (read once): the first ``heldout_eval_tokens``
        held-out tokens, if the source has any, and as many training tokens (the head of epoch 0)."""
        if self._eval_samples is None:
            cfg, out = self.config, {}
            n = int(cfg.heldout_eval_tokens)
            if n > 0:
                held = int(getattr(source, "holdout_tokens", 0) or 0)
                if held > 0 and hasattr(source, "heldout_batches"):
                    b = min(cfg.batch_size, n, held)
                    with contextlib.suppress(ValueError):  # fewer held-out tokens than one batch: none
                        out["heldout"] = take_tokens(source.heldout_batches(b), n)
                out["train"] = take_tokens(source.batches(cfg.batch_size, start_tokens=0), n)
            self._eval_samples = out
        return self._eval_samples

    def _end_epoch(self, epoch: int, source: BatchSource, bar) -> None:
        """Log the FVU / L0 of every SAE at the end of an epoch, on held-out and on training tokens (the gap between
        the two is the overfitting), into metrics.jsonl (``"event": "epoch"``), the progress bar and the summary."""
        from workbench.sae.evaluate import evaluate_activations

        cfg = self.config
        samples = self._eval_sets(source)
        lines = []
        for run in self.runs:
            record: dict[str, Any] = {"event": "epoch", "epoch": epoch + 1, "epochs": cfg.epochs, "step": self.step,
                                      "tokens": self.step * cfg.batch_size}
            for part, sample in samples.items():
                m = evaluate_activations(run.sae, sample.split(2048), input_scale=self.input_scale)
                if part == "heldout" or "heldout" not in samples:  # saved as sparsity.safetensors at the end
                    run.final_density = m.density
                record.update({f"{part}_fvu": m.fvu, f"{part}_explained_variance": m.explained_variance,
                               f"{part}_l0": m.l0, f"{part}_dead_fraction": m.dead_fraction,
                               f"{part}_tokens": m.n_tokens})
            self.epoch_log[run.name].append(record)
            self._log(run, record)
            if self._wandb is not None:
                self._wandb.log({f"{run.name}/{k}": v for k, v in record.items() if k != "event"}, step=self.step)
            if "heldout_fvu" in record:
                lines.append(f"{run.name}: held-out FVU {record['heldout_fvu']:.4f} (train {record['train_fvu']:.4f}) "
                             f"L0 {record['heldout_l0']:.1f}")
            elif "train_fvu" in record:
                lines.append(f"{run.name}: FVU {record['train_fvu']:.4f} on training tokens (no held-out tokens) "
                             f"L0 {record['train_l0']:.1f}")
        if getattr(self, "_progress", False) and lines:
            bar.write(f"epoch {epoch + 1}/{cfg.epochs} | " + " | ".join(lines))

    def _log_interval(self, bar, t0: float, start_step: int) -> None:
        elapsed = time.perf_counter() - t0
        rate = (self.step - start_step) * self.config.batch_size / max(elapsed, 1e-9)
        parts = []
        for run in self.runs:
            if run.interval_steps == 0:
                continue
            m = run.flush_metrics(self.step, self.step * self.config.batch_size)
            m["tokens_per_s"] = rate
            self._log(run, m)
            if self._wandb is not None:
                self._wandb.log({f"{run.name}/{k}": v for k, v in m.items()}, step=self.step)
            parts.append(f"{run.name}: loss {m['loss']:.4g} L0 {m['l0']:.1f} FVU {m['fvu']:.3f} "
                         f"dead {m['dead_fraction']:.1%}")
        if self.config.epochs > 1:
            parts.insert(0, f"epoch {min(self.step // self.config.steps_per_epoch + 1, self.config.epochs)}/"
                            f"{self.config.epochs}")
        bar.set_postfix_str(" | ".join(parts), refresh=False)

    def _finish(self, rate: float) -> TrainResult:
        results = {}
        for run in self.runs:
            run.sae.release_training_buffers()
            folded = run.sae.folded(self.input_scale)
            epochs = list(self.epoch_log.get(run.name, []))
            folded.metadata.extra = {**folded.metadata.extra, "training": {
                "tokens": self.step * self.config.batch_size, "epochs": self.config.epochs, "lr": run.base_lr,
                "dead_window_tokens": self.config.resolved_dead_window, "final_metrics": run.last,
                "final_epoch": epochs[-1] if epochs else None}}
            path = self.out_dir / run.name / "sae"
            if self.dist.writes_shared_files:
                path = save_sae(folded, path, density=run.final_density)
            self._log(run, {"event": "end", "step": self.step, "saved_to": str(path), **run.last})
            results[run.name] = RunResult(run.name, folded, path, dict(run.last), epochs)
        cfg = self.config
        summary = {"input_scale": self.input_scale, "tokens": self.step * cfg.batch_size, "steps": self.step,
                   "epochs": cfg.epochs, "tokens_per_epoch": cfg.steps_per_epoch * cfg.batch_size,
                   "dead_window_tokens": cfg.resolved_dead_window, "tokens_per_s": rate,
                   "runs": {name: {"path": str(r.path), **r.metrics, "epochs": r.epochs}
                            for name, r in results.items()}}
        if self.dist.writes_shared_files:
            name = ("summary.json" if not (self.dist.active and self.dist.mode == "runs") else
                    f"summary.rank{self.dist.rank}-of-{self.dist.world_size}.json")
            atomic_write_text(self.out_dir / name, json.dumps(summary, indent=2))
        self.dist.barrier()  # the SAEs are on disk before any rank returns
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        return TrainResult(results, self.input_scale, self.step * self.config.batch_size, self.step,
                           self.config.resolved_dead_window, rate)


def train(specs: Sequence[RunSpec], config: TrainConfig, source: BatchSource, out_dir: str | Path, *,
          resume: bool = True, progress: bool = True, distributed: Distributed | None = None) -> TrainResult:
    """Train every SAE in ``specs`` on one pass over ``source``; see the module docstring. Under ``torchrun``
    (an initialised process group) it is data parallel by default; ``distributed=Distributed.current("runs")``
    spreads the SAEs over the ranks instead (:mod:`workbench.sae.distributed`)."""
    return Trainer(specs, config, out_dir, distributed).fit(source, resume=resume, progress=progress)
