"""Reading typed dataclass configs back from JSON/YAML dicts, refusing unknown keys with the list of known ones."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from workbench.core.errors import ConfigError

T = TypeVar("T")


def known_fields_only(cls: type[T], data: dict[str, Any], what: str) -> dict[str, Any]:
    """``data`` as keyword arguments for the dataclass ``cls``; a ValueError names any key ``cls`` lacks."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}: known ones are {sorted(known)}")
    return dict(data)
