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
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.config import known_fields_only
from workbench.core.persist import atomic_write_text
from workbench.core.hardware import fast_bf16_matmul
from workbench.sae.model import ARCHITECTURES, SAE, SPARSE_MAX_DENSITY, TOPK_FAMILY, SAEConfig, SAEMetadata
from workbench.sae.io import read_safetensors, save_sae

CHECKPOINT_FORMAT = 1


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the message names the run, the step and the checkpoint that was kept."""


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not belong to this training configuration."""


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


def default_lr(architecture: str, d_sae: int) -> float:
    """Default learning rates: TopK family 2e-4 / sqrt(d_sae / 2^14) (Gao et al.); relu 1e-3 and jumprelu 7e-4.

    Anthropic's 5e-5 (relu) and DeepMind's 7e-5 (jumprelu) are for runs of 10^5+ steps; for runs of a few
    thousand steps (2M tokens at batch 4096 is 488) they barely move the weights, so the defaults here are
    higher (tuned on Gemma-3-270M). Set ``RunSpec.lr`` for long runs."""
    if architecture in TOPK_FAMILY:
        return 2e-4 / math.sqrt(d_sae / 2 ** 14)
    if architecture == "relu":
        return 1e-3
    return 7e-4


@dataclass
class RunSpec:
    """One SAE of a sweep. ``options`` holds further :class:`SAEConfig` fields (aux_k, matryoshka_widths...)."""

    architecture: str = "topk"
    d_sae: int = 8192
    k: float = 32
    l1_coefficient: float | None = None
    l0_coefficient: float | None = None
    lr: float | None = None
    name: str | None = None
    d_in: int | None = None  # None: the activations' d_model; if set, it must match them
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
        if "d_in" in self.options or "architecture" in self.options or "d_sae" in self.options:
            raise ValueError("RunSpec.options cannot set d_in, d_sae or architecture: use the RunSpec fields")

    def sae_config(self, d_in: int) -> SAEConfig:
        extra = dict(self.options)
        if self.l1_coefficient is not None:
            extra["l1_coefficient"] = self.l1_coefficient
        if self.l0_coefficient is not None:
            extra["l0_coefficient"] = self.l0_coefficient
        return SAEConfig(self.architecture, d_in, int(self.d_sae), k=self.k, **extra)

    @property
    def resolved_name(self) -> str:
        if self.name:
            return self.name
        if self.architecture in TOPK_FAMILY:
            k = int(self.k) if float(self.k).is_integer() else self.k
            return f"{self.architecture}-{self.d_sae}-k{k}"
        if self.architecture == "relu" and self.l1_coefficient is not None:
            return f"relu-{self.d_sae}-l1_{self.l1_coefficient:g}"
        if self.architecture == "jumprelu" and self.l0_coefficient is not None:
            return f"jumprelu-{self.d_sae}-l0_{self.l0_coefficient:g}"
        return f"{self.architecture}-{self.d_sae}"

    @property
    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else default_lr(self.architecture, int(self.d_sae))


@dataclass
class TrainConfig:
    """Settings shared by every SAE of a training pass. The defaults follow the recipes in docs/methods.md §2-3.

    ``total_tokens`` is the number of training tokens **per epoch**; the run trains ``epochs * total_tokens``
    tokens (:attr:`run_tokens`, in :attr:`total_steps` steps), and the lr / sparsity schedules and the default
    dead window span the whole run. With ``epochs=1`` (the default) ``total_tokens`` is the whole run, as before
    epochs existed. One epoch must fit in the source's training tokens (a store's tokens minus its held-out ones):
    training refuses to start otherwise. Epoch 0 reads the source's usual shuffled order; every later epoch is a
    fresh permutation of the same training tokens, seeded by (seed, epoch), never touching the held-out ones.
    """

    total_tokens: int = 2_000_000  # training tokens per epoch (with epochs=1, of the whole run)
    batch_size: int = 4096
    seed: int = 0
    epochs: int = 1  # passes over the source; each pass reshuffles (see Trainer.fit); held-out tokens stay out
    device: str = "auto"  # auto: cuda when available, else cpu
    bf16: bool = False  # bf16 autocast of the dense matmuls (CUDA only)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    lr_warmup_steps: int = 0
    lr_decay_fraction: float = 0.2
    sparsity_warmup_fraction: float = 0.05
    dead_window_tokens: int | None = None  # default: min(10M, epochs * total_tokens // 10), at least one batch
    b_dec_init: str = "geometric_median"  # or "mean", "zeros"
    scale_estimate_tokens: int = 65_536
    b_dec_init_tokens: int = 16_384
    log_every: int = 10  # steps
    checkpoint_every: int = 100  # steps; 0 writes only the final checkpoint
    keep_checkpoints: int = 2
    sparse_max_density: float = SPARSE_MAX_DENSITY  # sparse path while (active entries) / (batch * d_sae) <= this
    selection_dtype: str = "auto"  # precision of the GEMM that only picks active latents: auto, float32, bfloat16
    heldout_eval_tokens: int = 16_384  # per epoch end: FVU of each SAE on this many held-out and training tokens
    wandb_project: str | None = None

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} must be a whole number >= 1 (1 = one pass over total_tokens)")
        if self.batch_size < 1 or self.total_tokens < self.batch_size:
            raise ValueError(f"total_tokens={self.total_tokens} must be at least one batch of {self.batch_size}")
        if self.heldout_eval_tokens < 0:
            raise ValueError(f"heldout_eval_tokens={self.heldout_eval_tokens} must be >= 0 (0 turns the per-epoch "
                             f"evaluation off)")
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ValueError(f"b_dec_init={self.b_dec_init!r}: use geometric_median, mean or zeros")
        if not 0 <= self.lr_decay_fraction <= 1 or not 0 <= self.sparsity_warmup_fraction <= 1:
            raise ValueError("lr_decay_fraction and sparsity_warmup_fraction must lie in [0, 1]")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as err:
                raise ValueError(f"device={self.device!r} is not a torch device: use auto, cpu, cuda or cuda:N") from err
        if self.bf16 and self.resolved_device.type != "cuda":
            raise ValueError("bf16 autocast is only supported on CUDA: drop bf16 or train with device='cuda'")
        if self.selection_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"selection_dtype={self.selection_dtype!r}: use auto, float32 or bfloat16")

    @property
    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    @property
    def steps_per_epoch(self) -> int:
        return self.total_tokens // self.batch_size

    @property
    def total_steps(self) -> int:
        """Optimisation steps of the whole run, all epochs: the lr and sparsity schedules span these."""
        return self.epochs * self.steps_per_epoch

    @property
    def run_tokens(self) -> int:
        """Tokens the whole run trains on: ``epochs * total_tokens`` (rounded down to whole batches)."""
        return self.total_steps * self.batch_size

    @property
    def resolved_selection_dtype(self) -> torch.dtype | None:
        """``auto``: bfloat16 on CPUs with native bf16 matmul (AVX512-BF16 / AMX), else full precision."""
        if self.selection_dtype == "bfloat16":
            return torch.bfloat16
        if self.selection_dtype == "float32":
            return None
        if self.resolved_device.type == "cpu" and fast_bf16_matmul("cpu"):
            return torch.bfloat16
        return None

    @property
    def resolved_dead_window(self) -> int:
        if self.dead_window_tokens is not None:
            return int(self.dead_window_tokens)
        return max(self.batch_size, min(10_000_000, self.epochs * self.total_tokens // 10))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["adam_betas"] = list(self.adam_betas)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return cls(**known_fields_only(cls, data, "training setting(s)"))


# Fields that do not change the trajectory, so a resume may change them.
_RESUME_FREE = {"log_every", "checkpoint_every", "keep_checkpoints", "wandb_project", "device",
                "heldout_eval_tokens"}


# ----------------------------------------------------------------------------------------------------------------
# Schedules (pure)
# ----------------------------------------------------------------------------------------------------------------


def lr_multiplier(step: int, total_steps: int, warmup_steps: int = 0, decay_fraction: float = 0.2) -> float:
    """Linear warm-up over ``warmup_steps``, constant, then linear decay to 0 over the last ``decay_fraction``."""
    mult = 1.0
    if warmup_steps > 0 and step < warmup_steps:
        mult = (step + 1) / warmup_steps
    decay_steps = int(round(decay_fraction * total_steps))
    if decay_steps > 0 and step >= total_steps - decay_steps:
        mult = min(mult, (total_steps - step) / decay_steps)
    return max(0.0, mult)


def warmup_multiplier(step: int, total_steps: int, warmup_fraction: float = 0.05) -> float:
    """The sparsity coefficient's linear warm-up from ~0 to 1 over the first ``warmup_fraction`` of steps."""
    warm = int(round(warmup_fraction * total_steps))
    return 1.0 if warm <= 0 else min(1.0, (step + 1) / warm)


# ----------------------------------------------------------------------------------------------------------------
# Batch sources
# ----------------------------------------------------------------------------------------------------------------


class BatchSource(Protocol):
    """A deterministic, restartable stream of activation batches [batch, d_model].

    ``batches(batch_size, start_tokens=k)`` restarts the stream after ``k`` tokens. A source that can serve
    several epochs also takes ``epoch=e`` (epoch 0 is its plain stream, each later epoch a fresh permutation of the
    same training tokens) and says in ``n_train_tokens`` how many training tokens one epoch holds (None: endless).
    A source with held-out tokens has ``holdout_tokens`` > 0 and ``heldout_batches(batch_size)``; they are never
    among the training tokens of any epoch. :class:`TensorSource` and :class:`StoreSource` do all of this.
    """

    d_model: int
    metadata: SAEMetadata

    def batches(self, batch_size: int, *, start_tokens: int = 0) -> Iterator[Tensor]: ...

    def describe(self) -> dict: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of epoch ``epoch`` (>= 1) of a run seeded ``seed``: 63 bits of sha256(seed, epoch)."""
    digest = hashlib.sha256(f"workbench-epoch:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _takes_epoch(source: Any) -> bool:
    """Whether ``source.batches`` accepts ``epoch=``."""
    try:
        params = inspect.signature(source.batches).parameters
    except (TypeError, ValueError):
        return False
    return "epoch" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class TensorSource:
    """Batches from an in-memory [n_tokens, d_model] tensor.

    The rows are shuffled once by ``seed`` (kept in order with ``shuffle=False``); the first ``holdout_tokens`` of
    that order are held out (:meth:`heldout_batches`) and training reads the rest: in that order in epoch 0, and
    in a fresh permutation seeded by (seed, epoch) in every later epoch (in order again with ``shuffle=False``).
    """

    def __init__(self, data: Tensor, *, seed: int = 0, shuffle: bool = True, metadata: SAEMetadata | None = None,
                 holdout_tokens: int = 0):
        if data.dim() != 2:
            raise ValueError(f"TensorSource needs a [n_tokens, d_model] tensor, got shape {tuple(data.shape)}")
        self.data = data
        self.d_model = int(data.shape[1])
        self.n_tokens = int(data.shape[0])
        if not 0 <= int(holdout_tokens) < self.n_tokens:
            raise ValueError(f"holdout_tokens={holdout_tokens} must lie in [0, {self.n_tokens}): the tensor holds "
                             f"{self.n_tokens} tokens")
        self.seed, self.shuffle, self.holdout_tokens = seed, shuffle, int(holdout_tokens)
        self.n_train_tokens = self.n_tokens - self.holdout_tokens
        self.metadata = metadata or SAEMetadata()

    def _order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.n_tokens)
        return torch.randperm(self.n_tokens, generator=torch.Generator().manual_seed(self.seed))

    def training_rows(self, epoch: int = 0) -> Tensor:
        """Indices into ``data`` of the training tokens, in the order epoch ``epoch`` reads them."""
        rows = self._order()[self.holdout_tokens:]
        if epoch > 0 and self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            rows = rows[torch.randperm(rows.numel(), generator=gen)]
        return rows

    def batches(self, batch_size: int, *, start_tokens: int = 0, epoch: int = 0) -> Iterator[Tensor]:
        rows = self.training_rows(epoch)
        for start in range(start_tokens, rows.numel() - batch_size + 1, batch_size):
            yield self.data[rows[start:start + batch_size]]

    def heldout_batches(self, batch_size: int) -> Iterator[Tensor]:
        rows = self._order()[:self.holdout_tokens]
        for start in range(0, rows.numel() - batch_size + 1, batch_size):
            yield self.data[rows[start:start + batch_size]]

    def describe(self) -> dict:
        out = {"kind": "tensor", "n_tokens": self.n_tokens, "d_model": self.d_model, "seed": self.seed}
        if self.holdout_tokens:
            out["holdout_tokens"] = self.holdout_tokens
        return out


class SyntheticSource:
    """Synthetic activations with known features, for tests and benchmarks without a model.

    x = mean + sum over ``active`` sampled features of a_i D_i + noise, with D [n_features, d_model] random unit
    vectors, feature frequencies following a power law, magnitudes uniform in [0.5, 1.5], everything multiplied by
    ``scale``. Batch b is drawn from a generator seeded by (seed, b), so the stream restarts anywhere.
    """

    def __init__(self, d_model: int, n_features: int, *, active: int = 8, seed: int = 0, mean_norm: float = 0.0,
                 noise: float = 0.0, scale: float = 1.0, zipf: float = 0.5, n_tokens: int | None = None):
        gen = torch.Generator().manual_seed(10_000 + seed)
        self.d_model, self.n_features, self.active = d_model, n_features, active
        self.seed, self.noise, self.scale, self.n_tokens = seed, noise, scale, n_tokens
        self.features = torch.randn(n_features, d_model, generator=gen)
        self.features /= self.features.norm(dim=1, keepdim=True)
        mean = torch.randn(d_model, generator=gen)
        self.mean = mean / mean.norm() * mean_norm
        freq = (torch.arange(n_features, dtype=torch.float64) + 1.0) ** -zipf
        self._cdf = (freq.cumsum(0) / freq.sum()).to(torch.float32)
        self.frequencies = (freq / freq.sum() * active).to(torch.float32)
        self.metadata = SAEMetadata(model_name="synthetic", hook_name="synthetic", context_size=None)
        self._params = dict(d_model=d_model, n_features=n_features, active=active, seed=seed, mean_norm=mean_norm,
                            noise=noise, scale=scale, zipf=zipf)

    def batch(self, index: int, batch_size: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 1)
        u = torch.rand(batch_size, self.active, generator=gen)
        idx = torch.searchsorted(self._cdf, u).clamp_max(self.n_features - 1)
        mag = torch.rand(batch_size, self.active, generator=gen) + 0.5
        x = torch.nn.functional.embedding_bag(idx, self.features, per_sample_weights=mag.reshape(-1).view_as(idx),
                                              mode="sum") + self.mean
        if self.noise:
            x = x + self.noise * torch.randn(batch_size, self.d_model, generator=gen)
        return x * self.scale

    def batches(self, batch_size: int, *, start_tokens: int = 0) -> Iterator[Tensor]:
        if start_tokens % batch_size:
            raise ValueError(f"start_tokens={start_tokens} is not a multiple of batch_size={batch_size}")
        index = start_tokens // batch_size
        while self.n_tokens is None or (index + 1) * batch_size <= self.n_tokens:
            yield self.batch(index, batch_size)
            index += 1

    def describe(self) -> dict:
        return {"kind": "synthetic", **self._params}


class StoreSource:
    """Shuffled batches of one hook from a :class:`workbench.data.store.ActivationStore`.

    The first ``holdout_tokens`` of the store's shuffled stream (seeded by ``seed``) are held out for evaluation
    (:meth:`heldout_batches`); training reads from there on. Epoch 0 is that stream; a later epoch ``e`` cuts the
    training part of the stream into blocks of ``epoch_block_shards`` shards' worth of tokens, visits the blocks in
    an order seeded by (seed, e) and permutes each block's tokens with a seed of (seed, e, block), so that every
    epoch is a fresh permutation of the same training tokens and memory stays at about one block.
    """

    epoch_block_shards = 4  # as the store's own shuffle buffer

    def __init__(self, path: str | Path, *, hook: str | None = None, seed: int = 0, exclude_bos: bool = True,
                 holdout_tokens: int = 0, allow_incomplete: bool = False):
        from workbench.data.store import ActivationStore  # the store module is optional for everything else

        self.path = Path(path)
        self.store = ActivationStore.open(self.path, allow_incomplete=allow_incomplete)
        if hook is None and len(self.store.hooks) != 1:
            raise ValueError(f"the store at {self.path} holds several hooks {list(self.store.hooks)}: pick one with "
                             f"--hook")
        if hook is not None and hook not in self.store.hooks:
            raise ValueError(f"hook {hook!r} is not in the store at {self.path}; it holds {list(self.store.hooks)}")
        self.hook = hook or self.store.hooks[0]
        self.d_model = int(self.store.d_in(self.hook))
        self.seed, self.exclude_bos, self.holdout_tokens = seed, exclude_bos, int(holdout_tokens)
        self.metadata = SAEMetadata(model_name=self.store.model_name, hook_name=self.hook,
                                    context_size=self.store.context_size, prepend_bos=self.store.prepend_bos)

    @property
    def n_rows(self) -> int:
        """Tokens the store streams for this hook (without BOS positions when ``exclude_bos``)."""
        return int(self.store.n_rows(self.exclude_bos))

    @property
    def n_train_tokens(self) -> int:
        """Training tokens in one epoch: the store's tokens minus the held-out ones."""
        return max(0, self.n_rows - self.holdout_tokens)

    def _iter(self, batch_size: int, start: int, **kw: Any) -> Iterator[Tensor]:
        return self.store.iter_batches(batch_size, hook=self.hook, shuffle=True, seed=self.seed,
                                       exclude_bos=self.exclude_bos, start_tokens=start, **{"drop_last": True, **kw})

    def batches(self, batch_size: int, *, start_tokens: int = 0, epoch: int = 0) -> Iterator[Tensor]:
        if epoch == 0:
            return self._iter(batch_size, self.holdout_tokens + start_tokens)
        return self._reshuffled(batch_size, start_tokens, epoch)

    def epoch_blocks(self) -> list[tuple[int, int]]:
        """The training part of the epoch-0 stream, ``[holdout_tokens, n_rows)``, as [start, stop) blocks."""
        n_ctx = max(1, self.store.n_contexts)
        per_ctx = max(1, self.n_rows // n_ctx)
        size = max(1, self.epoch_block_shards * self.store.shard_contexts * per_ctx)
        return [(lo, min(self.n_rows, lo + size)) for lo in range(self.holdout_tokens, self.n_rows, size)]

    def _reshuffled(self, batch_size: int, start: int, epoch: int) -> Iterator[Tensor]:
        import numpy as np

        seed = epoch_seed(self.seed, epoch)
        blocks = self.epoch_blocks()
        order = np.random.default_rng([seed, 0]).permutation(len(blocks))
        pending: list[Tensor] = []
        pending_n = 0
        pos = 0  # position in this epoch's stream of the first token of the current block
        for j, b in enumerate(order.tolist()):
            lo, hi = blocks[b]
            n = hi - lo
            if pos + n <= start:  # before the resume point: skip without reading
                pos += n
                continue
            rows = next(self._iter(n, lo, max_tokens=n, drop_last=False, dtype=None))
            perm = torch.from_numpy(np.random.default_rng([seed, 1, j]).permutation(n))
            rows = rows[perm[max(0, start - pos):]]
            pos += n
            i = 0
            while i < rows.shape[0]:
                take = min(batch_size - pending_n, rows.shape[0] - i)
                pending.append(rows[i:i + take])
                pending_n += take
                i += take
                if pending_n == batch_size:
                    batch = pending[0] if len(pending) == 1 else torch.cat(pending)
                    pending, pending_n = [], 0
                    yield batch.to(torch.float32)
            del rows

    def heldout_batches(self, batch_size: int) -> Iterator[Tensor]:
        seen = 0
        for batch in self._iter(batch_size, 0):
            if seen + batch.shape[0] > self.holdout_tokens:
                return
            seen += batch.shape[0]
            yield batch

    def describe(self) -> dict:
        return {"kind": "store", "path": str(self.path.resolve()), "hook": self.metadata.hook_name,
                "seed": self.seed, "exclude_bos": self.exclude_bos, "holdout_tokens": self.holdout_tokens}


# ----------------------------------------------------------------------------------------------------------------
# Statistics of the stream
# ----------------------------------------------------------------------------------------------------------------


def take_tokens(batches: Iterable[Tensor], n_tokens: int) -> Tensor:
    """The first ``n_tokens`` rows of a batch stream, as one float32 CPU tensor (fewer if the stream ends)."""
    out, have = [], 0
    for batch in batches:
        out.append(batch[: n_tokens - have].to("cpu", torch.float32))
        have += out[-1].shape[0]
        if have >= n_tokens:
            break
    if not out:
        raise ValueError("the activation stream is empty")
    return torch.cat(out)


def estimate_input_scale(sample: Tensor) -> float:
    """The scalar s with E||s x||^2 = d over ``sample`` [n, d] (computed in float64)."""
    mean_sq = sample.to(torch.float64).pow(2).sum(1).mean().item()
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise ValueError(f"cannot scale the activations: their mean squared norm is {mean_sq} (all zero, NaN or inf?)")
    return math.sqrt(sample.shape[1] / mean_sq)


# ----------------------------------------------------------------------------------------------------------------
# One SAE's optimisation state
# ----------------------------------------------------------------------------------------------------------------

_METRICS = ("loss", "mse", "sparsity_loss", "aux_loss", "l0", "fvu_num", "fvu_den", "sparse")
_PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")


def _make_adam(params: list[Tensor], lr: float, config: TrainConfig) -> torch.optim.Adam:
    kwargs: dict[str, Any] = dict(lr=lr, betas=config.adam_betas, eps=config.adam_eps)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # fused Adam not built for this device / dtype
        return torch.optim.Adam(params, **kwargs)


class RunState:
    """An SAE in training: its optimiser, dead-latent counters and the metrics of the current log interval."""

    def __init__(self, spec: RunSpec, sae: SAE, config: TrainConfig):
        self.spec, self.sae, self.config = spec, sae, config
        self.name = spec.resolved_name
        self.base_lr = spec.resolved_lr
        self.param_names = [n for n in _PARAM_NAMES if isinstance(getattr(sae, n, None), torch.nn.Parameter)]
        self.params = [getattr(sae, n) for n in self.param_names]
        self.optimizer = _make_adam(self.params, self.base_lr, config)
        self.since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae.device)
        self.selection_dtype = config.resolved_selection_dtype
        self._reset_interval()
        self.last: dict[str, float] = {}
        self.density: float | None = None  # the last step's code density: picks the next step's path

    def _reset_interval(self) -> None:
        self.interval = torch.zeros(len(_METRICS), dtype=torch.float64, device=self.sae.device)
        self.interval_steps = 0

    def dead_mask(self, window: int) -> Tensor:
        return self.since_fired >= window

    def step(self, x: Tensor, step: int, autocast) -> Tensor:
        """One optimisation step on the scaled batch ``x``; returns the detached loss (for the finite check)."""
        cfg = self.config
        sae = self.sae
        lr = self.base_lr * lr_multiplier(step, cfg.total_steps, cfg.lr_warmup_steps, cfg.lr_decay_fraction)
        warm = warmup_multiplier(step, cfg.total_steps, cfg.sparsity_warmup_fraction)
        with autocast:
            out = sae.training_loss(x, dead_mask=self.dead_mask(cfg.resolved_dead_window), sparsity_scale=warm,
                                    sparse_max_density=cfg.sparse_max_density, density_hint=self.density,
                                    selection_dtype=self.selection_dtype)
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sae.apply_constraints(out)
        self.since_fired = torch.where(out.fired, torch.zeros_like(self.since_fired),
                                       self.since_fired + x.shape[0])
        stats = torch.stack([out.loss.detach().to(torch.float64), out.mse.to(torch.float64),
                             out.sparsity_loss.to(torch.float64), out.aux_loss.to(torch.float64),
                             out.l0.to(torch.float64), out.fvu_num.to(torch.float64), out.fvu_den.to(torch.float64),
                             torch.tensor(float(out.sparse), dtype=torch.float64, device=x.device)])
        self.interval += stats
        self.interval_steps += 1
        self.density = float(out.l0) / sae.cfg.d_sae
        self.last_lr, self.last_warm = lr, warm
        return out.loss.detach()

    def flush_metrics(self, step: int, tokens: int) -> dict[str, float]:
        """Average the interval's metrics (one device sync) and start a new interval."""
        values = dict(zip(_METRICS, self.interval.tolist()))
        n = max(1, self.interval_steps)
        fvu = values["fvu_num"] / values["fvu_den"] if values["fvu_den"] > 0 else float("nan")
        window = self.config.resolved_dead_window
        dead = float(self.dead_mask(window).float().mean().item())
        self.last = {"step": step, "tokens": tokens, "loss": values["loss"] / n, "mse": values["mse"] / n,
                     "sparsity_loss": values["sparsity_loss"] / n, "aux_loss": values["aux_loss"] / n,
                     "l0": values["l0"] / n, "fvu": fvu, "explained_variance": 1.0 - fvu, "dead_fraction": dead,
                     "dead_window_tokens": window, "lr": getattr(self, "last_lr", self.base_lr),
                     "sparsity_warmup": getattr(self, "last_warm", 0.0), "sparse_step_fraction": values["sparse"] / n}
        self._reset_interval()
        return self.last

    # ----- checkpoint state -----

    def sae_tensors(self) -> dict[str, Tensor]:
        names = [n for n in _PARAM_NAMES if getattr(self.sae, n, None) is not None]
        return {n: getattr(self.sae, n).detach().contiguous().cpu() for n in names}

    @torch.no_grad()
    def load_sae_tensors(self, tensors: dict[str, Tensor], source: str) -> None:
        for name in [n for n in _PARAM_NAMES if getattr(self.sae, n, None) is not None]:
            target = getattr(self.sae, name)
            if name not in tensors or tuple(tensors[name].shape) != tuple(target.shape):
                raise CheckpointError(f"checkpoint file {source} lacks tensor {name} of shape {tuple(target.shape)}")
            target.copy_(tensors[name])

    def tracker_tensors(self) -> dict[str, Tensor]:
        out = {"since_fired": self.since_fired.cpu(), "interval": self.interval.cpu(),
               "interval_steps": torch.tensor(self.interval_steps)}
        if self.density is not None:
            out["density"] = torch.tensor(self.density, dtype=torch.float64)
        return out

    def load_tracker_tensors(self, tensors: dict[str, Tensor], source: str) -> None:
        ok = ("since_fired" in tensors and tuple(tensors["since_fired"].shape) == tuple(self.since_fired.shape)
              and "interval" in tensors and tuple(tensors["interval"].shape) == tuple(self.interval.shape))
        if not ok:
            raise CheckpointError(f"checkpoint file {source} lacks valid since_fired / interval tensors")
        self.since_fired = tensors["since_fired"].to(self.since_fired.device)
        self.interval = tensors["interval"].to(self.interval.device)
        self.interval_steps = int(tensors["interval_steps"])
        self.density = float(tensors["density"]) if "density" in tensors else None

    def optimizer_tensors(self) -> dict[str, Tensor]:
        out = {}
        for name, p in zip(self.param_names, self.params):
            for key, value in self.optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"{name}.{key}"] = value.detach().contiguous().cpu()
        return out

    def load_optimizer_tensors(self, tensors: dict[str, Tensor], source: str) -> None:
        state = {}
        for i, (name, p) in enumerate(zip(self.param_names, self.params)):
            entry = {}
            for key in ("exp_avg", "exp_avg_sq", "step"):
                t = tensors.get(f"{name}.{key}")
                if t is None:
                    continue
                if key == "step":
                    entry[key] = t.clone()
                else:
                    if tuple(t.shape) != tuple(p.shape):
                        raise CheckpointError(f"{source}: optimizer state {name}.{key} has shape {tuple(t.shape)}, "
                                              f"expected {tuple(p.shape)}")
                    entry[key] = torch.empty_like(p, memory_format=torch.preserve_format).copy_(t)
            if entry:
                state[i] = entry
        sd = self.optimizer.state_dict()
        sd["state"] = state
        self.optimizer.load_state_dict(sd)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


class Checkpointer:
    """Atomic checkpoints under ``root``::

        root/step_00000123/state.json                      step, tokens, input scale, config fingerprint
        root/step_00000123/<run>/sae.safetensors           weights in training space (unfolded)
        root/step_00000123/<run>/optimizer.safetensors     Adam moments and step counts, by parameter name
        root/step_00000123/<run>/tracker.safetensors       tokens since each latent last fired
        root/LATEST                                        name of the newest complete checkpoint

    A checkpoint is written into ``.tmp-*``, fsynced and renamed into place, then LATEST is replaced, so a kill
    at any moment leaves the previous checkpoint intact. The oldest are pruned beyond ``keep``.
    """

    def __init__(self, root: str | Path, keep: int = 2):
        self.root = Path(root)
        self.keep = max(1, keep)

    def latest(self) -> Path | None:
        marker = self.root / "LATEST"
        if marker.is_file():
            candidate = self.root / marker.read_text().strip()
            if (candidate / "state.json").is_file():
                return candidate
        done = sorted(p for p in self.root.glob("step_*") if (p / "state.json").is_file())
        return done[-1] if done else None

    def save(self, step: int, state: dict, runs: Sequence[RunState]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:08d}"
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for run in runs:
            d = tmp / run.name
            d.mkdir()
            save_file(run.sae_tensors(), str(d / "sae.safetensors"))
            save_file(run.optimizer_tensors(), str(d / "optimizer.safetensors"))
            save_file(run.tracker_tensors(), str(d / "tracker.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        _fsync_tree(tmp)
        final = self.root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        marker_tmp = self.root / f".LATEST.{os.getpid()}.tmp"
        marker_tmp.write_text(name)
        with open(marker_tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(marker_tmp, self.root / "LATEST")
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        done = sorted(p for p in self.root.glob("step_*") if (p / "state.json").is_file())
        for old in done[: max(0, len(done) - self.keep)]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)

    @staticmethod
    def read_state(path: Path) -> dict:
        state_file = path / "state.json"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"checkpoint file {state_file} is unreadable or corrupt ({err}): delete {path} to "
                                  f"resume from an earlier checkpoint, or start afresh (resume=False)") from err
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint file {state_file} has format {state.get('format')!r}, expected "
                                  f"{CHECKPOINT_FORMAT}")
        return state

    @staticmethod
    def read_tensors(path: Path) -> dict[str, Tensor]:
        try:
            return read_safetensors(path)
        except ValueError as err:
            raise CheckpointError(f"checkpoint file {path} is corrupt or truncated: delete {path.parent.parent} to "
                                  f"resume from an earlier checkpoint, or start afresh (resume=False). ({err})") from err


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


def _fingerprint(config: TrainConfig, specs: Sequence[RunSpec], d_in: int, source: dict) -> dict:
    train_part = {k: v for k, v in config.to_dict().items() if k not in _RESUME_FREE}
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

    def __init__(self, specs: Sequence[RunSpec], config: TrainConfig, out_dir: str | Path):
        if not specs:
            raise ValueError("no SAE to train: give at least one RunSpec")
        names = [s.resolved_name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"run names must be unique, {dupes} repeat: set RunSpec.name")
        self.specs, self.config = list(specs), config
        self.out_dir = Path(out_dir)
        self.checkpointer = Checkpointer(self.out_dir / "checkpoints", keep=config.keep_checkpoints)
        self.device = config.resolved_device
        self.runs: list[RunState] = []
        self.input_scale = 1.0
        self.step = 0
        self.last_checkpoint: Path | None = None
        self._wandb = None
        self.epoch_log: dict[str, list[dict]] = {s.resolved_name: [] for s in self.specs}
        self._eval_samples: dict[str, Tensor] | None = None

    # ----- setup -----

    def _build_runs(self, d_in: int, metadata: SAEMetadata) -> None:
        self.runs = []
        for i, spec in enumerate(self.specs):
            sae = SAE(spec.sae_config(d_in), metadata, seed=self.config.seed + 1000 * i, device=self.device)
            self.runs.append(RunState(spec, sae, self.config))

    def _check_source(self, source: BatchSource) -> int:
        d_in = int(source.d_model)
        for spec in self.specs:
            wanted = spec.d_in
            if wanted is not None and int(wanted) != d_in:
                raise ValueError(f"SAE {spec.resolved_name!r} was configured with d_in={wanted} but the activations "
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
            raise ValueError(f"the activation source yields batches of shape {tuple(batch.shape)} but declares "
                             f"d_model={d_in} ({source.describe()})")

    # ----- logging -----

    def _open_logs(self, resumed: bool) -> None:
        for run in self.runs:
            d = self.out_dir / run.name
            d.mkdir(parents=True, exist_ok=True)
            run.log_path = d / "metrics.jsonl"
            event = {"event": "resume" if resumed else "start", "run": run.name, "step": self.step,
                     "sae": run.sae.cfg.to_dict(), "lr": run.base_lr, "train": self.config.to_dict(),
                     "dead_window_tokens": self.config.resolved_dead_window, "input_scale": self.input_scale,
                     "time": time.time()}
            self._log(run, event)
        if self.config.wandb_project and self._wandb is None:
            try:
                import wandb
            except ImportError as err:
                raise ValueError("wandb_project is set but wandb is not installed: pip install wandb, or leave "
                                 "wandb_project unset") from err
            self._wandb = wandb.init(project=self.config.wandb_project, dir=str(self.out_dir),
                                     config={"train": self.config.to_dict(),
                                             "runs": [r.sae.cfg.to_dict() for r in self.runs]})

    @staticmethod
    def _log(run: RunState, record: dict) -> None:
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
        self.last_checkpoint = self.checkpointer.save(self.step, self._state(fingerprint), self.runs)

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
        if latest is not None:
            self._resume(latest, source, d_in, fingerprint)
        else:
            if self.checkpointer.root.exists():  # resume=False, or a run that died before its first checkpoint
                shutil.rmtree(self.checkpointer.root)
            for spec in self.specs:
                (self.out_dir / spec.resolved_name / "metrics.jsonl").unlink(missing_ok=True)
            self._fresh_start(source, d_in)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "train_config.json", json.dumps(
            {"train": cfg.to_dict(), "runs": [asdict(s) for s in self.specs], "source": source.describe(),
             "input_scale": self.input_scale, "dead_window_tokens": cfg.resolved_dead_window}, indent=2))
        self._open_logs(resumed=latest is not None)

        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        total, per_epoch = cfg.total_steps, cfg.steps_per_epoch
        start_step = self.step
        self._progress = progress
        bar = tqdm(total=total * cfg.batch_size, initial=self.step * cfg.batch_size, unit="tok", unit_scale=True,
                   disable=not progress, desc="train", dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            while self.step < total:
                epoch, offset = divmod(self.step, per_epoch)
                epoch_end = (epoch + 1) * per_epoch
                batches = self._epoch_batches(source, epoch, offset * cfg.batch_size)
                while self.step < epoch_end:
                    batch = next(batches, None)
                    if batch is None:
                        done = (self.step - epoch * per_epoch) * cfg.batch_size
                        raise ValueError(f"the activation source ran out after {done} tokens of epoch {epoch + 1} "
                                         f"but an epoch asks for {per_epoch * cfg.batch_size} (total_tokens): "
                                         f"harvest more tokens or lower total_tokens")
                    if self.step == start_step:
                        self._check_batch(batch, d_in, source)
                    x = batch.to(self.device, torch.float32, non_blocking=True) * self.input_scale
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
                del batches  # frees the epoch's read buffer before the next epoch allocates its own
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
        rate = (self.step - start_step) * cfg.batch_size / elapsed if elapsed > 0 else float("nan")
        return self._finish(rate)

    def _check_epochs(self, source: BatchSource) -> None:
        """Refuse, before anything is written, a run whose epochs the source cannot serve."""
        cfg = self.config
        if cfg.epochs > 1 and not _takes_epoch(source):
            raise ValueError(f"epochs={cfg.epochs} needs a source that reshuffles its tokens each epoch (StoreSource, "
                             f"TensorSource); {type(source).__name__} ({source.describe()}) serves a single stream: "
                             f"train with epochs=1 and total_tokens covering the whole run")
        n_train = getattr(source, "n_train_tokens", None)
        epoch_tokens = cfg.steps_per_epoch * cfg.batch_size
        if n_train is not None and epoch_tokens > int(n_train):
            held = int(getattr(source, "holdout_tokens", 0) or 0)
            fit = int(n_train) // cfg.batch_size * cfg.batch_size
            raise ValueError(
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
                        out["heldout"] = take_tokens(source.heldout_batches(b), n)  # type: ignore[attr-defined]
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
            path = save_sae(folded, self.out_dir / run.name / "sae")
            self._log(run, {"event": "end", "step": self.step, "saved_to": str(path), **run.last})
            results[run.name] = RunResult(run.name, folded, path, dict(run.last), epochs)
        cfg = self.config
        summary = {"input_scale": self.input_scale, "tokens": self.step * cfg.batch_size, "steps": self.step,
                   "epochs": cfg.epochs, "tokens_per_epoch": cfg.steps_per_epoch * cfg.batch_size,
                   "dead_window_tokens": cfg.resolved_dead_window, "tokens_per_s": rate,
                   "runs": {name: {"path": str(r.path), **r.metrics, "epochs": r.epochs}
                            for name, r in results.items()}}
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2))
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        return TrainResult(results, self.input_scale, self.step * self.config.batch_size, self.step,
                           self.config.resolved_dead_window, rate)


def train(specs: Sequence[RunSpec], config: TrainConfig, source: BatchSource, out_dir: str | Path, *,
          resume: bool = True, progress: bool = True) -> TrainResult:
    """Train every SAE in ``specs`` on one pass over ``source``; see the module docstring."""
    return Trainer(specs, config, out_dir).fit(source, resume=resume, progress=progress)
