"""The kernels of an SAE training step: which code entries are active, and autograd functions that touch only
those (sparse) or run the dense ReLU step in one node with reused buffers.

- :class:`Selection` holds the active entries ``(rows[e], idx[e])`` of a ``[batch, d_sae]`` code matrix in CSR
  order, with their pre-activations; ``select_*`` build one per architecture.
- :class:`SelectedPreActivations` and :class:`SparseDecode` are the sparse encoder and decoder: forward and
  backward cost O(nnz * d_in) (embedding-bag sums and sampled dot products) instead of O(batch * d_sae * d_in).
- :class:`DenseReLU` is the ReLU step while codes are still dense (early training): five GEMMs and a few
  in-place passes, where autograd on the plain formula runs six (the sixth only to give ``x - b_dec`` its
  gradient) and allocates a fresh ``[batch, d_sae]`` matrix for every elementwise op.
- :class:`Workspace` keeps those ``[batch, d_sae]`` buffers between steps: on CPU a fresh allocation of that
  size page-faults on every step (about 30 ms for 134 MB).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor


class Workspace:
    """Named scratch tensors reused from one training step to the next.

    A buffer saved for backward and then overwritten by the next step's forward bumps its version counter, so a
    stale graph raises autograd's in-place error instead of computing wrong gradients.
    """

    def __init__(self) -> None:
        self._tensors: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        t = self._tensors.get(name)
        if t is None or tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != device:
            self._tensors.pop(name, None)  # free the old one before allocating
            t = self._tensors[name] = torch.empty(shape, dtype=dtype, device=device)
        return t

    def clear(self) -> None:
        self._tensors.clear()

    def __deepcopy__(self, memo) -> "Workspace":
        return Workspace()  # scratch space is never part of a copy


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
            # int32 keys sort about twice as fast as int64 ones on CPU
            keys = self.idx.to(torch.int32) if self.n_latents < 2**31 else self.idx
            order = torch.argsort(keys, stable=True)
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


def no_autocast(device: torch.device):
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
        with no_autocast(grad.device):
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
        with no_autocast(W_dec.device):
            return sel.matmul(values, W_dec)

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, W_dec = ctx.saved_tensors
        sel: Selection = ctx.sel
        with no_autocast(grad.device):
            grad = grad.to(W_dec.dtype).contiguous()
            grad_values = sel.sampled_dot(grad, W_dec) if ctx.needs_input_grad[0] else None
            grad_w = sel.transpose_matmul(values.detach(), grad) if ctx.needs_input_grad[1] else None
        return grad_values, grad_w, None


class DenseReLU(torch.autograd.Function):
    """The dense ReLU codes in one autograd node.

    Forward: ``f = relu(x_in @ W_enc + b_enc)`` into a reused buffer; returns ``f @ W_dec``, the column sums
    ``f.sum(0)`` and the number of non-zero codes (not differentiable). The L1 term is
    ``sum_j colsum_j * lambda * ||W_dec[j]||``, so its gradient reaches ``f`` as one broadcast add. Backward: ``g = (grad_decoded @ W_dec^T + grad_colsum) * [f > 0]`` in a second buffer, then
    ``dW_enc = x_in^T g``, ``db_enc = sum g``, ``dW_dec = f^T grad_decoded`` and, when ``x_in = x - b_dec``,
    ``db_dec = -W_enc db_enc``. ``x_in`` is detached: its only differentiable part is ``b_dec``, handled here.
    """

    @staticmethod
    def forward(ctx, x_in: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor | None,
                workspace: Workspace) -> tuple[Tensor, Tensor, Tensor]:
        shape = (x_in.shape[0], W_enc.shape[1])
        f = workspace.get("codes", shape, W_enc.dtype, W_enc.device)
        torch.addmm(b_enc, x_in, W_enc, out=f)
        f.relu_()
        ctx.save_for_backward(f, x_in, W_enc, W_dec)
        ctx.workspace, ctx.has_b_dec = workspace, b_dec is not None
        n_active = torch.count_nonzero(f)
        ctx.mark_non_differentiable(n_active)
        return f @ W_dec, f.sum(0), n_active

    @staticmethod
    def backward(ctx, grad_decoded: Tensor | None, grad_colsum: Tensor | None, _grad_count: Tensor | None):
        f, x_in, W_enc, W_dec = ctx.saved_tensors
        ws: Workspace = ctx.workspace
        g = ws.get("code_grad", tuple(f.shape), f.dtype, f.device)
        if grad_decoded is not None:
            torch.mm(grad_decoded, W_dec.t(), out=g)
        else:
            g.zero_()
        if grad_colsum is not None:
            g.add_(grad_colsum)
        inactive = ws.get("inactive", tuple(f.shape), torch.bool, f.device)
        torch.le(f, 0, out=inactive)
        g.masked_fill_(inactive, 0.0)
        needs = ctx.needs_input_grad
        # [d_sae, d_in] products transposed: W_enc is stored column-major, so its gradient is too
        grad_w_enc = torch.mm(g.t(), x_in).t() if needs[1] else None
        grad_b_enc = g.sum(0) if needs[2] or (ctx.has_b_dec and needs[4]) else None
        grad_w_dec = torch.mm(f.t(), grad_decoded) if needs[3] and grad_decoded is not None else None
        grad_b_dec = -(W_enc @ grad_b_enc) if ctx.has_b_dec and needs[4] else None
        return None, grad_w_enc, grad_b_enc if needs[2] else None, grad_w_dec, grad_b_dec, None
