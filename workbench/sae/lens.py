"""A workbench SAE as a ``sae_lens.SAE``: what SAELens-based tools (SAEBench, docs/methods.md §21) take.

    from workbench.sae.lens import to_sae_lens
    sl = to_sae_lens(sae)                 # a workbench SAE, a sae_lens.SAE (returned as is) or an SAE folder

The conversion goes through the files: :func:`workbench.sae.io.save_sae` writes the SAELens v6 folder into a
temporary directory and ``sae_lens.SAE.load_from_disk`` reads it back, so the result is exactly what SAELens makes
of a folder the workbench saved (the same route a user of SAELens takes), and encodes identically. ``sae_lens`` is
imported on first use only.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from workbench.sae.model import SAE

__all__ = ["to_sae_lens"]


def _is_sae_lens(obj: Any) -> bool:
    try:
        from sae_lens import SAE as LensSAE
    except ImportError:  # pragma: no cover - sae_lens is a core dependency
        return False
    return isinstance(obj, LensSAE)


def to_sae_lens(sae: SAE | Any | str | Path, device: str = "cpu", dtype: str = "float32") -> Any:
    """A ``sae_lens.SAE`` (inference class) for ``sae``: a workbench :class:`~workbench.sae.model.SAE`, an
    existing ``sae_lens.SAE`` (returned unchanged), or a folder holding ``cfg.json`` + ``sae_weights.safetensors``
    (ours or SAELens's). ``dtype`` is that of the loaded weights (float32 by default, as SAEBench runs on CPU)."""
    from sae_lens import SAE as LensSAE

    if _is_sae_lens(sae):
        return sae
    if isinstance(sae, (str, Path)):
        folder = Path(sae)
        if not (folder / "cfg.json").is_file():
            raise ValueError(f"{folder} is not an SAE folder (no cfg.json in it): point at the folder that holds "
                             f"cfg.json and sae_weights.safetensors")
        return LensSAE.load_from_disk(str(folder), device=device, dtype=dtype)
    if not isinstance(sae, SAE):
        raise ValueError(f"cannot convert a {type(sae).__name__} to a sae_lens.SAE: pass a workbench SAE, a "
                         f"sae_lens.SAE or an SAE folder")
    from workbench.sae.io import save_sae

    with tempfile.TemporaryDirectory(prefix="workbench-sae-lens-") as tmp:
        save_sae(sae, tmp)
        return LensSAE.load_from_disk(tmp, device=device, dtype=dtype)
