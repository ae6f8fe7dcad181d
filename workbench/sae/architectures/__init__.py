"""SAE architectures: one module each, and the registry that :mod:`workbench.sae.model`, :mod:`workbench.sae.io`,
the trainer's config and CLI and the feature pass ask instead of branching on names (docs/methods.md §23).

Adding an architecture: a module here with a :class:`SAEArchitecture` subclass that ends in ``register(...)``, and
its name in the import line below.
"""
from __future__ import annotations

from workbench.sae.architectures.base import (ArchitectureNames, SAEArchitecture, architecture_for_sae_lens,
                                              architectures, find_architecture, get_architecture, register)
from workbench.sae.architectures import relu, topk, batchtopk, jumprelu, matryoshka  # noqa: E402,F401  (register)
from workbench.sae.architectures import gated  # noqa: E402,F401

__all__ = ["ArchitectureNames", "SAEArchitecture", "architecture_for_sae_lens", "architectures", "find_architecture",
           "get_architecture", "register"]
