"""The one persistence layer: atomic writes, tagged JSON files and safetensors files.

Every file the workbench writes goes through here, so all of them share one crash-safety rule and one naming of
temporary files:

- :func:`atomic_write` writes to ``.<name>.tmp<pid>`` beside the target, fsyncs, renames into place and fsyncs the
  folder; on any error (a full disk, an interrupt) the temporary file is removed and the target is untouched.
- Tagged JSON: each kind of JSON result carries ``"format": <tag>`` and ``"format_version": <int>``.
  :func:`write_tagged_json` writes one; :func:`read_tagged_json` opens one and, when it is missing, unreadable,
  of another kind or newer than this code, raises a ``ValueError`` naming the file, the problem and the fix.
- Tensors: :func:`save_tensors` / :func:`load_tensors` write and read safetensors files (never pickles), with the
  same error rules.

Config dataclasses read back through :func:`workbench.core.config.known_fields_only`, which rejects unknown keys
and names the known ones.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

__all__ = ["atomic_directory", "atomic_write", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "is_temp_name", "load_tensors",
           "read_tagged_json", "save_tensors", "temp_name", "write_tagged_json"]


_TEMP_SUFFIX = re.compile(r"\.tmp\d*$")


def temp_name(path: Path) -> Path:
    """The temporary name a write of ``path`` goes through: hidden, beside it, unique to this process."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is a temporary left by an interrupted :func:`atomic_write` (this or an older scheme)."""
    return name.startswith(".") and bool(_TEMP_SUFFIX.search(name))


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk, where the platform allows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, fsync: bool = True) -> Path:
    """Create ``path`` by calling ``write(tmp)`` on a temporary name and renaming it into place.

    A reader sees the old file or the whole new one, never half of one. If ``write`` raises (a full disk, Ctrl-C),
    the temporary file is removed and the error propagates unchanged. Returns ``path``.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``target`` when the block ends without error
    (replacing a previous ``target``); on an error the temporary folder is removed and ``target`` is untouched.

        with atomic_directory(run / "checkpoint-100") as tmp:
            save_tensors(weights, tmp / "weights.safetensors")
    """
    target = Path(target)
    tmp = temp_name(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        fsync_dir(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def write_tagged_json(path: str | Path, payload: dict[str, Any], *, format: str, format_version: int,
                      indent: int | None = None, fsync: bool = True) -> Path:
    """Write ``payload`` as a JSON object tagged ``{"format": format, "format_version": format_version}``
    (the tags come first; non-finite floats are kept as JSON's NaN/Infinity, which :func:`read_tagged_json`
    reads back)."""
    if "format" in payload or "format_version" in payload:
        raise ValueError("the payload of a tagged JSON file must not carry its own 'format' or 'format_version'")
    data = {"format": format, "format_version": int(format_version), **payload}
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False), fsync=fsync)


def read_tagged_json(path: str | Path, *, format: str, what: str, fix: str, max_version: int | None = None,
                     error: type[ValueError] = ValueError) -> dict:
    """The JSON object in ``path``, checked to be ``what`` (its ``format`` tag equals ``format``) and, with
    ``max_version``, no newer than that ``format_version``. ``fix`` ends every message; ``error`` is the class
    raised (a ValueError subclass, so callers may catch ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} is missing: {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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


def save_tensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None, *,
                 fsync: bool = True) -> Path:
    """Write ``tensors`` (moved to CPU, made contiguous) as a safetensors file, atomically."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata), fsync=fsync)


def load_tensors(path: str | Path, what: str, *, device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a missing or corrupt file raises ValueError naming it, then
    ``what`` (the fix)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing: {what}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # SafetensorError, OSError, truncated headers all mean the same to the caller
        raise ValueError(f"{path} is corrupt or truncated ({type(err).__name__}: {err}): {what}") from None
