"""A workbench SAE as a ``sae_lens.SAE``: what SAELens-based tools (SAEBench, docs/methods.md §21) take.

    from workbench.sae.lens import to_sae_lens
    sl = to_sae_lens(sae)                 # a workbench SAE, a sae_lens.SAE (returned as is) or an SAE folder

    from sae_lens import HookedSAETransformer
    model.add_sae(to_sae_lens(sae, model=model))   # spliced in at sae.metadata.hook_name, on the model's device

The conversion goes through the files: :func:`workbench.sae.io.save_sae` writes the SAELens v6 folder into a
temporary directory and ``sae_lens.SAE.load_from_disk`` reads it back, so the result is exactly what SAELens makes
of a folder the workbench saved (the same route a user of SAELens takes), and encodes identically. ``sae_lens`` is
imported on first use only.

The hook goes to ``cfg.metadata.hook_name`` (where ``HookedSAETransformer.add_sae`` and SAEBench read it). The
result lands on ``device``, else on ``model``'s device, else where the SAE is; its dtype is ``dtype``, else the
SAE's own. The reverse is :func:`workbench.sae.interop.as_sae`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import torch

from workbench.sae.model import DTYPES, SAE

if TYPE_CHECKING:
    from sae_lens import SAE as LensSAE

__all__ = ["to_sae_lens"]


def _is_sae_lens(obj: Any) -> TypeGuard[LensSAE]:
    try:
        from sae_lens import SAE as LensSAE
    except ImportError:  # pragma: no cover - sae_lens is a core dependency
        return False
    return isinstance(obj, LensSAE)


def to_sae_lens(sae: SAE | Any | str | Path, device: str | torch.device | None = None, dtype: str | None = None,
                *, model: Any = None) -> Any:
    """A ``sae_lens.SAE`` (inference class) for ``sae``: a workbench :class:`~workbench.sae.model.SAE`, an
    existing ``sae_lens.SAE`` (returned unchanged unless a device or dtype is asked for), or a folder holding
    ``cfg.json`` + ``sae_weights.safetensors`` (ours or SAELens's).

    ``device``: where the result lives (default: ``model``'s device when given, else the SAE's own; a folder loads
    on the CPU). ``dtype``: that of its weights (default: the SAE's; a folder's: float32).
    """
    from sae_lens import SAE as LensSAE

    from workbench.sae.interop import model_device

    target = torch.device(device) if device is not None else (model_device(model) if model is not None else None)
    if _is_sae_lens(sae):
        if target is None and dtype is None:
            return sae
        return sae.to(device=target, dtype=DTYPES[dtype] if dtype else None)
    if isinstance(sae, (str, Path)):
        folder = Path(sae)
        if not (folder / "cfg.json").is_file():
            raise ValueError(f"{folder} is not an SAE folder (no cfg.json in it): point at the folder that holds "
                             f"cfg.json and sae_weights.safetensors")
        return LensSAE.load_from_disk(str(folder), device=str(target or "cpu"), dtype=dtype or "float32")
    if not isinstance(sae, SAE):
        raise ValueError(f"cannot convert a {type(sae).__name__} to a sae_lens.SAE: pass a workbench SAE, a "
                         f"sae_lens.SAE or an SAE folder")
    from workbench.sae.io import save_sae

    dtype = dtype or {v: k for k, v in DTYPES.items()}[sae.dtype]
    with tempfile.TemporaryDirectory(prefix="workbench-sae-lens-") as tmp:
        save_sae(sae, tmp)
        return LensSAE.load_from_disk(tmp, device=str(target or sae.device), dtype=dtype)
