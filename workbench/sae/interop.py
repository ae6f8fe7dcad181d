"""One way in for SAEs: whatever a user holds, every entry point works on a workbench :class:`~workbench.sae.model.SAE`.

    from workbench import as_sae
    sae = as_sae(sae_lens_sae)                                   # any sae_lens.SAE SAELens v6 builds or loads
    sae = as_sae("runs/l9-topk16k")                              # a folder: ours or SAELens's (cfg.json + weights)
    sae = as_sae(("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"))   # a SAELens release
    sae = as_sae(sae, model=model)                               # ... and on the model's device

The feature pass, search, steering, evaluation and the widgets call :func:`as_sae` on the SAE they are given, so a
``sae_lens.SAE`` (inference classes: standard, topk, jumprelu, gated; training classes too: batchtopk,
matryoshka_batchtopk, ...) goes everywhere a workbench SAE does. The conversion is exact (the same codes; tested
per architecture against SAELens's own ``encode``): it reads the object's state dict and ``cfg.to_dict()``, where
SAELens v6 keeps the hook at ``cfg.metadata.hook_name``. A workbench SAE is returned as is (moved, in place, when
a device is asked for), so calling it twice costs nothing; so is an SAE-like object of the caller's own (``encode``
and ``cfg.d_in`` / ``cfg.d_sae``), unmoved. The other way is :func:`workbench.sae.lens.to_sae_lens`.

Device: with ``model=`` (or ``device=``) the SAE goes to that device, so a CPU-loaded SAE never runs silently on the
CPU next to a CUDA model; moving is in place for a workbench SAE (``nn.Module.to``) and the converted copy of a
SAELens object is made there.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from workbench.sae.model import SAE

__all__ = ["as_sae", "hook_name_of", "is_sae_lens", "is_workbench_sae", "model_device"]


def _loaded_class(module: str, name: str) -> type | None:
    """``module.name`` if that module is already imported: an object of the class cannot exist otherwise, so the
    checks below never import TransformerLens or SAELens (this module stays cheap to import for the entry points)."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def is_workbench_sae(obj: Any) -> bool:
    """Whether ``obj`` is a workbench :class:`~workbench.sae.model.SAE` (crosscoders included)."""
    cls = _loaded_class("workbench.sae.model", "SAE")
    return cls is not None and isinstance(obj, cls)


def is_sae_lens(obj: Any) -> bool:
    """Whether ``obj`` is a ``sae_lens.SAE`` (any v6 class, inference or training)."""
    cls = _loaded_class("sae_lens.saes.sae", "SAE")
    return cls is not None and isinstance(obj, cls)


def _duck_sae(obj: Any) -> bool:
    """An SAE-like object of the caller's own (``encode`` and ``cfg.d_in`` / ``cfg.d_sae``): passed through."""
    cfg = getattr(obj, "cfg", None)
    return callable(getattr(obj, "encode", None)) and hasattr(cfg, "d_in") and hasattr(cfg, "d_sae")


def hook_name_of(sae: Any) -> str | None:
    """The hook an SAE reads: ``metadata.hook_name`` (workbench) or ``cfg.metadata.hook_name`` (SAELens v6)."""
    meta = getattr(sae, "metadata", None)
    if meta is None:
        meta = getattr(getattr(sae, "cfg", None), "metadata", None)
    return getattr(meta, "hook_name", None)


def model_device(model: Any) -> torch.device | None:
    """The device of a model's weights (None for an object without parameters)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    device = getattr(getattr(model, "cfg", None), "device", None)
    return torch.device(device) if device is not None else None


def _target_device(device: str | torch.device | None, model: Any) -> torch.device | None:
    if device is not None:
        return torch.device(device)
    return model_device(model) if model is not None else None


def as_sae(x: Any, *, device: str | torch.device | None = None, model: Any = None) -> SAE:
    """A workbench SAE for ``x``: a workbench SAE (returned as is), a ``sae_lens.SAE`` (converted exactly), an SAE
    folder (``cfg.json`` + ``sae_weights.safetensors``, ours or SAELens's) or a ``(release, sae_id)`` pair of
    SAELens's pretrained registry (a ValueError when the hub cannot be reached and the files are not cached).

    ``device`` (or else the device of ``model``'s weights) is where the SAE ends up; neither: where it is (a folder
    or release loads on the CPU).
    """
    target = _target_device(device, model)
    if is_workbench_sae(x):
        return x if target is None or x.device == target else x.to(target)
    if is_sae_lens(x):
        from workbench.sae.io import from_sae_lens

        sae = from_sae_lens(x, device=target)
        sae.metadata.hook_name = sae.metadata.hook_name or hook_name_of(x)
        return sae.eval()
    if isinstance(x, (str, Path)):
        from workbench.sae.io import load_sae

        folder = Path(x).expanduser()
        if not (folder / "cfg.json").is_file():
            raise ValueError(f"{str(x)!r} is not an SAE folder (no cfg.json in it): pass the folder that holds "
                             f"cfg.json and sae_weights.safetensors, or a (release, sae_id) pair for a SAELens "
                             f"pretrained SAE")
        return load_sae(folder, device=target or "cpu").eval()
    if isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, str) for v in x):
        from workbench.sae.io import load_pretrained

        return load_pretrained(x[0], x[1], device=target or "cpu").eval()
    if _duck_sae(x):
        return x
    raise ValueError(f"cannot use a {type(x).__name__} as an SAE: pass a workbench SAE, a sae_lens.SAE, an SAE "
                     f"folder, or a (release, sae_id) pair of SAELens's pretrained SAEs")
