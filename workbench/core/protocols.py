"""What the public entry points need of a model, an SAE and an activation store, as typing Protocols.

They describe the boundary, not a class hierarchy: a TransformerLens ``HookedTransformer`` is a :class:`ModelLike`,
a workbench ``SAE`` (or anything :func:`workbench.sae.interop.as_sae` returns) an :class:`SAELike`, an
``ActivationStore`` a :class:`StoreLike`. ``isinstance`` works on them (``runtime_checkable``: attributes only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["ModelLike", "SAELike", "StoreLike"]


@runtime_checkable
class ModelLike(Protocol):
    """A hooked language model: a config with ``d_model`` and ``n_layers``, a tokenizer, ``run_with_hooks``."""

    cfg: Any
    tokenizer: Any

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class SAELike(Protocol):
    """A sparse autoencoder: a config with ``d_in`` and ``d_sae``, ``encode`` and ``decode``."""

    cfg: Any

    def encode(self, x: Any) -> Any: ...

    def decode(self, f: Any) -> Any: ...


@runtime_checkable
class StoreLike(Protocol):
    """An activation store on disk: its folder, manifest, hooks and context layout."""

    path: Path
    manifest: dict
    hooks: list[str]
    n_contexts: int
    context_size: int
