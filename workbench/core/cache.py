"""The one cache primitive: ``key -> load, or compute and save``.

A cached result is a file (or folder) plus a small sidecar ``.<name>.key.json`` that holds the key it was computed
under. :func:`cached` returns the saved result when the sidecar's key equals the caller's and the result loads;
otherwise it computes, saves, and writes the sidecar last, so an interrupted save is never mistaken for a finished
one (the next call computes again). Every study cache goes through here: the demo's evaluation, the readability
scorecards, concept probing, neuron correlations, the architecture comparison and persona vectors.

    from workbench.core.cache import cached
    card = cached(folder / "scorecard.json", {"sae": fingerprint, "config": cfg.to_dict()},
                  compute=lambda: scorecard(...), load=Scorecard.load, save=lambda c, p: c.save(p))

Keys are JSON objects; they are compared after a JSON round trip, so tuples and lists, or int and float keys that
print alike, compare equal. A result that fails to load (``ValueError``, ``OSError``, ``KeyError``, ``TypeError``:
corrupt, truncated, of an older format) is recomputed and overwritten, never returned.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from workbench.core.persist import atomic_write_text

__all__ = ["cached", "cache_key", "key_path", "stored_key"]

T = TypeVar("T")

_LOAD_ERRORS = (ValueError, OSError, KeyError, TypeError)


def cache_key(key: Mapping[str, Any]) -> dict:
    """``key`` as it is stored and compared: a JSON round trip (tuples become lists, dataclass-free). A key that JSON
    cannot write raises a ``ValueError`` naming the offending value's type."""
    try:
        return json.loads(json.dumps(dict(key), sort_keys=True))
    except TypeError as err:
        raise ValueError(f"a cache key must be JSON-serialisable ({err}): convert the value with str() or "
                         f"dataclasses.asdict() first") from None


def key_path(path: str | Path) -> Path:
    """The sidecar file that records the key of the result at ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.key.json")


def stored_key(path: str | Path) -> dict | None:
    """The key the result at ``path`` was saved under; None when it has none or the sidecar is unreadable."""
    side = key_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def cached(path: str | Path, key: Mapping[str, Any], compute: Callable[[], T], *, load: Callable[[Path], T],
           save: Callable[[T, Path], Any], refresh: bool = False) -> T:
    """The result saved at ``path`` under ``key``, or ``compute()`` saved there (module docstring).

    ``load(path)`` reads a saved result; ``save(result, path)`` writes one (atomically, as every writer in
    :mod:`workbench.core.persist` does). ``refresh=True`` computes again whatever is saved."""
    path = Path(path)
    want = cache_key(key)
    if not refresh and stored_key(path) == want and path.exists():
        try:
            return load(path)
        except _LOAD_ERRORS:
            pass  # unreadable or of an older format: compute again and overwrite
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save(result, path)
    atomic_write_text(key_path(path), json.dumps(want, sort_keys=True, indent=1))
    return result
