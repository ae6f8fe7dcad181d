"""Where the workbench keeps caches: assets, converted models, activation stores.

Everything lives under ``WORKBENCH_HOME`` (default ``~/.cache/workbench``), never in the repository.
"""
from __future__ import annotations

import os
from pathlib import Path


def workbench_home() -> Path:
    """The cache root, created on first use. Set ``WORKBENCH_HOME`` to move it."""
    root = Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".cache" / "workbench")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(kind: str) -> Path:
    """A named sub-folder of the cache root (``assets``, ``models``, ``stores`` ...)."""
    path = workbench_home() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
