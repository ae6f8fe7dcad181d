"""Sparse autoencoders on one hook's activations: the architectures, their objectives and a fast sparse path.

One :class:`SAE` module serves five architectures (``SAEConfig.architecture``):

- ``relu``: Scaling Monosemanticity / Anthropic's April-2024 recipe. ``f = ReLU(W_enc^T (x - b_dec) + b_enc)``,
  loss ``||x - x_hat||^2 + lambda * sum_i f_i ||W_dec[i]||``; no unit-norm constraint, decoder rows initialised
  at norm 0.1 with ``W_enc = W_dec^T``. The paper writes ``ReLU(W_enc x + b_enc)``: the same functions (b_enc
  absorbs ``W_enc^T b_dec``), but subtracting b_dec keeps the large mean that every token of a residual stream
  shares out of the encoder's gradient. Without it the L1 gradient pushes every latent down along that mean and
  a quarter of the latents died on Gemma-3-270M; ``apply_b_dec_to_input=False`` gives the literal form.
- ``topk`` (Gao et al. 2024): keep the k largest pre-activations; unit-norm decoder rows, with the gradient
  component parallel to each row removed; AuxK loss over dead latents.
- ``batchtopk``: the top ``k * batch`` pre-activations of the whole batch; at inference a global threshold,
  an EMA of the smallest kept activation.
- ``jumprelu``: per-latent threshold learned through a straight-through estimator (rectangle kernel) and a
  direct L0 penalty; unit-norm decoder as in Gemma Scope.
- ``matryoshka``: BatchTopK whose loss sums the reconstruction losses of nested prefixes of the dictionary.

Shapes follow SAELens: ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in]. ``W_enc`` is kept column-major (each
latent's encoder vector contiguous in memory): the sparse backward writes whole latents at a time.

Training (:meth:`SAE.training_loss`) works on *selected entries*: the pre-activation matrix is computed once
without autograd, the architecture picks the entries that can be non-zero or carry a gradient, and only those
enter autograd. The decoder, and the gradients with respect to the encoder, then cost O(nnz * d_in) instead of
O(batch * d_sae * d_in). The same objective also runs densely (``sparse=False``); both paths give the same
gradients (tested), and ``sparse=None`` picks the dense one while codes are still dense (early ReLU training).
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookedRootModule, HookPoint

from .config import known_fields_only

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu", "matryoshka"]
ARCHITECTURES: tuple[str, ...] = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")
TOPK_FAMILY: tuple[str, ...] = ("topk", "batchtopk", "matryoshka")
THRESHOLD_ARCHITECTURES: tuple[str, ...] = ("jumprelu", "batchtopk", "matryoshka")
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
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown SAE architecture {self.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SAEConfig.{name} must be a positive integer, got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"SAEConfig.dtype {self.dtype!r} is not supported: use one of {', '.join(DTYPES)}")
        if self.architecture in TOPK_FAMILY:
            if not (0 < self.k <= self.d_sae):
                raise ValueError(f"k={self.k} must be in (0, d_sae={self.d_sae}] for {self.architecture}")
            if self.architecture == "topk" and float(self.k) != int(self.k):
                raise ValueError(f"topk needs an integer k, got {self.k}; use batchtopk for a fractional mean k")
        if self.aux_k is None:
            self.aux_k = max(1, self.d_in // 2)
        if self.decoder_init_norm is None:
            self.decoder_init_norm = 0.1 if self.architecture == "relu" else 1.0
        if self.apply_b_dec_to_input is None:
            self.apply_b_dec_to_input = True
        if self.architecture == "matryoshka":
            widths = self.matryoshka_widths or tuple(
                sorted({max(1, self.d_sae // 8), max(1, self.d_sae // 4), max(1, self.d_sae // 2), self.d_sae}))
            widths = tuple(int(w) for w in widths)
            if widths[-1] != self.d_sae:
                widths = widths + (self.d_sae,)
            if any(b <= a for a, b in zip(widths, widths[1:])) or widths[0] < 1:
                raise ValueError(f"matryoshka_widths must be strictly increasing positive sizes ending at d_sae, "
                                 f"got {list(widths)}")
            self.matryoshka_widths = widths
        elif self.matryoshka_widths is not None:
            self.matryoshka_widths = tuple(int(w) for w in self.matryoshka_widths)
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
        """Every architecture but relu keeps decoder rows at unit norm (relu puts the norm in its penalty)."""
        return self.architecture != "relu"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        out = asdict(self)
        if out["matryoshka_widths"] is not None:
            out["matryoshka_widths"] = list(out["matryoshka_widths"])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SAEConfig":
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


def rectangle(u: Tensor) -> Tensor:
    """The STE kernel: 1 on (-1/2, 1/2), 0 elsewhere."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """``pre * H(pre - theta)``; d/dpre = H(pre - theta); d/dtheta by the rectangle-kernel STE."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = grad * (pre > theta).to(grad.dtype)
        grad_theta = -(theta / bw) * rectangle((pre - theta) / bw) * grad
        return grad_pre, grad_theta, None


class StepFunction(torch.autograd.Function):
    """``H(pre - theta)``, for the L0 penalty; the STE sends gradient to theta only."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        bw = ctx.bandwidth
        return None, -(1.0 / bw) * rectangle((pre - theta) / bw) * grad, None


# --------------------------------------------------------------------------------------------------------------
# Sparse selections and the sparse kernels
# --------------------------------------------------------------------------------------------------------------


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class Selection:
    """Entries (rows[e], idx[e]) of a [n_rows, n_latents] code matrix, rows ascending (CSR order).

    ``pre`` holds the pre-activations at those entries (no autograd). The transposed plan (entries sorted by
    latent) is built once and shared by every sparse backward of the step.
    """

    def __init__(self, rows: Tensor, idx: Tensor, pre: Tensor, n_rows: int, n_latents: int):
        self.rows, self.idx, self.pre = rows, idx, pre
        self.n_rows, self.n_latents = n_rows, n_latents
        self._offsets: Tensor | None = None
        self._plan: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def nnz(self) -> int:
        return self.idx.numel()

    def offsets(self) -> Tensor:
        """CSR row pointer [n_rows + 1]."""
        if self._offsets is None:
            counts = torch.bincount(self.rows, minlength=self.n_rows) if self.nnz else \
                torch.zeros(self.n_rows, dtype=torch.long, device=self.rows.device)
            self._offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return self._offsets

    def _transpose_plan(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._plan is None:
            order = torch.argsort(self.idx, stable=True)
            counts = torch.bincount(self.idx, minlength=self.n_latents)
            crow_t = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            self._plan = (order, crow_t, self.rows[order])
        return self._plan

    def transpose_matmul(self, values: Tensor, dense: Tensor) -> Tensor:
        """S^T @ dense, where S[rows[e], idx[e]] = values[e]: [n_latents, dense.shape[1]].

        An embedding-bag over the entries sorted by latent: each latent's row is the weighted sum of the dense
        rows of its entries (faster than a CSR product on CPU, and supported on CUDA)."""
        if self.nnz == 0:
            return dense.new_zeros(self.n_latents, dense.shape[1])
        order, crow_t, col_t = self._transpose_plan()
        return F.embedding_bag(col_t, dense, crow_t[:-1], per_sample_weights=values[order].to(dense.dtype),
                               mode="sum")

    def matmul(self, values: Tensor, weight: Tensor) -> Tensor:
        """S @ weight: [n_rows, weight.shape[1]] (an embedding-bag sum of weight rows)."""
        if self.nnz == 0:
            return weight.new_zeros(self.n_rows, weight.shape[1])
        return F.embedding_bag(self.idx, weight, self.offsets()[:-1], per_sample_weights=values.to(weight.dtype),
                               mode="sum")

    def sampled_dot(self, left: Tensor, weight: Tensor) -> Tensor:
        """left[rows[e]] . weight[idx[e]] for every entry (sampled dense-dense matmul)."""
        if self.nnz == 0:
            return left.new_zeros(0)
        pattern = _csr(self.offsets(), self.idx, left.new_zeros(self.nnz), (self.n_rows, self.n_latents))
        return torch.sparse.sampled_addmm(pattern, left, weight.t(), beta=0.0).values()

    def exact_pre(self, x_in: Tensor, W_enc: Tensor, b_enc: Tensor) -> None:
        """Replace ``pre`` by full-precision x_in[rows] . W_enc[:, idx] + b_enc[idx] (after a low-precision
        selection GEMM)."""
        self.pre = self.sampled_dot(x_in.to(W_enc.dtype), W_enc.t()) + b_enc[self.idx]

    def subset(self, keep: Tensor) -> "Selection":
        return Selection(self.rows[keep], self.idx[keep], self.pre[keep], self.n_rows, self.n_latents)

    def dense_mask(self) -> Tensor:
        mask = torch.zeros(self.n_rows, self.n_latents, dtype=torch.bool, device=self.idx.device)
        mask[self.rows, self.idx] = True
        return mask


def select_topk(pre: Tensor, k: int) -> Selection:
    """The k largest entries of every row."""
    n_rows, n = pre.shape
    vals, idx = pre.topk(int(k), dim=-1, sorted=False)
    rows = torch.arange(n_rows, device=pre.device).repeat_interleave(int(k))
    return Selection(rows, idx.reshape(-1), vals.reshape(-1), n_rows, n)


def select_batch_topk(pre: Tensor, k: float) -> Selection:
    """The ``round(k * n_rows)`` largest entries of the whole matrix (BatchTopK), in row order.

    On CPU the exact answer comes from per-row candidates (each row's top 4k): only if some row had all of its
    candidates kept could it hold more, and then the full flat top-k runs instead.
    """
    n_rows, n = pre.shape
    m = max(1, min(int(round(k * n_rows)), n_rows * n))
    cand = min(n, max(4 * int(math.ceil(k)), 8))
    flat_idx = None
    if pre.device.type == "cpu" and cand < n:
        cv, ci = pre.topk(cand, dim=-1, sorted=False)
        top_v, top_pos = cv.reshape(-1).topk(m, sorted=False)
        rows = torch.div(top_pos, cand, rounding_mode="floor")
        if int(torch.bincount(rows, minlength=n_rows).max()) < cand:
            flat_idx = rows * n + ci.reshape(-1)[top_pos]
            values = top_v
    if flat_idx is None:
        values, flat_idx = pre.reshape(-1).topk(m, sorted=False)
    flat_idx, order = flat_idx.sort()
    rows = torch.div(flat_idx, n, rounding_mode="floor")
    return Selection(rows, flat_idx - rows * n, values[order], n_rows, n)


def select_above(pre: Tensor, threshold: Tensor | float) -> Selection:
    """Every entry with pre > threshold (a scalar or one value per latent)."""
    n_rows, n = pre.shape
    nz = (pre > threshold).nonzero()
    rows, idx = nz[:, 0].contiguous(), nz[:, 1].contiguous()
    return Selection(rows, idx, pre[rows, idx], n_rows, n)


def select_aux(pre: Tensor, dead_idx: Tensor, k_aux: int) -> Selection:
    """AuxK: for every row, the k_aux largest pre-activations among the dead latents ``dead_idx``."""
    n_rows, n = pre.shape
    k_aux = min(int(k_aux), dead_idx.numel())
    cand = pre.index_select(1, dead_idx)
    vals, local = cand.topk(k_aux, dim=-1, sorted=False)
    rows = torch.arange(n_rows, device=pre.device).repeat_interleave(k_aux)
    return Selection(rows, dead_idx[local.reshape(-1)], vals.reshape(-1), n_rows, n)


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


class SelectedPreActivations(torch.autograd.Function):
    """Pre-activations at a selection's entries, with a sparse backward.

    Forward returns ``sel.pre`` (already computed). Backward, for an entry gradient g:
    dW_enc[:, j] = sum_e g_e x_c[rows_e] over entries of latent j; db_enc = scatter-sum of g;
    db_dec = -W_enc @ db_enc when the encoder subtracts b_dec. The input x gets no gradient.
    """

    @staticmethod
    def forward(ctx, pre: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, x_in: Tensor,
                sel: Selection) -> Tensor:
        ctx.save_for_backward(W_enc, x_in)
        ctx.sel = sel
        ctx.has_b_dec = b_dec is not None
        return pre.to(W_enc.dtype).clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        W_enc, x_in = ctx.saved_tensors
        sel: Selection = ctx.sel
        with _no_autocast(grad.device):
            grad = grad.to(W_enc.dtype)
            grad_w = sel.transpose_matmul(grad, x_in.to(W_enc.dtype)).t() if ctx.needs_input_grad[1] else None
            grad_b_enc = torch.zeros(sel.n_latents, dtype=grad.dtype, device=grad.device).index_add_(0, sel.idx, grad)
            grad_b_dec = -(W_enc @ grad_b_enc) if ctx.has_b_dec and ctx.needs_input_grad[3] else None
        return None, grad_w, grad_b_enc, grad_b_dec, None, None


class SparseDecode(torch.autograd.Function):
    """sum_e values_e W_dec[idx_e] into row rows_e (no bias); backward touches only the selected rows."""

    @staticmethod
    def forward(ctx, values: Tensor, W_dec: Tensor, sel: Selection) -> Tensor:
        ctx.save_for_backward(values, W_dec)
        ctx.sel = sel
        with _no_autocast(W_dec.device):
            return sel.matmul(values, W_dec)

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, W_dec = ctx.saved_tensors
        sel: Selection = ctx.sel
        with _no_autocast(grad.device):
            grad = grad.to(W_dec.dtype).contiguous()
            grad_values = sel.sampled_dot(grad, W_dec) if ctx.needs_input_grad[0] else None
            grad_w = sel.transpose_matmul(values.detach(), grad) if ctx.needs_input_grad[1] else None
        return grad_values, grad_w, None


# --------------------------------------------------------------------------------------------------------------
# The two views of a step's codes: selected entries (sparse) or the full matrix (dense)
# --------------------------------------------------------------------------------------------------------------


class _SparseCodes:
    def __init__(self, sae: "SAE", sel: Selection, x_in: Tensor):
        self.sae, self.sel = sae, sel
        b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
        self.pre = SelectedPreActivations.apply(sel.pre, sae.W_enc, sae.b_enc, b_dec, x_in, sel)

    def per_latent(self, t: Tensor) -> Tensor:
        return t[self.sel.idx]

    def gate(self, f: Tensor) -> Tensor:
        return f

    def decode(self, f: Tensor, lo: int = 0, hi: int | None = None) -> Tensor:
        sel = self.sel
        if lo > 0 or (hi is not None and hi < sel.n_latents):
            keep = (sel.idx >= lo) & (sel.idx < (hi if hi is not None else sel.n_latents))
            sel, f = sel.subset(keep), f[keep]
        return SparseDecode.apply(f, self.sae.W_dec, sel)

    def fired_counts(self, f: Tensor) -> Tensor:
        counts = torch.zeros(self.sel.n_latents, dtype=torch.float32, device=f.device)
        return counts.index_add_(0, self.sel.idx, (f.detach() > 0).to(torch.float32))


class _DenseCodes:
    def __init__(self, pre: Tensor, mask: Tensor | None, W_dec: Tensor):
        self.pre, self.mask, self.W_dec = pre, mask, W_dec

    def per_latent(self, t: Tensor) -> Tensor:
        return t.expand_as(self.pre)

    def gate(self, f: Tensor) -> Tensor:
        return f if self.mask is None else f * self.mask.to(f.dtype)

    def decode(self, f: Tensor, lo: int = 0, hi: int | None = None) -> Tensor:
        hi = f.shape[1] if hi is None else hi
        return f[:, lo:hi] @ self.W_dec[lo:hi]

    def fired_counts(self, f: Tensor) -> Tensor:
        return (f.detach() > 0).sum(0).to(torch.float32)


@dataclass
class TrainingOutput:
    """One training step's loss (differentiable) and detached statistics of the batch."""

    loss: Tensor
    mse: Tensor  # mean over tokens of ||x - x_hat||^2
    sparsity_loss: Tensor  # relu: lambda-weighted L1; jumprelu: L0 penalty; else 0
    aux_loss: Tensor  # AuxK (topk family), else 0
    l0: Tensor  # mean number of active latents per token
    fvu_num: Tensor  # sum ||x - x_hat||^2 over the batch
    fvu_den: Tensor  # sum ||x - mean(x)||^2 over the batch
    fired: Tensor  # [d_sae] activations per latent in this batch
    min_active: Tensor  # smallest positive activation (the BatchTopK threshold statistic)
    sparse: bool  # which path ran


# --------------------------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------------------------


class SAE(HookedRootModule):
    """A sparse autoencoder in one of the five architectures.

    ``encode`` / ``decode`` / ``forward`` take raw activations of any leading shape ``[..., d_in]``. Hook points:
    ``hook_sae_input``, ``hook_sae_acts_pre``, ``hook_sae_acts_post`` (the feature activations),
    ``hook_sae_recons``, ``hook_sae_output`` (``sae.run_with_cache(x)`` or ``sae.hook_sae_acts_post.add_hook``).
    """

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
            w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * float(cfg.decoder_init_norm)
        self.W_dec = nn.Parameter(w_dec.to(dtype).contiguous())
        self.W_enc = nn.Parameter(w_dec.to(dtype).clone().t())  # W_dec^T, column-major storage
        self.b_enc = nn.Parameter(torch.zeros(n, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d, dtype=dtype))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.full((n,), float(cfg.jumprelu_init_threshold), dtype=dtype))
        elif cfg.architecture in THRESHOLD_ARCHITECTURES:
            # batchtopk / matryoshka: the EMA of the smallest kept activation; -1 means "not measured yet"
            self.register_buffer("threshold", torch.full((n,), -1.0, dtype=dtype))
        self.hook_sae_input = HookPoint()
        self.hook_sae_acts_pre = HookPoint()
        self.hook_sae_acts_post = HookPoint()
        self.hook_sae_recons = HookPoint()
        self.hook_sae_output = HookPoint()
        self.setup()
        self._pre_buffer: Tensor | None = None
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
        pre = self.hook_sae_acts_pre(self.pre_activations(x))
        arch = self.cfg.architecture
        if arch == "relu":
            acts = F.relu(pre)
        elif arch == "topk":
            vals, idx = pre.topk(int(self.cfg.k), dim=-1, sorted=False)
            acts = torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))
        else:
            acts = F.relu(pre) * (pre > self.threshold.clamp_min(0)).to(pre.dtype)
        return self.hook_sae_acts_post(acts)

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

        For relu, whose encoder does not subtract b_dec, b_enc is set to -W_enc^T b_dec so that the encoder
        initially sees centred inputs, as the other architectures do.
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
            self.b_enc.copy_(-(self.b_dec @ self.W_enc))

    @torch.no_grad()
    def folded(self, input_scale: float) -> "SAE":
        """A copy that takes raw activations, for an SAE trained on ``input_scale * x``."""
        out = copy.deepcopy(self)
        out._pre_buffer = None
        s = float(input_scale)
        out.W_enc.mul_(s)
        out.W_dec.div_(s)
        out.b_dec.div_(s)
        return out

    # ----- training -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _selection_pre(self, x_in: Tensor, dtype: torch.dtype) -> Tensor:
        """x_in @ W_enc + b_enc without autograd, in ``dtype``, only to choose the active entries.

        On CPU the product goes into a reused buffer: a fresh [batch, d_sae] allocation page-faults each step.
        """
        if x_in.device.type != "cpu" or torch.is_autocast_enabled(x_in.device.type):
            if dtype == self.dtype:
                return torch.addmm(self.b_enc, x_in, self.W_enc)
            return torch.addmm(self.b_enc.to(dtype), x_in.to(dtype), self.W_enc.to(dtype))
        shape = (x_in.shape[0], self.cfg.d_sae)
        buf = self._pre_buffer
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            self._pre_buffer = None
            buf = self._pre_buffer = torch.empty(shape, dtype=dtype)
        torch.mm(x_in.to(dtype), self.W_enc.to(dtype), out=buf)
        return buf.add_(self.b_enc.to(dtype))

    def _select(self, pre: Tensor) -> Selection:
        arch, cfg = self.cfg.architecture, self.cfg
        if arch == "topk":
            return select_topk(pre, int(cfg.k))
        if arch in ("batchtopk", "matryoshka"):
            return select_batch_topk(pre, cfg.k)
        if arch == "relu":
            return select_above(pre, 0.0)
        # jumprelu: every entry the STE window touches, pre > theta - bandwidth / 2
        return select_above(pre, self.threshold.detach() - cfg.jumprelu_bandwidth / 2)

    def _activation(self, codes) -> Tensor:
        if self.cfg.architecture == "jumprelu":
            return JumpReLUFunction.apply(codes.pre, codes.per_latent(self.threshold), self.cfg.jumprelu_bandwidth)
        return codes.gate(F.relu(codes.pre))

    def training_loss(self, x: Tensor, *, dead_mask: Tensor | None = None, sparsity_scale: float = 1.0,
                      sparse: bool | None = None, sparse_max_density: float = 0.1,
                      selection_dtype: torch.dtype | None = None) -> TrainingOutput:
        """The architecture's loss on a batch ``x`` [batch, d_in] of *scaled* activations.

        ``dead_mask`` [d_sae] marks latents dead over the tracking window (AuxK uses them); ``sparsity_scale``
        multiplies lambda (the warm-up); ``sparse`` forces a path, ``None`` takes the sparse one when the
        selection's density is at most ``sparse_max_density``. ``selection_dtype`` (e.g. bfloat16, several
        times faster on CPUs with AVX512-BF16) is the precision of the pre-activation matrix used only to *choose*
        the active entries; their values, the loss and every gradient stay in the SAE's dtype. Near-ties at the
        selection boundary may then resolve differently; ``None`` selects in full precision (exact).
        """
        cfg = self.cfg
        if x.dim() != 2:
            raise ValueError(f"training_loss expects a [batch, d_in] matrix, got shape {tuple(x.shape)}")
        self._check_input(x)
        n_rows, n = x.shape[0], cfg.d_sae
        x = x.to(self.dtype)
        x_in = x - self.b_dec if cfg.apply_b_dec_to_input else x
        with torch.no_grad():
            x_in_ng = x_in.detach()
            pre_ng = self._selection_pre(x_in_ng, selection_dtype or self.dtype)
            low_precision = pre_ng.dtype != self.dtype  # asked for, or bf16 autocast on CUDA
            sel = self._select(pre_ng)
            aux_sel = None
            if cfg.architecture in TOPK_FAMILY and dead_mask is not None and cfg.aux_coefficient > 0:
                dead_idx = dead_mask.nonzero().squeeze(1)
                if dead_idx.numel() > 0:
                    aux_sel = select_aux(pre_ng, dead_idx, int(cfg.aux_k))
            del pre_ng
            if low_precision:
                with _no_autocast(x.device):
                    for s in (sel, aux_sel):
                        if s is not None:
                            s.exact_pre(x_in_ng, self.W_enc.detach(), self.b_enc.detach())
        use_sparse = sparse if sparse is not None else sel.nnz <= sparse_max_density * n_rows * n
        if use_sparse:
            codes = _SparseCodes(self, sel, x_in.detach())
            aux_codes = _SparseCodes(self, aux_sel, x_in.detach()) if aux_sel is not None else None
        else:
            pre = torch.addmm(self.b_enc, x_in, self.W_enc)
            mask = sel.dense_mask() if cfg.architecture in TOPK_FAMILY else None
            codes = _DenseCodes(pre, mask, self.W_dec)
            aux_codes = _DenseCodes(pre, aux_sel.dense_mask(), self.W_dec) if aux_sel is not None else None

        f = self._activation(codes)
        zero = x.new_zeros(())
        if cfg.architecture == "matryoshka":
            recon = self.b_dec.expand_as(x)
            loss = zero
            lo = 0
            for hi in cfg.matryoshka_widths:
                recon = recon + codes.decode(f, lo, hi)
                loss = loss + (recon - x).pow(2).sum(-1).mean()
                lo = hi
        else:
            recon = codes.decode(f) + self.b_dec
            loss = zero
        err = recon - x
        per_token = err.pow(2).sum(-1)
        mse = per_token.mean()
        if cfg.architecture != "matryoshka":
            loss = loss + mse

        sparsity_loss = zero
        if cfg.architecture == "relu":
            norms = self.W_dec.norm(dim=1)
            sparsity_loss = cfg.l1_coefficient * sparsity_scale * (f * codes.per_latent(norms)).sum() / n_rows
        elif cfg.architecture == "jumprelu":
            l0 = StepFunction.apply(codes.pre, codes.per_latent(self.threshold), cfg.jumprelu_bandwidth)
            sparsity_loss = cfg.l0_coefficient * sparsity_scale * l0.sum() / n_rows
        loss = loss + sparsity_loss

        aux_loss = zero
        if aux_codes is not None:
            # The residual already contains b_dec (x_hat does); the dead latents' reconstruction adds no bias,
            # so b_dec is counted once.
            residual = (x - recon).detach()
            aux_f = aux_codes.gate(F.relu(aux_codes.pre))
            aux_loss = cfg.aux_coefficient * (aux_codes.decode(aux_f) - residual).pow(2).sum(-1).mean()
            loss = loss + aux_loss

        with torch.no_grad():
            fired = codes.fired_counts(f)
            fd = f.detach()
            min_active = torch.where(fd > 0, fd, torch.full_like(fd, float("inf"))).min() if fd.numel() else \
                x.new_full((), float("inf"))
            xf = x.detach().to(torch.float32)
            fvu_den = (xf - xf.mean(0)).pow(2).sum()
        return TrainingOutput(loss=loss, mse=mse.detach(), sparsity_loss=sparsity_loss.detach(),
                              aux_loss=aux_loss.detach(), l0=fired.sum() / n_rows,
                              fvu_num=per_token.detach().sum().to(torch.float32), fvu_den=fvu_den, fired=fired,
                              min_active=min_active.to(torch.float32), sparse=bool(use_sparse))

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
        """After an optimizer step: unit-norm decoder rows, non-negative jumprelu thresholds, BatchTopK's EMA."""
        if self.cfg.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
        arch = self.cfg.architecture
        if arch == "jumprelu":
            self.threshold.clamp_(min=0.0)
        elif arch in ("batchtopk", "matryoshka") and output is not None:
            m = output.min_active.to(self.threshold.dtype)
            rate = self.cfg.threshold_ema_rate
            ema = torch.where(self.threshold < 0, m, (1 - rate) * self.threshold + rate * m)
            self.threshold.copy_(torch.where(torch.isfinite(m), ema, self.threshold))


def sae_parameters_dict(sae: SAE) -> dict[str, Tensor]:
    """Named parameters and the threshold buffer, contiguous, in SAELens's names and shapes."""
    out = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if sae.cfg.architecture in THRESHOLD_ARCHITECTURES:
        out["threshold"] = sae.threshold.clamp_min(0) if sae.cfg.architecture != "jumprelu" else sae.threshold
    return {k: v.detach().contiguous() for k, v in out.items()}


@torch.no_grad()
def load_parameters(sae: SAE, tensors: dict[str, Tensor], source: str = "tensors") -> None:
    """Copy SAELens-named tensors into ``sae`` (keeping its memory layout), checking names and shapes."""
    expected = {"W_enc": (sae.cfg.d_in, sae.cfg.d_sae), "b_enc": (sae.cfg.d_sae,),
                "W_dec": (sae.cfg.d_sae, sae.cfg.d_in), "b_dec": (sae.cfg.d_in,)}
    if sae.cfg.architecture in THRESHOLD_ARCHITECTURES:
        expected["threshold"] = (sae.cfg.d_sae,)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{source} lacks tensor(s) {missing} needed by a {sae.cfg.architecture} SAE")
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{source}: tensor {name} has shape {tuple(t.shape)}, expected {shape} for d_in="
                             f"{sae.cfg.d_in}, d_sae={sae.cfg.d_sae}")
        getattr(sae, name).copy_(t.to(sae.dtype))

