"""Sparse autoencoders on one hook's activations: the module every architecture shares, and a fast sparse path.

One :class:`SAE` module serves every registered architecture (``SAEConfig.architecture``, :data:`ARCHITECTURES`).
Each is one module of :mod:`workbench.sae.architectures` that owns what differs (config checks, extra tensors, the
codes at inference and the entries a training step selects, activation, losses, constraints, default learning
rate, SAELens mapping; docs/methods.md §23); this module owns what they share.

Shapes follow SAELens: ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in]. ``W_enc`` is kept column-major (each
latent's encoder vector contiguous in memory): the sparse backward writes whole latents at a time.

Training (:meth:`SAE.training_loss`) works on *selected entries*: the pre-activation matrix is computed once
without autograd, the architecture picks the entries that can be non-zero or carry a gradient, and only those
enter autograd. The decoder, and the gradients with respect to the encoder, then cost O(nnz * d_in) instead of
O(batch * d_sae * d_in). The same objective also runs densely (``sparse=False``); both paths give the same
gradients (tested), and ``sparse=None`` picks the dense one while codes are still dense (early ReLU training,
where relu runs one fused node). The kernels live in :mod:`workbench.sae.kernels`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from workbench.core.config import known_fields_only
from workbench.sae.architectures import ArchitectureNames, SAEArchitecture, get_architecture
from workbench.sae.architectures.base import aux_selection
from workbench.sae.architectures.jumprelu import JumpReLUFunction, StepFunction, rectangle  # noqa: F401 (public)
from workbench.sae.kernels import SelectedPreActivations, Selection, SparseDecode, Workspace, no_autocast

if TYPE_CHECKING:
    from typing import Self  # (Python 3.11; annotations only)

Architecture = str  # a registered architecture's name
# Live views of the registry (workbench.sae.architectures): every name, the TopK family (sparsity set by k), and
# those with a [d_sae] inference threshold.
ARCHITECTURES = ArchitectureNames()
TOPK_FAMILY = ArchitectureNames(lambda a: a.sparsity == "k")
THRESHOLD_ARCHITECTURES = ArchitectureNames(lambda a: a.has_threshold)
# Codes at most this dense (active entries / (batch * d_sae)) train on the sparse path: where the two paths cost the
# same on a 2-core AVX512-BF16 CPU (d_in 640, d_sae 8192, batch 4096; benchmarks/bench_train.py).
SPARSE_MAX_DENSITY = 0.125
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SAEConfig:
    """Shape, architecture and objective of one SAE. Fields left at ``None`` take the recipe's default.

    ``k`` is the number of active latents per token (topk) or its batch mean (batchtopk, matryoshka).
    ``l1_coefficient`` is lambda of the relu recipe. The paper used 5 with inputs scaled so that E||x||^2 = d_in;
    in residual streams dominated by a shared mean direction (Gemma-3-270M: 92% of E||x||^2) the per-token
    signal is a small part of that norm and lambda = 5 over-sparsifies (EV < 0.6, a quarter of latents dead);
    the default 1 gives L0 < 300 with EV > 0.8 there. Sweep it.
    ``l0_coefficient`` weighs jumprelu's L0 penalty; ``jumprelu_bandwidth`` is the STE kernel width and
    ``jumprelu_init_threshold`` the initial threshold (both default to 1e-3 * sqrt(d_in), see below).
    ``aux_k`` (default d_in // 2) dead latents reconstruct the residual in the AuxK loss, weighted
    ``aux_coefficient`` (1/32). ``matryoshka_widths`` are the nested prefix sizes (default d_sae/8, /4, /2, 1).
    """

    architecture: str
    d_in: int
    d_sae: int
    k: float = 32
    l1_coefficient: float = 1.0
    l0_coefficient: float = 2.0
    jumprelu_bandwidth: float | None = None
    jumprelu_init_threshold: float | None = None
    aux_k: int | None = None
    aux_coefficient: float = 1.0 / 32.0
    matryoshka_widths: tuple[int, ...] | None = None
    threshold_ema_rate: float = 0.01
    decoder_init_norm: float | None = None
    apply_b_dec_to_input: bool | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        arch = get_architecture(self.architecture)
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SAEConfig.{name} must be a positive integer, got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"SAEConfig.dtype {self.dtype!r} is not supported: use one of {', '.join(DTYPES)}")
        if self.matryoshka_widths is not None:
            self.matryoshka_widths = tuple(int(w) for w in self.matryoshka_widths)
        arch.validate(self)  # the architecture's own fields (k, matryoshka_widths, ...)
        if self.aux_k is None:
            self.aux_k = max(1, self.d_in // 2)
        if self.decoder_init_norm is None:
            self.decoder_init_norm = arch.decoder_init_norm
        if self.apply_b_dec_to_input is None:
            self.apply_b_dec_to_input = True
        # JumpReLU's published 1e-3 (bandwidth and initial threshold) is for E||x||^2 = 1; our inputs have
        # E||x||^2 = d_in, so pre-activations are sqrt(d_in) larger and so are these defaults.
        if self.jumprelu_bandwidth is None:
            self.jumprelu_bandwidth = 1e-3 * math.sqrt(self.d_in)
        if self.jumprelu_init_threshold is None:
            self.jumprelu_init_threshold = 1e-3 * math.sqrt(self.d_in)
        if self.jumprelu_bandwidth <= 0:
            raise ValueError(f"jumprelu_bandwidth must be > 0, got {self.jumprelu_bandwidth}")

    @property
    def unit_norm_decoder(self) -> bool:
        """Whether decoder rows are kept at unit norm (the architecture's choice; relu's penalty weighs the norm)."""
        return get_architecture(self.architecture).unit_norm_decoder

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        out = asdict(self)
        if out["matryoshka_widths"] is not None:
            out["matryoshka_widths"] = list(out["matryoshka_widths"])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        data = known_fields_only(cls, data, "SAEConfig field(s)")
        if data.get("matryoshka_widths") is not None:
            data["matryoshka_widths"] = tuple(data["matryoshka_widths"])
        return cls(**data)


@dataclass
class SAEMetadata:
    """Where the SAE's activations come from (saved in cfg.json's ``metadata``, as SAELens does)."""

    model_name: str | None = None
    hook_name: str | None = None
    context_size: int | None = None
    prepend_bos: bool = True
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------------------


def geometric_median(points: Tensor, iters: int = 64, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to ``points`` [n, d]."""
    points = points.detach().to(torch.float64)
    median = points.mean(0)
    for _ in range(iters):
        dist = (points - median).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(0) / weights.sum()
        shift = (new - median).norm() / median.norm().clamp_min(1e-12)
        median = new
        if shift < tol:
            break
    return median


# --------------------------------------------------------------------------------------------------------------
# The two views of a step's codes: selected entries (sparse) or the full matrix (dense)
# --------------------------------------------------------------------------------------------------------------


class _SparseCodes:
    def __init__(self, sae: "SAE", sel: Selection, x_in: Tensor):
        self.sae, self.sel = sae, sel
        b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
        self.pre = SelectedPreActivations.apply(sel.pre, sae.W_enc, sae.b_enc, b_dec, x_in, sel)

    def per_latent(self, t: Tensor) -> Tensor:
        return t.index_select(0, self.sel.idx)  # backward: index_add_, not index_put_ with accumulate

    def gate(self, f: Tensor) -> Tensor:
        return f

    def decode(self, f: Tensor, lo: int = 0, hi: int | None = None, frozen: bool = False) -> Tensor:
        """``f @ W_dec`` over latents [lo, hi); ``frozen``: no gradient to W_dec."""
        sel = self.sel
        if lo > 0 or (hi is not None and hi < sel.n_latents):
            keep = (sel.idx >= lo) & (sel.idx < (hi if hi is not None else sel.n_latents))
            sel, f = sel.subset(keep), f[keep]
        return SparseDecode.apply(f, self.sae.W_dec.detach() if frozen else self.sae.W_dec, sel)

    def active_stats(self, f: Tensor) -> tuple[Tensor, Tensor]:
        positive = (f.detach() > 0).to(torch.float32)
        counts = torch.zeros(self.sel.n_latents, dtype=torch.float32, device=f.device)
        return counts.index_add_(0, self.sel.idx, positive) > 0, positive.sum()


class _DenseCodes:
    def __init__(self, pre: Tensor, mask: Tensor | None, W_dec: Tensor):
        self.pre, self.mask, self.W_dec = pre, mask, W_dec

    def per_latent(self, t: Tensor) -> Tensor:
        return t.expand_as(self.pre)

    def gate(self, f: Tensor) -> Tensor:
        return f if self.mask is None else f * self.mask.to(f.dtype)

    def decode(self, f: Tensor, lo: int = 0, hi: int | None = None, frozen: bool = False) -> Tensor:
        hi = f.shape[1] if hi is None else hi
        return f[:, lo:hi] @ (self.W_dec.detach() if frozen else self.W_dec)[lo:hi]

    def active_stats(self, f: Tensor) -> tuple[Tensor, Tensor]:
        fd = f.detach()  # every architecture's codes are >= 0
        return fd.sum(0) > 0, torch.count_nonzero(fd)


@dataclass
class TrainingOutput:
    """One training step's loss (differentiable) and detached statistics of the batch."""

    loss: Tensor
    mse: Tensor  # mean over tokens of ||x - x_hat||^2
    sparsity_loss: Tensor  # the architecture's penalty (relu: lambda-weighted L1; jumprelu: L0), else 0
    aux_loss: Tensor  # the architecture's auxiliary loss (topk family: AuxK), else 0
    l0: Tensor  # mean number of active latents per token
    fvu_num: Tensor  # sum ||x - x_hat||^2 over the batch
    fvu_den: Tensor  # sum ||x - mean(x)||^2 over the batch
    fired: Tensor  # [d_sae] bool: the latent fired at least once in this batch
    min_active: Tensor  # smallest positive activation (BatchTopK's threshold statistic; inf for the others)
    sparse: bool  # which path ran


# --------------------------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------------------------


class SAE(HookedRootModule):
    """A sparse autoencoder in one of the registered architectures (:mod:`workbench.sae.architectures`).

    ``encode`` / ``decode`` / ``forward`` take raw activations of any leading shape ``[..., d_in]``. Hook points:
    ``hook_sae_input``, ``hook_sae_acts_pre``, ``hook_sae_acts_post`` (the feature activations),
    ``hook_sae_recons``, ``hook_sae_output`` (``sae.run_with_cache(x)`` or ``sae.hook_sae_acts_post.add_hook``).
    """

    threshold: Tensor  # [d_sae]: the inference threshold of the architectures that have one (set by init_tensors)

    def __init__(self, cfg: SAEConfig, metadata: SAEMetadata | None = None, *, seed: int | None = 0,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.metadata = metadata if metadata is not None else SAEMetadata()
        n, d, dtype = cfg.d_sae, cfg.d_in, cfg.torch_dtype
        if seed is None:  # weights about to be loaded: skip the random draw
            w_dec = torch.zeros(n, d, dtype=torch.float64)
        else:
            w_dec = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            assert cfg.decoder_init_norm is not None  # SAEConfig.__post_init__ fills it from the architecture
            w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * float(cfg.decoder_init_norm)
        self.W_dec = nn.Parameter(w_dec.to(dtype).contiguous())
        self.W_enc = nn.Parameter(w_dec.to(dtype).clone().t())  # W_dec^T, column-major storage
        self.b_enc = nn.Parameter(torch.zeros(n, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d, dtype=dtype))
        self.arch.init_tensors(self, cfg, dtype)  # threshold, r_mag, ...
        self.hook_sae_input = HookPoint()
        self.hook_sae_acts_pre = HookPoint()
        self.hook_sae_acts_post = HookPoint()
        self.hook_sae_recons = HookPoint()
        self.hook_sae_output = HookPoint()
        self.setup()
        self._workspace = Workspace()  # training buffers reused between steps (never saved or copied)
        self.to(device)

    # ----- properties -----------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    @property
    def arch(self) -> SAEArchitecture:
        """The registered architecture (:mod:`workbench.sae.architectures`) that defines this SAE's codes."""
        return get_architecture(self.cfg.architecture)

    @property
    def tensor_names(self) -> tuple[str, ...]:
        """The SAE's trained and saved tensors: W_enc, b_enc, W_dec, b_dec and the architecture's own."""
        return ("W_enc", "b_enc", "W_dec", "b_dec") + self.arch.extra_tensors

    # ----- inference ------------------------------------------------------------------------------------------

    def _check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"SAE expects activations with last dimension d_in={self.cfg.d_in}, got shape "
                             f"{tuple(x.shape)}: check that the SAE and the activations come from the same hook")

    def pre_activations(self, x: Tensor) -> Tensor:
        x_in = x - self.b_dec if self.cfg.apply_b_dec_to_input else x
        return x_in @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [..., d_sae]. batchtopk/matryoshka use their global threshold at inference."""
        self._check_input(x)
        x = self.hook_sae_input(x.to(self.dtype))
        return self.hook_sae_acts_post(self.arch.encode(self, x))

    def decode(self, acts: Tensor) -> Tensor:
        return self.hook_sae_recons(acts @ self.W_dec + self.b_dec)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x``."""
        return self.hook_sae_output(self.decode(self.encode(x)))

    # ----- initialisation and folding -------------------------------------------------------------------------

    @torch.no_grad()
    def init_from_data(self, sample: Tensor, method: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
                       ) -> None:
        """Set b_dec to the geometric median (or mean) of ``sample`` [n, d_in] (already scaled).

        Every architecture's encoder subtracts b_dec by default, so it then sees centred inputs. An SAE built with
        ``apply_b_dec_to_input=False`` (relu's literal form) instead gets b_enc = -W_enc^T b_dec, which centres its
        inputs at the start in the same way.
        """
        self._check_input(sample)
        if method == "zeros":
            return
        if method == "geometric_median":
            centre = geometric_median(sample)
        elif method == "mean":
            centre = sample.to(torch.float64).mean(0)
        else:
            raise ValueError(f"unknown b_dec init {method!r}: use geometric_median, mean or zeros")
        self.b_dec.copy_(centre.to(self.dtype))
        if not self.cfg.apply_b_dec_to_input:
            self.arch.centre_literal(self)

    @torch.no_grad()
    def folded(self, input_scale: float) -> Self:
        """A copy that takes raw activations, for an SAE trained on ``input_scale * x``."""
        out = copy.deepcopy(self)
        s = float(input_scale)
        out.W_enc.mul_(s)
        out.W_dec.div_(s)
        out.b_dec.div_(s)
        return out

    # ----- training -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _selection_pre(self, x_in: Tensor, dtype: torch.dtype) -> Tensor:
        """x_in @ W_enc + b_enc without autograd, in ``dtype``, only to choose the active entries.

        The product goes into a reused buffer (see :class:`Workspace`).
        """
        if torch.is_autocast_enabled(x_in.device.type):
            return torch.addmm(self.b_enc, x_in, self.W_enc)
        buf = self._workspace.get("selection_pre", (x_in.shape[0], self.cfg.d_sae), dtype, x_in.device)
        return torch.addmm(self.b_enc.to(dtype), x_in.to(dtype), self.W_enc.to(dtype), out=buf)

    def training_loss(self, x: Tensor, *, dead_mask: Tensor | None = None, sparsity_scale: float = 1.0,
                      sparse: bool | None = None, sparse_max_density: float = SPARSE_MAX_DENSITY,
                      density_hint: float | None = None, selection_dtype: torch.dtype | None = None) -> TrainingOutput:
        """The architecture's loss on a batch ``x`` [batch, d_in] of *scaled* activations.

        ``dead_mask`` [d_sae] marks latents dead over the tracking window (AuxK uses them); ``sparsity_scale``
        multiplies lambda (the warm-up).

        Path: ``sparse`` forces one. ``None`` takes the sparse path when the density of the codes (active entries
        / (batch * d_sae)) is at most ``sparse_max_density``. Where the dense path needs no selection (relu,
        jumprelu, gated), ``density_hint`` (the previous step's density) decides before any selection, so a dense step never pays for one; without it the
        selection's own density decides.

        ``selection_dtype`` (e.g. bfloat16, several times faster on CPUs with AVX512-BF16) is the precision of the
        pre-activation matrix used only to *choose* the active entries; their values, the loss and every gradient
        stay in the SAE's dtype. Near-ties at the selection boundary may then resolve differently; ``None``
        selects in full precision (exact).
        """
        cfg = self.cfg
        if x.dim() != 2:
            raise ValueError(f"training_loss expects a [batch, d_in] matrix, got shape {tuple(x.shape)}")
        self._check_input(x)
        n_rows, n = x.shape[0], cfg.d_sae
        x = x.to(self.dtype)
        x_in = x - self.b_dec if cfg.apply_b_dec_to_input else x
        arch = self.arch
        threshold_free = not arch.selects_for_dense  # the dense path needs no selection
        if sparse is None and threshold_free and density_hint is not None:
            sparse = density_hint <= sparse_max_density
        sel: Selection | None = None
        aux_sel: Selection | None = None
        if sparse is not False or not threshold_free:
            sel, aux_sel = self._selections(x_in.detach(), dead_mask, selection_dtype)
        # (sel is set whenever sparse is None, whenever use_sparse holds and whenever the architecture selects)
        use_sparse = sparse if sparse is not None else (sel is not None and sel.nnz <= sparse_max_density * n_rows * n)
        autocast = torch.is_autocast_enabled(x.device.type)

        dense = None
        codes: _SparseCodes | _DenseCodes
        aux_codes: _SparseCodes | _DenseCodes | None
        if use_sparse:
            assert sel is not None
            codes = _SparseCodes(self, sel, x_in.detach())
            aux_codes = _SparseCodes(self, aux_sel, x_in.detach()) if aux_sel is not None else None
        elif not autocast and (dense := arch.dense_loss(self, x, x_in, sparsity_scale)) is not None:
            return dense  # a fused dense objective (relu)
        else:
            pre = torch.addmm(self.b_enc, x_in, self.W_enc)
            mask = sel.dense_mask() if arch.selects_for_dense and sel is not None else None
            codes = _DenseCodes(pre, mask, self.W_dec)
            aux_codes = _DenseCodes(pre, aux_sel.dense_mask(), self.W_dec) if aux_sel is not None else None

        f = arch.activation(self, codes)
        zero = x.new_zeros(())
        recon, loss = arch.reconstruct(self, codes, f, x)  # loss: None for the plain MSE of recon
        err = recon - x
        per_token = err.pow(2).sum(-1)
        mse = per_token.mean()
        if loss is None:
            loss = zero + mse

        sparsity_loss = arch.sparsity_loss(self, codes, f, n_rows, sparsity_scale)
        sparsity_loss = zero if sparsity_loss is None else sparsity_loss
        loss = loss + sparsity_loss

        aux_loss = arch.aux_loss(self, codes, aux_codes, f, x, recon)
        if aux_loss is None:
            aux_loss = zero
        else:
            loss = loss + aux_loss

        with torch.no_grad():
            fired, n_active = codes.active_stats(f)
            min_active = arch.min_active(f, x.new_full((), math.inf))
        return self._output(x, loss, mse, sparsity_loss, aux_loss, per_token, fired, n_active, min_active,
                            bool(use_sparse))

    @torch.no_grad()
    def _selections(self, x_in: Tensor, dead_mask: Tensor | None,
                    selection_dtype: torch.dtype | None) -> tuple[Selection, Selection | None]:
        """The active entries of the step and, for the TopK family with dead latents, AuxK's entries."""
        pre = self._selection_pre(x_in, selection_dtype or self.dtype)
        low_precision = pre.dtype != self.dtype  # asked for, or bf16 autocast on CUDA
        sel = self.arch.select(self, pre)
        aux_sel = aux_selection(self, pre, dead_mask) if self.arch.auxk else None
        del pre
        if low_precision:
            with no_autocast(x_in.device):
                for s in (sel, aux_sel):
                    if s is not None:
                        s.exact_pre(x_in, self.W_enc.detach(), self.b_enc.detach())
        return sel, aux_sel

    @staticmethod
    def _output(x: Tensor, loss: Tensor, mse: Tensor, sparsity_loss: Tensor, aux_loss: Tensor, per_token: Tensor,
                fired: Tensor, n_active: Tensor, min_active: Tensor, sparse: bool) -> TrainingOutput:
        with torch.no_grad():
            xf = x.detach().to(torch.float32)
            fvu_den = (xf - xf.mean(0)).pow(2).sum()
        return TrainingOutput(loss=loss, mse=mse.detach(), sparsity_loss=sparsity_loss.detach(),
                              aux_loss=aux_loss.detach(), l0=n_active.to(torch.float32) / x.shape[0],
                              fvu_num=per_token.detach().sum().to(torch.float32), fvu_den=fvu_den, fired=fired,
                              min_active=min_active.to(torch.float32), sparse=sparse)

    def release_training_buffers(self) -> None:
        """Free the [batch, d_sae] buffers that training steps reuse (they come back on the next step)."""
        self._workspace.clear()

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Unit-norm architectures: drop the component of each decoder row's gradient along the row."""
        if not self.cfg.unit_norm_decoder or self.W_dec.grad is None:
            return
        w, g = self.W_dec.detach(), self.W_dec.grad
        # rows are unit norm (apply_constraints renormalises them after every step)
        dots = torch.bmm(g.unsqueeze(1), w.unsqueeze(2)).reshape(-1, 1)
        g.addcmul_(w, dots, value=-1.0)

    @torch.no_grad()
    def apply_constraints(self, output: TrainingOutput | None = None) -> None:
        """After an optimizer step: unit-norm decoder rows, then the architecture's own (non-negative jumprelu
        thresholds, BatchTopK's EMA)."""
        if self.cfg.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
        self.arch.apply_constraints(self, output)


def sae_parameters_dict(sae: SAE) -> dict[str, Tensor]:
    """Named parameters and buffers, contiguous, in SAELens's names and shapes (what inference reads)."""
    rename = sae.arch.sae_lens_tensor_names
    return {rename.get(k, k): v.detach().contiguous() for k, v in sae.arch.export_tensors(sae).items()}


@torch.no_grad()
def load_parameters(sae: SAE, tensors: dict[str, Tensor], source: str = "tensors") -> None:
    """Copy SAELens-named tensors into ``sae`` (keeping its memory layout), checking names and shapes."""
    rename = sae.arch.sae_lens_tensor_names
    expected = {rename.get(n, n): (n, tuple(getattr(sae, n).shape)) for n in sae.tensor_names}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{source} lacks tensor(s) {missing} needed by a {sae.cfg.architecture} SAE")
    for name, (ours, shape) in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{source}: tensor {name} has shape {tuple(t.shape)}, expected {shape} for d_in="
                             f"{sae.cfg.d_in}, d_sae={sae.cfg.d_sae}")
        getattr(sae, ours).copy_(t.to(sae.dtype))
