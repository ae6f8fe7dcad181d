"""What the public entry points need of a model, an SAE and an activation store, as typing Protocols.

They describe the boundary, not a class hierarchy: a TransformerLens ``HookedTransformer`` is a :class:`ModelLike`,
a workbench ``SAE`` (or anything :func:`workbench.sae.interop.as_sae` returns) an :class:`SAELike`, an
``ActivationStore`` a :class:`StoreLike`. ``isinstance`` works on them (``runtime_checkable``: attributes only).
Data members are read-only properties, so a class may provide them as attributes or as properties.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing torch and numpy here would make ``import workbench`` heavy
    import numpy as np
    import torch

__all__ = ["ModelLike", "SAELike", "SAESource", "StoreLike"]


@runtime_checkable
class ModelLike(Protocol):
    """A hooked language model (TransformerLens's ``HookedTransformer``): a config with ``d_model`` and ``n_layers``,
    a tokenizer, its hook points by name, a forward call, ``run_with_hooks`` / ``run_with_cache`` / the ``hooks``
    context, ``to_tokens``, the embedding, final norm and unembedding, and its parameters and ``state_dict``."""

    cfg: Any
    tokenizer: Any
    hook_dict: dict[str, Any]
    embed: Any
    ln_final: Any

    @property
    def W_U(self) -> torch.Tensor: ...

    @property
    def b_U(self) -> torch.Tensor: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...

    def hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def to_tokens(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, torch.nn.Parameter]]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class SAELike(Protocol):
    """A sparse autoencoder: a config with ``d_in`` and ``d_sae``, ``encode`` and ``decode``, its decoder rows
    ``W_dec`` [d_sae, d_in], the device and dtype of its weights, and its ``state_dict``."""

    cfg: Any

    @property
    def W_dec(self) -> torch.Tensor: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def encode(self, x: Any) -> Any: ...

    def decode(self, f: Any) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...


# What :func:`workbench.sae.interop.as_sae` turns into a workbench SAE: an SAE (ours or SAELens's), an SAE folder,
# or a ``(release, sae_id)`` pair of SAELens's pretrained registry.
SAESource = SAELike | str | os.PathLike | tuple[str, str]


@runtime_checkable
class StoreLike(Protocol):
    """An activation store on disk (``ActivationStore``): its folder, manifest, hooks and context layout, its shards'
    token arrays, and its activations as batches or per context."""

    path: Path
    manifest: dict
    hooks: list[str]

    @property
    def n_contexts(self) -> int: ...

    @property
    def context_size(self) -> int: ...

    @property
    def n_tokens(self) -> int: ...

    @property
    def prepend_bos(self) -> bool: ...

    @property
    def model_name(self) -> str: ...

    @property
    def n_shards(self) -> int: ...

    def d_in(self, hook: str | None = None) -> int: ...

    def n_rows(self, exclude_bos: bool = True) -> int: ...

    def shard_arrays(self, shard: int) -> dict[str, np.ndarray]: ...

    def context(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def activations(self, *args: Any, **kwargs: Any) -> torch.Tensor: ...

    def token_ids(self) -> np.ndarray: ...

    def doc_ids(self) -> np.ndarray: ...

    def iter_batches(self, *args: Any, **kwargs: Any) -> Iterator[torch.Tensor]: ...
