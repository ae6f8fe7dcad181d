"""Data tables shipped inside the package (concept lists, probe sentences, parallel titles, trait files...).

They live as JSON under ``workbench/resources/`` so that they can be read, diffed and extended without touching
code. Each file is a tagged JSON object (see :mod:`workbench.core.persist`) whose ``format`` is
``workbench-resource/<name>``.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from workbench.core.persist import read_tagged_json

__all__ = ["RESOURCE_FORMAT_VERSION", "load_resource", "resource_path"]

RESOURCE_FORMAT_VERSION = 1


def resource_path(name: str) -> Path:
    """The path of the shipped resource ``name`` (e.g. ``"completeness_concepts.json"``)."""
    path = Path(str(resources.files("workbench").joinpath("resources", name)))
    if not path.is_file():
        known = sorted(p.name for p in path.parent.glob("*.json"))
        raise ValueError(f"no shipped resource {name!r} under {path.parent}: known ones are {known}")
    return path


@lru_cache(maxsize=None)
def load_resource(name: str) -> dict:
    """The JSON object of the shipped resource ``name``, checked to be tagged ``workbench-resource/<stem>``.
    Cached: treat the result as read-only."""
    stem = name.removesuffix(".json")
    return read_tagged_json(resource_path(name), format=f"workbench-resource/{stem}",
                            what=f"the workbench resource {stem!r}", max_version=RESOURCE_FORMAT_VERSION,
                            fix="reinstall the workbench package (pip install -e .)")
