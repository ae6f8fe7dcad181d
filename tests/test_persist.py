"""The persistence layer: atomic writes leave the old file or the whole new one, never a temporary; tagged JSON
files round-trip and every failure to read one names the file, the problem and the fix."""
from __future__ import annotations

import json
import os

import pytest
import torch

from workbench.core.persist import (atomic_directory, atomic_write, atomic_write_text, is_temp_name, load_tensors,
                                    read_tagged_json, save_tensors, temp_name, write_tagged_json)
from workbench.data.store import StoreError


def _read(path, **kw):
    return read_tagged_json(path, format="demo-v1", what="a demo file", fix="rerun the demo", **kw)


def test_reads_a_file_of_the_right_kind(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"format": "demo-v1", "format_version": 2, "x": [1, 2]}))
    assert _read(p, max_version=2)["x"] == [1, 2]


@pytest.mark.parametrize("content,problem", [
    (None, "is missing"),
    ("{not json", "corrupt"),
    ("[1, 2]", r"is not a demo file \(format 'list'"),
    (json.dumps({"format": "other"}), r"is not a demo file \(format 'other', expected 'demo-v1'\)"),
    (json.dumps({"format": "demo-v1", "format_version": "x"}), "malformed format_version"),
])
def test_each_failure_names_file_problem_and_fix(tmp_path, content, problem):
    p = tmp_path / "a.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(ValueError, match=problem) as info:
        _read(p, max_version=1)
    assert str(p) in str(info.value) and "rerun the demo" in str(info.value)


def test_newer_version_asks_for_an_upgrade_in_the_callers_error_class(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"format": "demo-v1", "format_version": 3}))
    with pytest.raises(StoreError, match=r"format version 3, newer than this workbench reads \(2\): upgrade"):
        _read(p, max_version=2, error=StoreError)
    assert _read(p)["format_version"] == 3  # no max_version: any version is read


def test_tagged_json_round_trips_with_its_tags_first(tmp_path):
    p = write_tagged_json(tmp_path / "r.json", {"x": [1, 2], "nan": float("nan"), "word": "café"},
                          format="demo-v1", format_version=2)
    data = _read(p, max_version=2)
    assert list(data)[:2] == ["format", "format_version"] and data["format_version"] == 2
    assert data["x"] == [1, 2] and data["word"] == "café" and data["nan"] != data["nan"]
    with pytest.raises(ValueError, match="must not carry its own 'format'"):
        write_tagged_json(tmp_path / "s.json", {"format": "x"}, format="demo-v1", format_version=1)


class _DiskFull(OSError):
    pass


def test_a_failed_write_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "old")

    def write_half_then_fail(tmp):
        tmp.write_text("half")
        raise _DiskFull(28, "No space left on device")

    with pytest.raises(_DiskFull):
        atomic_write(target, write_half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_temporary_names_are_recognised(tmp_path):
    tmp = temp_name(tmp_path / "features.json")
    assert tmp.parent == tmp_path and tmp.name == f".features.json.tmp{os.getpid()}"
    assert is_temp_name(tmp.name) and is_temp_name(".manifest.json.tmp")  # also the older naming
    assert not is_temp_name("features.json") and not is_temp_name(".hidden")


def test_atomic_directory_replaces_the_target_only_on_success(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # the old folder was replaced, not merged


def test_tensors_round_trip_and_a_truncated_file_names_the_fix(tmp_path):
    p = save_tensors({"w": torch.arange(6.0).view(2, 3)}, tmp_path / "t.safetensors", {"k": "v"})
    tensors, meta = load_tensors(p, "rerun it")
    assert torch.equal(tensors["w"], torch.arange(6.0).view(2, 3)) and meta == {"k": "v"}
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(ValueError, match=r"t\.safetensors is corrupt or truncated.*rerun it"):
        load_tensors(p, "rerun it")
    with pytest.raises(ValueError, match="is missing: rerun it"):
        load_tensors(tmp_path / "none.safetensors", "rerun it")
