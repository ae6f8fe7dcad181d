"""What a training run is: the specs of its SAEs (:class:`RunSpec`), its settings (:class:`TrainConfig`), the
default learning rates and the lr and sparsity schedules. The trainer is :mod:`workbench.sae.train`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from workbench.core.errors import ConfigError
from workbench.core.config import known_fields_only
from workbench.core.hardware import fast_bf16_matmul
from workbench.sae.architectures import get_architecture
from workbench.sae.model import SPARSE_MAX_DENSITY, SAEConfig

__all__ = ["RunSpec", "TrainConfig", "default_lr", "lr_multiplier", "warmup_multiplier"]


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


def default_lr(architecture: str, d_sae: int) -> float:
    """The architecture's default learning rate (its ``default_lr``, :mod:`workbench.sae.architectures`): e.g.
    TopK family 2e-4 / sqrt(d_sae / 2^14) (Gao et al.); relu 1e-3 and jumprelu 7e-4.

    Anthropic's 5e-5 (relu) and DeepMind's 7e-5 (jumprelu) are for runs of 10^5+ steps; for runs of a few
    thousand steps (2M tokens at batch 4096 is 488) they barely move the weights, so the defaults here are
    higher (tuned on Gemma-3-270M). Set ``RunSpec.lr`` for long runs."""
    return get_architecture(architecture).default_lr(int(d_sae))


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
        arch = get_architecture(self.architecture)  # a ValueError listing the known ones
        if "d_in" in self.options or "architecture" in self.options or "d_sae" in self.options:
            raise ConfigError("RunSpec.options cannot set d_in, d_sae or architecture: use the RunSpec fields",
                              param="options")
        if isinstance(self.d_sae, (bool, float)) or int(self.d_sae) != self.d_sae or self.d_sae < 1:
            raise ConfigError(f"d_sae={self.d_sae!r} must be a whole number >= 1, e.g. 4096", param="d_sae")
        if arch.sparsity == "k" and not 0 < float(self.k) <= self.d_sae:
            raise ConfigError(f"k={self.k:g} must lie in (0, d_sae={self.d_sae}]: lower k or raise d_sae", param="k")
        for name in ("lr", "l1_coefficient", "l0_coefficient"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(float(value)) or float(value) < 0
                                      or (name == "lr" and float(value) == 0)):
                raise ConfigError(f"{name}={value!r} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, "
                                  f"e.g. {'2e-4' if name == 'lr' else '5'}", param=name)

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
        return get_architecture(self.architecture).run_name(self)  # e.g. topk-8192-k32, relu-8192-l1_5

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
            raise ConfigError(f"epochs={self.epochs!r} must be a whole number >= 1 (1 = one pass over total_tokens)",
                              param="epochs")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size!r} must be a whole number >= 1, e.g. 4096",
                              param="batch_size")
        if self.total_tokens < self.batch_size:
            raise ConfigError(f"total_tokens={self.total_tokens} must be at least one batch of {self.batch_size}",
                              param="total_tokens")
        if self.heldout_eval_tokens < 0:
            raise ConfigError(f"heldout_eval_tokens={self.heldout_eval_tokens} must be >= 0 (0 turns the per-epoch "
                              f"evaluation off)", param="heldout_eval_tokens")
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ConfigError(f"b_dec_init={self.b_dec_init!r}: use geometric_median, mean or zeros",
                              param="b_dec_init")
        if not 0 <= self.lr_decay_fraction <= 1 or not 0 <= self.sparsity_warmup_fraction <= 1:
            raise ConfigError("lr_decay_fraction and sparsity_warmup_fraction must lie in [0, 1]")
        if self.device != "auto":
            try:
                device = torch.device(self.device)
            except RuntimeError as err:
                raise ConfigError(f"device={self.device!r} is not a torch device: use auto, cpu, cuda or cuda:N",
                                  param="device") from err
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ConfigError(f"device={self.device!r} but this torch build ({torch.__version__}) sees no CUDA "
                                  f"GPU: use device 'cpu' or 'auto'", param="device")
        for name in ("log_every", "checkpoint_every", "keep_checkpoints", "scale_estimate_tokens", "b_dec_init_tokens"):
            value, least = getattr(self, name), 0 if name == "checkpoint_every" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name}={value!r} must be a whole number >= {least}", param=name)
        if self.dead_window_tokens is not None and self.dead_window_tokens < 1:
            raise ConfigError(f"dead_window_tokens={self.dead_window_tokens} must be >= 1 token, or unset for the "
                              f"default", param="dead_window_tokens")
        if self.bf16 and self.resolved_device.type != "cuda":
            raise ConfigError("bf16 autocast is only supported on CUDA: drop bf16 or train with device='cuda'",
                              param="bf16")
        if self.selection_dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"selection_dtype={self.selection_dtype!r}: use auto, float32 or bfloat16",
                              param="selection_dtype")

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
RESUME_FREE_SETTINGS = {"log_every", "checkpoint_every", "keep_checkpoints", "wandb_project", "device",
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
