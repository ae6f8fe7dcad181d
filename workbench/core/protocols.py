"""What the public entry points need of a model, an SAE and an activation store, as typing Protocols.

They describe the boundary, not a class hierarchy: a TransformerLens ``HookedTransformer`` is a :class:`ModelLike`,
a workbench ``SAE`` (or anything :func:`workbench.sae.interop.as_sae` returns) an :class:`SAELike`, an
``ActivationStore`` a :class:`StoreLike`. ``isinstance`` works on them (``runtime_checkable``: attributes only).
Data members are read-only properties, so a class may provide them as attributes or as properties.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing torch and numpy here would make ``import workbench`` heavy
    import numpy as np
    import torch

__all__ = ["ModelLike", "SAELike", "StoreLike"]


@runtime_checkable
class ModelLike(Protocol):
    """A hooked language model: a config with ``d_model`` and ``n_layers``, a tokenizer, its hook points by name,
    ``run_with_hooks`` / ``run_with_cache`` and its parameters (their device is the model's)."""

    cfg: Any
    tokenizer: Any
    hook_dict: dict[str, Any]

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...


@runtime_checkable
class SAELike(Protocol):
    """A sparse autoencoder: a config with ``d_in`` and ``d_sae``, ``encode`` and ``decode``, its decoder rows
    ``W_dec`` [d_sae, d_in], and the device and dtype of its weights."""

    cfg: Any

    @property
    def W_dec(self) -> torch.Tensor: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def encode(self, x: Any) -> Any: ...

    def decode(self, f: Any) -> Any: ...


@runtime_checkable
class StoreLike(Protocol):
    """An activation store on disk: its folder, manifest, hooks and context layout, the tokens it was harvested
    from, and its activations as batches."""

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

    def d_in(self, hook: str | None = None) -> int: ...

    def token_ids(self) -> np.ndarray: ...

    def doc_ids(self) -> np.ndarray: ...

    def iter_batches(self, *args: Any, **kwargs: Any) -> Iterator[torch.Tensor]: ...
