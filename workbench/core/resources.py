"""Data tables shipped inside the package (concept lists, probe sentences, parallel titles, trait files...).

They live as JSON under ``workbench/resources/`` so that they can be read, diffed and extended without touching
code. Each file is a tagged JSON object (see :mod:`workbench.core.persist`) whose ``format`` is
``workbench-resource/<name>``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from workbench.core.persist import read_tagged_json

__all__ = ["RESOURCE_FORMAT_VERSION", "load_resource", "resource_or_file", "resource_path"]

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


def resource_or_file(name: str, path: str | Path | None, what: str) -> tuple[dict, str]:
    """The shipped resource ``name`` when ``path`` is None, else the JSON object in the user's file ``path`` (a
    ``ValueError`` naming ``what`` if it cannot be read); with where it came from, for the caller's messages."""
    if path is None:
        return load_resource(name), name
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")), str(path)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read it as JSON ({err}): give a {what} file") from None
