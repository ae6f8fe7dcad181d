"""What an SAE architecture is (:class:`SAEArchitecture`) and the registry that names them.

:class:`workbench.sae.model.SAE` owns what every architecture shares (the encoder and decoder matrices, the hooks,
the sparse and dense views of a step's codes, the reconstruction error and the statistics of a step); the
architecture owns everything that differs: its config checks and defaults, its extra tensors, how codes are chosen
(inference, and the entries a training step selects), its activation and its losses, the constraints after an
optimizer step, its default learning rate and run name, and how it reads and writes the SAELens v6 folder format.

An architecture is one module of :mod:`workbench.sae.architectures` holding a subclass of :class:`SAEArchitecture`
and one ``register(...)`` call; :func:`get_architecture` finds it by name (docs/methods.md §23).

The methods take the SAE (duck-typed: this module does not import :mod:`workbench.sae.model`) and ``codes``, one
step's view of its pre-activations: ``codes.pre`` (the selected entries, or the dense [batch, d_sae] matrix),
``codes.per_latent(t)`` (a [d_sae] tensor broadcast to those entries), ``codes.gate(f)`` (the selection's mask on
the dense path), ``codes.decode(f, lo, hi, frozen=False)``.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.sae.kernels import Selection, select_above, select_aux

__all__ = ["ArchitectureNames", "SAEArchitecture", "architecture_for_sae_lens", "architectures", "auxk_loss",
           "find_architecture", "get_architecture", "register"]

BASE_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec")


class SAEArchitecture:
    """One SAE architecture. Subclasses set the class attributes and override what differs from the defaults
    (plain ReLU codes, no sparsity penalty, no auxiliary loss, no extra tensors)."""

    name: ClassVar[str]
    sparsity: ClassVar[str] = "l1"  # the RunSpec / sweep knob: "k", "l1" (l1_coefficient) or "l0" (l0_coefficient)
    unit_norm_decoder: ClassVar[bool] = True
    decoder_init_norm: ClassVar[float] = 1.0
    selects_for_dense: ClassVar[bool] = False  # the dense path needs the selection (its mask): the TopK family
    auxk: ClassVar[bool] = False  # AuxK over dead latents
    extra_tensors: ClassVar[tuple[str, ...]] = ()  # tensors beyond W_enc, b_enc, W_dec, b_dec (saved and trained)
    has_threshold: ClassVar[bool] = False  # a [d_sae] ``threshold`` tensor decides the codes at inference
    sae_lens_name: ClassVar[str]  # the cfg.json "architecture" it is written as
    sae_lens_reads: ClassVar[tuple[str, ...]] = ()  # the SAELens architectures loaded as this one
    sae_lens_tensor_names: ClassVar[dict[str, str]] = {}  # our tensor name -> SAELens's, where they differ

    # ----- configuration ---------------------------------------------------------------------------------------

    def validate(self, cfg) -> None:
        """Check (and complete) the architecture's own fields of an :class:`SAEConfig`; raise ValueError."""

    def check_k(self, cfg) -> None:
        if not (0 < cfg.k <= cfg.d_sae):
            raise ValueError(f"k={cfg.k} must be in (0, d_sae={cfg.d_sae}] for {cfg.architecture}")

    def default_lr(self, d_sae: int) -> float:
        raise NotImplementedError

    def run_name(self, spec) -> str:
        """A :class:`RunSpec`'s default name: architecture, size and the sparsity knob when set."""
        if self.sparsity == "k":
            k = int(spec.k) if float(spec.k).is_integer() else spec.k
            return f"{spec.architecture}-{spec.d_sae}-k{k}"
        value = spec.l1_coefficient if self.sparsity == "l1" else spec.l0_coefficient
        if value is not None:
            return f"{spec.architecture}-{spec.d_sae}-{self.sparsity}_{value:g}"
        return f"{spec.architecture}-{spec.d_sae}"

    # ----- tensors ---------------------------------------------------------------------------------------------

    def init_tensors(self, sae, cfg, dtype: torch.dtype) -> None:
        """Register the extra parameters / buffers on a freshly built SAE."""

    @torch.no_grad()
    def centre_literal(self, sae) -> None:
        """``apply_b_dec_to_input=False``: biases that centre the inputs at b_dec, as subtracting it would."""
        sae.b_enc.copy_(-(sae.b_dec @ sae.W_enc))

    def export_tensors(self, sae) -> dict[str, Tensor]:
        """Our tensors as inference should see them, under our names."""
        return {name: getattr(sae, name) for name in BASE_TENSORS + self.extra_tensors}

    # ----- inference -------------------------------------------------------------------------------------------

    def encode(self, sae, x: Tensor) -> Tensor:
        """Codes of ``x`` (already through ``hook_sae_input``); the pre-activations go through hook_sae_acts_pre."""
        return self.activate(sae, sae.hook_sae_acts_pre(sae.pre_activations(x)))

    def activate(self, sae, pre: Tensor) -> Tensor:
        return F.relu(pre)

    def per_token_k(self, cfg) -> int | None:
        """Codes are each token's top-k pre-activations (for the sparse encoder of the feature pass)."""
        return None

    def code_cut(self, sae, threshold: float) -> Tensor | float | None:
        """A cut such that the codes above ``threshold`` are exactly the pre-activations above it; None when the
        codes are not pre-activations (the feature pass then encodes densely)."""
        return threshold

    # ----- training --------------------------------------------------------------------------------------------

    def select(self, sae, pre: Tensor) -> Selection:
        """The entries of the [batch, d_sae] pre-activations that can be non-zero or carry a gradient."""
        return select_above(pre, 0.0)

    def activation(self, sae, codes) -> Tensor:
        return codes.gate(F.relu(codes.pre))

    def reconstruct(self, sae, codes, f: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(x_hat, its loss or None for the plain mean squared error of x_hat)."""
        return codes.decode(f) + sae.b_dec, None

    def sparsity_loss(self, sae, codes, f: Tensor, n_rows: int, scale: float) -> Tensor | None:
        return None

    def aux_loss(self, sae, codes, aux_codes, f: Tensor, x: Tensor, recon: Tensor) -> Tensor | None:
        return None

    def min_active(self, f: Tensor, default: Tensor) -> Tensor:
        return default

    def dense_loss(self, sae, x: Tensor, x_in: Tensor, scale: float):
        """A fused dense objective (a TrainingOutput) replacing the generic dense path, or None."""
        return None

    def apply_constraints(self, sae, output) -> None:
        """After an optimizer step, beyond the unit-norm decoder rows."""

    # ----- the SAELens folder format ---------------------------------------------------------------------------

    def sae_lens_fields(self, cfg) -> dict[str, Any]:
        """cfg.json fields beyond the common ones."""
        return {}

    def config_from_sae_lens(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """:class:`SAEConfig` fields (beyond d_in, d_sae, apply_b_dec_to_input, dtype) from a SAELens cfg.json."""
        return {}


def auxk_loss(sae, aux_codes, x: Tensor, recon: Tensor) -> Tensor | None:
    """AuxK (Gao et al.): the dead latents' top ``aux_k`` reconstruct the residual, weighted ``aux_coefficient``.

    The residual already contains b_dec (x_hat does); the dead latents' reconstruction adds no bias, so b_dec is
    counted once."""
    if aux_codes is None:
        return None
    residual = (x - recon).detach()
    aux_f = aux_codes.gate(F.relu(aux_codes.pre))
    return sae.cfg.aux_coefficient * (aux_codes.decode(aux_f) - residual).pow(2).sum(-1).mean()


def aux_selection(sae, pre: Tensor, dead_mask: Tensor | None) -> Selection | None:
    cfg = sae.cfg
    if dead_mask is None or cfg.aux_coefficient <= 0:
        return None
    dead_idx = dead_mask.nonzero().squeeze(1)
    return select_aux(pre, dead_idx, int(cfg.aux_k)) if dead_idx.numel() > 0 else None


def batch_min_active(f: Tensor, default: Tensor) -> Tensor:
    """The smallest positive code of the batch (BatchTopK's threshold statistic)."""
    fd = f.detach()
    return torch.where(fd > 0, fd, torch.full_like(fd, math.inf)).min() if fd.numel() else default


# --------------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, SAEArchitecture] = {}


def register(arch: SAEArchitecture) -> SAEArchitecture:
    """Add an architecture under ``arch.name`` (a second one of the same name is an error)."""
    if not isinstance(arch, SAEArchitecture):
        raise ValueError(f"register() takes an SAEArchitecture instance, got {type(arch).__name__}")
    if arch.name in _REGISTRY and type(_REGISTRY[arch.name]) is not type(arch):
        raise ValueError(f"an SAE architecture named {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch
    return arch


def architectures() -> dict[str, SAEArchitecture]:
    """The registered architectures by name, in registration order."""
    return dict(_REGISTRY)


def find_architecture(name: Any) -> SAEArchitecture | None:
    return _REGISTRY.get(name) if isinstance(name, str) else None


def get_architecture(name: str) -> SAEArchitecture:
    """The architecture called ``name``; a ValueError listing the known ones otherwise."""
    arch = find_architecture(name)
    if arch is None:
        raise ValueError(f"unknown SAE architecture {name!r}: choose one of {', '.join(_REGISTRY)}")
    return arch


def architecture_for_sae_lens(name: str, source: str = "cfg.json") -> SAEArchitecture:
    """The architecture that loads SAELens's ``name`` (cfg.json's "architecture")."""
    for arch in _REGISTRY.values():
        if name in arch.sae_lens_reads:
            return arch
    known = [n for a in _REGISTRY.values() for n in a.sae_lens_reads]
    raise ValueError(f"{source}: SAELens architecture {name!r} is not supported; workbench.SAE loads "
                     f"{', '.join(known)} SAEs")


class ArchitectureNames(Sequence):
    """A live, read-only tuple-like view of the registered names (optionally those matching ``keep``)."""

    def __init__(self, keep=None):
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n, a in _REGISTRY.items() if self._keep is None or self._keep(a))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list, ArchitectureNames)) else other)

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())
