"""Where training batches come from: the :class:`BatchSource` protocol and its implementations over an activation
store (:class:`StoreSource`, with held-out tokens and per-epoch reshuffles), a tensor and a synthetic stream; plus
the statistics the trainer takes from the head of a stream (input scale)."""
from __future__ import annotations

import hashlib
import inspect
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import torch
from torch import Tensor

from workbench.core.errors import ConfigError, InputError
from workbench.sae.model import SAEMetadata

__all__ = ["BatchSource", "StoreSource", "SyntheticSource", "TensorSource", "epoch_seed", "estimate_input_scale",
           "take_tokens"]


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


def takes_epoch(source: Any) -> bool:
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
            raise InputError(f"TensorSource needs a [n_tokens, d_model] tensor, got shape {tuple(data.shape)}")
        self.data = data
        self.d_model = int(data.shape[1])
        self.n_tokens = int(data.shape[0])
        if not 0 <= int(holdout_tokens) < self.n_tokens:
            raise ConfigError(f"holdout_tokens={holdout_tokens} must lie in [0, {self.n_tokens}): the tensor holds "
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
            raise ConfigError(f"start_tokens={start_tokens} is not a multiple of batch_size={batch_size}")
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
            raise ConfigError(f"the store at {self.path} holds several hooks {list(self.store.hooks)}: pick one with "
                             f"--hook")
        if hook is not None and hook not in self.store.hooks:
            raise ConfigError(f"hook {hook!r} is not in the store at {self.path}; it holds {list(self.store.hooks)}")
        self.hook = hook or self.store.hooks[0]
        self.d_model = int(self.store.d_in(self.hook))
        self.seed, self.exclude_bos, self.holdout_tokens = seed, exclude_bos, int(holdout_tokens)
        from workbench.data.provenance import store_provenance

        self.metadata = SAEMetadata(model_name=self.store.model_name, hook_name=self.hook,
                                    context_size=self.store.context_size, prepend_bos=self.store.prepend_bos,
                                    extra={"store": store_provenance(self.store.manifest, self.path)})

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
        raise InputError("the activation stream is empty")
    return torch.cat(out)


def estimate_input_scale(sample: Tensor) -> float:
    """The scalar s with E||s x||^2 = d over ``sample`` [n, d] (computed in float64)."""
    mean_sq = sample.to(torch.float64).pow(2).sum(1).mean().item()
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise InputError(f"cannot scale the activations: their mean squared norm is {mean_sq} (all zero, NaN or inf?)")
    return math.sqrt(sample.shape[1] / mean_sq)


# ----------------------------------------------------------------------------------------------------------------
