"""Optional dependencies: import one on first use, or fail with a ValueError that names the pip extra to install.

The package's required dependencies cover the offline workbench; each optional part lives behind an extra of
``pyproject.toml`` (``hf``, ``llm``, ``saebench``, ``delphi``) and is imported lazily through :func:`require`, so
``import workbench`` never needs them and a missing one says exactly what to run.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from workbench.core.errors import ConfigError

__all__ = ["EXTRAS", "MissingExtra", "require"]

# extra -> (what it enables, what to run besides `pip install 'workbench[extra]'`, or "")
EXTRAS: dict[str, tuple[str, str]] = {
    "hf": ("Hugging Face datasets as a corpus and .parquet corpus files", ""),
    "llm": ("the official OpenAI client for LLM explanations and judges", ""),
    "saebench": ("SAEBench's evaluations", "pip install --no-deps sae-bench==0.6.0"),
    "delphi": ("EleutherAI delphi's latent-cache loader", "pip install --no-deps eai-delphi==0.1.3"),
}


class MissingExtra(ConfigError, ImportError):
    """An optional dependency is not installed (a ConfigError, so a ValueError like every fixable error, and an
    ImportError)."""


def require(module: str, extra: str, what: str = "") -> ModuleType:
    """Import ``module`` (dotted names allowed), or raise :class:`MissingExtra` naming ``extra`` and the command."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}: one of {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        purpose, also = EXTRAS[extra]
        top = module.split(".")[0]
        fix = f"pip install 'workbench[{extra}]'" + (f" && {also}" if also else "")
        raise MissingExtra(f"{what or purpose} needs the optional package {top!r}, which is not installed ({err})",
                           fix=fix) from err
