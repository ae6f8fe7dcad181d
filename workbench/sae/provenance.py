"""What an SAE folder records about its origin, beyond weights and architecture.

SAELens v6 and SAEBench read a few fields of ``cfg.json``'s ``metadata`` to rebuild the activations an SAE was
trained on: ``model_name``, ``hook_name``, ``context_size``, ``prepend_bos``, ``model_class_name``,
``model_from_pretrained_kwargs`` (passed to ``HookedTransformer.from_pretrained_no_processing``) and
``dataset_path``. :func:`provenance_metadata` fills those from the SAE's own metadata (the model name, and the
store it was trained on when training recorded one), and adds ``weights``: the origin, format, quantisation,
dequantised dtype and SHA-256 of the model weights (for the embedded models, a GGUF dequantised to float32, whose
activations differ from the original checkpoint's). :func:`write_sparsity` writes ``sparsity.safetensors``, each
feature's log10 firing density under the key ``sparsity``, as SAELens's trainer does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workbench.core.persist import save_tensors
from workbench.data.provenance import dataset_path, weights_source

__all__ = ["SPARSITY_FILENAME", "SPARSITY_EPS", "provenance_metadata", "read_sparsity", "write_sparsity"]

SPARSITY_FILENAME = "sparsity.safetensors"
SPARSITY_EPS = 1e-10  # SAELens's: log10(density + 1e-10), so a dead feature reads -10


def provenance_metadata(model_name: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The SAELens / SAEBench metadata fields for an SAE of ``model_name`` whose ``metadata.extra`` is ``extra``.

    The store's record (``extra["store"]``, written by training) wins over what the model name alone implies, since
    it describes the model that actually made the activations."""
    store = (extra or {}).get("store") or {}
    source = weights_source(model_name) if model_name else {}
    out: dict[str, Any] = {
        "model_class_name": store.get("model_class_name", source.get("model_class_name", "HookedTransformer")),
        "model_from_pretrained_kwargs": store.get("model_from_pretrained_kwargs",
                                                  source.get("model_from_pretrained_kwargs", {})),
        "dataset_path": store.get("dataset_path") or dataset_path(store.get("corpus")),
    }
    corpus = store.get("corpus") or {}
    if corpus.get("hf_revision"):
        out["dataset_revision"] = corpus["hf_revision"]
    weights = store.get("weights", source.get("weights"))
    if weights:
        out["weights"] = weights
    return out


def write_sparsity(folder: str | Path, density: torch.Tensor) -> Path:
    """Write ``sparsity.safetensors`` (``sparsity`` = log10(density + 1e-10), [d_sae] float32) into ``folder``."""
    density = torch.as_tensor(density).detach().to("cpu", torch.float32).reshape(-1)
    if not bool(((density >= 0) & (density <= 1)).all()):
        raise ValueError("density must hold each feature's firing fraction, between 0 and 1")
    path = Path(folder) / SPARSITY_FILENAME
    save_tensors({"sparsity": torch.log10(density + SPARSITY_EPS)}, path)
    return path


def read_sparsity(folder: str | Path) -> torch.Tensor | None:
    """The log10 feature densities of an SAE folder's ``sparsity.safetensors``, or None when it has none."""
    path = Path(folder) / SPARSITY_FILENAME
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as err:  # truncated or not safetensors
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err
    if "sparsity" not in tensors:
        raise ValueError(f"{path} has no 'sparsity' tensor (keys: {', '.join(tensors)}): not a SAELens sparsity file")
    return tensors["sparsity"]
