"""Reading the workbench's tagged JSON files: every failure names the file, the problem and the fix."""
from __future__ import annotations

import json

import pytest

from workbench.core.persist import read_tagged_json
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
