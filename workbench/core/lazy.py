"""Package namespaces whose names load on first use (PEP 562), so that importing the package stays instant.

    __getattr__, __dir__ = lazy_exports(__name__, {"load_model": "workbench.data.models", ...})
"""
from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, table: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the module ``package``: each name of ``table`` is fetched from the module it
    maps to on first access (a relative name such as ``".card"`` is taken within ``package``) and then kept in the
    package's namespace; an unknown name is an AttributeError listing the known ones."""

    def __getattr__(name: str) -> Any:
        owner = table.get(name)
        if owner is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}; it offers: {', '.join(sorted(table))}")
        value = getattr(import_module(owner, package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
