"""The cache primitive: a result is reused only under the same key, recomputed when stale, unreadable or
half-written, and the key is written last."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.core.cache import cache_key, cached, key_path, stored_key


class Counter:
    def __init__(self, value):
        self.calls, self.value = 0, value

    def __call__(self):
        self.calls += 1
        return {"value": self.value, "call": self.calls}


def _save(obj, path: Path) -> None:
    path.write_text(json.dumps(obj))


def _load(path: Path):
    return json.loads(path.read_text())


def test_same_key_loads_instead_of_computing(tmp_path):
    compute = Counter(3)
    first = cached(tmp_path / "r.json", {"a": 1}, compute, load=_load, save=_save)
    again = cached(tmp_path / "r.json", {"a": 1}, compute, load=_load, save=_save)
    assert first == again == {"value": 3, "call": 1}
    assert compute.calls == 1
    assert stored_key(tmp_path / "r.json") == {"a": 1}


def test_another_key_recomputes_and_overwrites(tmp_path):
    compute = Counter(3)
    cached(tmp_path / "r.json", {"a": 1}, compute, load=_load, save=_save)
    got = cached(tmp_path / "r.json", {"a": 2}, compute, load=_load, save=_save)
    assert got["call"] == 2 and compute.calls == 2
    assert stored_key(tmp_path / "r.json") == {"a": 2}


def test_tuples_and_lists_are_the_same_key(tmp_path):
    compute = Counter(0)
    cached(tmp_path / "r.json", {"ks": (1, 2)}, compute, load=_load, save=_save)
    cached(tmp_path / "r.json", {"ks": [1, 2]}, compute, load=_load, save=_save)
    assert compute.calls == 1


def test_corrupt_result_is_recomputed_not_returned(tmp_path):
    compute = Counter(5)
    path = tmp_path / "r.json"
    cached(path, {"a": 1}, compute, load=_load, save=_save)
    path.write_text("{not json")
    got = cached(path, {"a": 1}, compute, load=_load, save=_save)
    assert got == {"value": 5, "call": 2}
    assert _load(path) == got


def test_a_save_interrupted_before_the_key_is_written_recomputes(tmp_path):
    path = tmp_path / "r.json"

    def failing_compute():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached(path, {"a": 1}, failing_compute, load=_load, save=_save)
    assert not key_path(path).exists()
    _save({"value": "half"}, path)  # a result on disk with no key beside it: never trusted
    compute = Counter(1)
    assert cached(path, {"a": 1}, compute, load=_load, save=_save)["call"] == 1


def test_refresh_recomputes(tmp_path):
    compute = Counter(1)
    cached(tmp_path / "r.json", {"a": 1}, compute, load=_load, save=_save)
    cached(tmp_path / "r.json", {"a": 1}, compute, load=_load, save=_save, refresh=True)
    assert compute.calls == 2


def test_unserialisable_key_names_the_fix():
    with pytest.raises(ValueError, match="JSON-serialisable"):
        cache_key({"x": object()})
