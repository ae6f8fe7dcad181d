"""Reading back the JSON files the workbench writes, each tagged with what it is.

Every kind of JSON file the workbench saves (an activation-store manifest, feature results, a completeness result)
carries ``"format": <tag>`` and, where its layout can change, ``"format_version": <int>``. :func:`read_tagged_json`
opens one and, when it is missing, unreadable, of another kind or newer than this code, raises an error that names
the file, what is wrong and the caller's fix.
"""
from __future__ import annotations

import json
from pathlib import Path


def read_tagged_json(path: str | Path, *, format: str, what: str, fix: str, max_version: int | None = None,
                     error: type[ValueError] = ValueError) -> dict:
    """The JSON object in ``path``, checked to be ``what`` (its ``format`` tag equals ``format``) and, with
    ``max_version``, no newer than that ``format_version``. ``fix`` ends every message; ``error`` is the class
    raised (a ValueError subclass, so callers may catch ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} is missing: {fix}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path} is corrupt or unreadable ({err}): {fix}") from None
    if not isinstance(data, dict) or data.get("format") != format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise error(f"{path} is not {what} (format {found!r}, expected {format!r}): {fix}")
    if max_version is not None:
        try:
            version = int(data.get("format_version", 0))
        except (TypeError, ValueError):
            raise error(f"{path} has a malformed format_version {data.get('format_version')!r}: {fix}") from None
        if version > max_version:
            raise error(f"{path} has format version {version}, newer than this workbench reads ({max_version}): "
                        f"upgrade workbench")
    return data
