"""Reading typed dataclass configs back from JSON/YAML dicts, refusing unknown keys with the list of known ones."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from workbench.core.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def known_fields_only(cls: type[DataclassInstance], data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data`` as keyword arguments for the dataclass ``cls``; a ValueError names any key ``cls`` lacks."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}: known ones are {sorted(known)}")
    return dict(data)
