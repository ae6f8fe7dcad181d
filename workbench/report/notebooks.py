"""Notebooks committed with their outputs (docs/methods.md §35, *Notebooks with outputs*): ``make notebooks``
executes each notebook at a profile (``full`` by default, so the outputs are the real results) and writes it back
in place, small enough to commit and to read on GitHub or nbviewer.

What shrinking does, in order, until the notebook fits ``max_bytes``:

1. the plotly library a view's static fallback inlines (about 4.6 MB) becomes a script tag that loads the same
   plotly.js version from its CDN: a committed notebook is read online, where nbviewer draws the charts (GitHub
   draws no script at all but shows every table and text output);
2. the saved widget state (``metadata.widgets``) goes: it only matters to a live kernel;
3. any single output over ``max_output_bytes`` keeps only its ``text/plain`` (and a note of what was dropped).

A notebook whose code cells are unchanged since its last run at the same profile is skipped (the source hash is
stored in ``metadata.workbench``), so an interrupted ``make notebooks`` resumes where it stopped.

    from workbench.report.notebooks import NotebookRunConfig, run_notebooks
    run_notebooks(["notebooks/12_attention_as_sdm.ipynb"], NotebookRunConfig(profile="full"))
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from workbench.core.errors import InputError

__all__ = ["NotebookRunConfig", "notebook_bytes", "run_notebooks", "shrink_notebook", "source_hash"]

_PLOTLY_INLINE = re.compile(r'<script type="text/javascript">(?:(?!</script>).){100000,}?</script>', re.S)
_PLOTLY_VERSION = re.compile(r"\* plotly\.js v(\d+\.\d+\.\d+)")
_DROPPED = "[output dropped to keep the committed notebook small: {kinds}, {size:,} bytes; rerun the cell to see it]"


@dataclass(frozen=True)
class NotebookRunConfig:
    """How ``make notebooks`` runs a notebook. ``profile``: the ``WORKBENCH_PROFILE`` its kernel sees;
    ``max_bytes``: the largest committed file; ``max_output_bytes``: one output above this keeps only its text;
    ``timeout_s``: per cell; ``force``: rerun notebooks whose code is unchanged."""

    profile: str = "full"
    max_bytes: int = 1_500_000
    max_output_bytes: int = 300_000
    timeout_s: int = 7200
    force: bool = False

    def __post_init__(self) -> None:
        if self.max_output_bytes > self.max_bytes:
            raise ValueError(f"max_output_bytes ({self.max_output_bytes}) must not exceed max_bytes ({self.max_bytes})")


def notebook_bytes(nb: dict) -> int:
    """The size of ``nb`` as written (nbformat's one-space indent)."""
    return len(json.dumps(nb, indent=1, ensure_ascii=False).encode())


def source_hash(nb: dict) -> str:
    """A digest of the notebook's code cells: what its outputs depend on besides the profile and the caches."""
    code = "\n\x00".join("".join(c["source"]) for c in nb.get("cells", []) if c.get("cell_type") == "code")
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _cdn_tag(script: str) -> str:
    m = _PLOTLY_VERSION.search(script[:2000])
    if m is None:
        return script  # a long script that is not the plotly bundle: leave it
    return f'<script src="https://cdn.plot.ly/plotly-{m.group(1)}.min.js" charset="utf-8"></script>'


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _output_size(output: dict) -> int:
    return len(json.dumps(output, ensure_ascii=False).encode())


def shrink_notebook(nb: dict, max_bytes: int = 1_500_000, max_output_bytes: int = 300_000) -> tuple[dict, list[str]]:
    """``nb`` (a notebook as a dict, changed in place and returned) made to fit ``max_bytes``, and a line for each
    change. Raises InputError when the text outputs alone are still too large."""
    log: list[str] = []
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html")
            if html is None:
                continue
            text = _text(html)
            slim = _PLOTLY_INLINE.sub(lambda m: _cdn_tag(m.group(0)), text)
            if slim != text:
                out["data"]["text/html"] = slim
                log.append(f"cell {i}: inlined plotly.js -> CDN script tag ({len(text) - len(slim):,} bytes less)")
    if "widgets" in nb.get("metadata", {}):
        del nb["metadata"]["widgets"]
        log.append("notebook: saved widget state dropped")
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            size = _output_size(out)
            data = out.get("data")
            if size <= max_output_bytes or not data:
                continue
            kinds = ", ".join(sorted(k for k in data if k != "text/plain"))
            plain = _text(data.get("text/plain", ""))
            out["data"] = {"text/plain": plain + ("\n" if plain else "") + _DROPPED.format(kinds=kinds, size=size)}
            out.pop("metadata", None)
            out["metadata"] = {}
            log.append(f"cell {i}: {kinds} dropped ({size:,} bytes)")
    total = notebook_bytes(nb)
    if total > max_bytes:
        biggest = sorted(((sum(_output_size(o) for o in c.get("outputs", [])), i)
                          for i, c in enumerate(nb.get("cells", []))), reverse=True)[:3]
        raise InputError(f"the notebook is still {total:,} bytes after shrinking (limit {max_bytes:,}); largest "
                         f"cells by output: {[(i, s) for s, i in biggest]}",
                         fix="print less in those cells, or lower max_output_bytes")
    return nb, log


def _execute(path: Path, cfg: NotebookRunConfig) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    old = os.environ.get("WORKBENCH_PROFILE")
    os.environ["WORKBENCH_PROFILE"] = cfg.profile  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=cfg.timeout_s, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if old is None:
            os.environ.pop("WORKBENCH_PROFILE", None)
        else:
            os.environ["WORKBENCH_PROFILE"] = old
    return json.loads(nbformat.writes(nb))


def _is_current(nb: dict, cfg: NotebookRunConfig) -> bool:
    meta = nb.get("metadata", {}).get("workbench", {})
    return meta.get("profile") == cfg.profile and meta.get("source_hash") == source_hash(nb)


def run_notebooks(paths: Iterable[str | Path], config: NotebookRunConfig | None = None, *,
                  announce=print) -> list[dict]:
    """Execute each notebook at ``config.profile``, shrink it and write it back in place (one notebook at a time,
    each written atomically, so an interruption loses at most the one running). Returns a row per notebook."""
    from workbench.core.persist import atomic_write_text

    cfg = config or NotebookRunConfig()
    rows = []
    for p in map(Path, paths):
        if not p.is_file() or p.suffix != ".ipynb":
            raise InputError(f"{p} is not a notebook file", fix="pass paths of .ipynb files")
        current = json.loads(p.read_text())
        if not cfg.force and _is_current(current, cfg):
            announce(f"[notebooks] {p.name}: unchanged since its {cfg.profile} run, skipped")
            rows.append({"notebook": p.name, "skipped": True, "bytes": p.stat().st_size})
            continue
        announce(f"[notebooks] {p.name}: running at profile {cfg.profile} ...")
        t0 = time.perf_counter()
        nb = _execute(p, cfg)
        seconds = time.perf_counter() - t0
        nb, log = shrink_notebook(nb, cfg.max_bytes, cfg.max_output_bytes)
        nb.setdefault("metadata", {})["workbench"] = {"profile": cfg.profile, "source_hash": source_hash(nb),
                                                      "seconds": round(seconds, 1)}
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        atomic_write_text(p, text)
        announce(f"[notebooks] {p.name}: {seconds:.0f} s, {len(text.encode()):,} bytes" + "".join(
            f"\n    {line}" for line in log))
        rows.append({"notebook": p.name, "skipped": False, "seconds": round(seconds, 1),
                     "bytes": len(text.encode()), "changes": log})
    return rows
