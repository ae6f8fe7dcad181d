"""SAEs on disk in the SAELens v6 format: ``cfg.json`` + ``sae_weights.safetensors``.

``save_sae`` writes a folder that ``sae_lens.SAE.load_from_disk`` opens and encodes identically; ``load_sae``
reads our folders and the SAELens ones an architecture maps (standard, topk, jumprelu, BatchTopK / Matryoshka
training checkpoints, ...); ``load_pretrained`` goes through SAELens's release registry and fails with a clear ValueError when
the Hugging Face hub cannot be reached and the files are not cached.

Architecture names, cfg fields and tensor names in cfg.json are SAELens's, as each architecture module maps them
(:mod:`workbench.sae.architectures`): e.g. our ``relu`` is ``standard``, ``topk`` is ``topk``, and ``jumprelu``,
``batchtopk`` and ``matryoshka`` are all ``jumprelu`` (the latter two with their global threshold in every entry
of ``threshold``, as SAELens saves BatchTopK). Our own
architecture and its training config sit under ``metadata["workbench"]``, so a round-trip restores them.
Weights are read with safetensors only; nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError, safe_open

from workbench.core.errors import InputError
from workbench.core.persist import atomic_write_text, save_tensors
from workbench.sae.architectures import architecture_for_sae_lens
from workbench.sae.model import DTYPES, SAE, SAEConfig, SAEMetadata, load_parameters, sae_parameters_dict
from workbench.sae.provenance import provenance_metadata, write_sparsity

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
_METADATA_KEYS = ("model_name", "hook_name", "context_size", "prepend_bos")

def _sae_lens_version() -> str:
    try:
        version = importlib_metadata.version("sae-lens")
    except importlib_metadata.PackageNotFoundError:
        return "6.0.0"
    return version if int(version.split(".")[0]) >= 6 else "6.0.0"

def sae_lens_config(sae: SAE, input_scale: float = 1.0) -> dict[str, Any]:
    """The cfg.json dict SAELens v6 expects for ``sae`` (whose weights take raw activations)."""
    cfg = sae.cfg
    meta = sae.metadata
    version = _sae_lens_version()
    out: dict[str, Any] = {
        "architecture": sae.arch.sae_lens_name,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": {v: k for k, v in DTYPES.items()}[sae.dtype],
        "device": "cpu",
        "apply_b_dec_to_input": bool(cfg.apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": version,
            "sae_lens_training_version": version,
            "model_name": meta.model_name,
            "hook_name": meta.hook_name,
            "hook_head_index": None,
            "context_size": meta.context_size,
            "prepend_bos": meta.prepend_bos,
            **provenance_metadata(meta.model_name, meta.extra),
            "workbench": {"architecture": cfg.architecture, "config": cfg.to_dict(), "input_scale": float(input_scale),
                          **meta.extra},
        },
    }
    out.update(sae.arch.sae_lens_fields(cfg))
    return out

def save_sae(sae: SAE, path: str | Path, *, input_scale: float = 1.0, density: torch.Tensor | None = None) -> Path:
    """Write ``sae`` to the folder ``path`` in SAELens v6 format and return the folder.

    ``input_scale`` is the scalar the SAE's training inputs were multiplied by; it is folded into the weights
    (W_enc * s, W_dec / s, b_dec / s) so the saved SAE takes raw activations, and recorded in the metadata.
    ``density`` (each feature's firing fraction, when known) is written as SAELens's ``sparsity.safetensors``.
    cfg.json's metadata records the model's provenance (:mod:`workbench.sae.provenance`).
    Files are written to temporary names and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    out = sae.folded(input_scale) if input_scale != 1.0 else sae
    tensors = {k: v.cpu() for k, v in sae_parameters_dict(out).items()}
    cfg = sae_lens_config(out, input_scale)
    save_tensors(tensors, path / WEIGHTS_FILENAME)
    if density is not None:
        if tuple(density.shape) != (out.cfg.d_sae,):
            raise ValueError(f"density has shape {tuple(density.shape)}; expected one value per feature, "
                             f"({out.cfg.d_sae},)")
        write_sparsity(path, density)
    atomic_write_text(path / CFG_FILENAME, json.dumps(cfg, indent=2))
    return path

# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------

def read_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a missing, truncated or corrupt file raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise InputError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err

def _modernise_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Bring a pre-6 SAELens cfg.json (flat, hook_point, activation_fn_str) to the v6 layout."""
    cfg = dict(cfg)
    renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
               "activation_fn_str": "activation_fn"}
    for old, new in renames.items():
        if old in cfg and new not in cfg:
            cfg[new] = cfg.pop(old)
    meta = dict(cfg.get("metadata") or {})
    for key in _METADATA_KEYS:
        if key in cfg and key not in meta:
            meta[key] = cfg[key]
    cfg["metadata"] = meta
    if "architecture" not in cfg:
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if cfg.get("activation_fn") == "topk" and kwargs.get("k") is not None:
            cfg["architecture"], cfg["k"] = "topk", kwargs["k"]
        else:
            cfg["architecture"] = "standard"
    cfg.setdefault("apply_b_dec_to_input", True)
    return cfg

def _convert(cfg: dict[str, Any], tensors: dict[str, torch.Tensor], source: str,
             device: str | torch.device, dtype: str | None) -> SAE:
    """Our SAE from a SAELens-format config dict and its tensors (exact: same encodings)."""
    cfg = _modernise_config(cfg)
    arch = cfg["architecture"]
    meta_in = dict(cfg.get("metadata") or {})
    ours = meta_in.get("workbench") if isinstance(meta_in.get("workbench"), dict) else None
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm != "none":
        raise InputError(f"{source}: normalize_activations={norm!r} is not folded into the weights; fold it first "
                         f"(sae_lens: sae.fold_activation_norm_scaling_factor(factor)) and save again")
    if (cfg.get("reshape_activations") or "none") != "none":
        raise InputError(f"{source}: reshape_activations={cfg['reshape_activations']!r} (hook_z SAEs) is not "
                         f"supported; flatten the heads and use a standard SAE")
    tensors = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in tensors.items()}
    for key in ("W_enc", "W_dec"):
        if key not in tensors:
            raise InputError(f"{source} has no {key} tensor: is it an SAE weights file?")
    d_in, d_sae = int(cfg.get("d_in", tensors["W_enc"].shape[0])), int(cfg.get("d_sae", tensors["W_enc"].shape[1]))
    if tuple(tensors["W_enc"].shape) != (d_in, d_sae):
        raise InputError(f"{source}: W_enc has shape {tuple(tensors['W_enc'].shape)} but the config says "
                         f"d_in={d_in}, d_sae={d_sae}: the folder's files do not belong together")

    scale = tensors.pop("finetuning_scaling_factor", tensors.pop("scaling_factor", None))
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        tensors["W_dec"] = tensors["W_dec"] * scale[:, None]  # decode uses (f * scale) @ W_dec
    if cfg.get("rescale_acts_by_decoder_norm"):
        norms = tensors["W_dec"].norm(dim=1).clamp_min(1e-8)  # fold: the topk ranks pre * ||W_dec[i]||
        tensors["W_enc"] = tensors["W_enc"] * norms
        tensors["b_enc"] = tensors["b_enc"] * norms
        tensors["W_dec"] = tensors["W_dec"] / norms[:, None]  # thresholds are already in these units
    if "topk_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = tensors.pop("topk_threshold").reshape(()).expand(d_sae).clone()

    ours_cfg = dict(ours.get("config", {})) if ours else {}
    if ours_cfg:
        config = SAEConfig.from_dict({**ours_cfg, "dtype": dtype or ours_cfg.get("dtype", "float32")})
    else:
        ours_arch = architecture_for_sae_lens(arch, source)  # a ValueError naming the supported ones
        centred = bool(cfg.get("apply_b_dec_to_input", True))
        config = SAEConfig(ours_arch.name, d_in, d_sae, apply_b_dec_to_input=centred, dtype=dtype or "float32",
                           **ours_arch.config_from_sae_lens(cfg))
    if (config.d_in, config.d_sae) != (d_in, d_sae):
        raise InputError(f"{source}: metadata.workbench.config in cfg.json has d_in={config.d_in}, "
                         f"d_sae={config.d_sae} but the weights have d_in={d_in}, d_sae={d_sae}: the folder's files do "
                         f"not belong together")
    extra = {k: v for k, v in (ours or {}).items() if k not in ("architecture", "config", "input_scale")}
    metadata = SAEMetadata(model_name=meta_in.get("model_name"), hook_name=meta_in.get("hook_name"),
                           context_size=meta_in.get("context_size"),
                           prepend_bos=bool(meta_in.get("prepend_bos", True)), extra=extra)
    sae = SAE(config, metadata, seed=None)
    load_parameters(sae, tensors, source)
    return sae.to(device)

def load_sae(path: str | Path, device: str | torch.device = "cpu", dtype: str | None = None) -> SAE:
    """Load an SAE folder (ours or SAELens's, ``cfg.json`` + ``sae_weights.safetensors``)."""
    path = Path(path)
    cfg_path = path / CFG_FILENAME
    if not cfg_path.is_file():
        raise InputError(f"{cfg_path} does not exist: an SAE folder holds {CFG_FILENAME} and {WEIGHTS_FILENAME}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{cfg_path} is not valid JSON ({err}): the file is corrupt") from err
    tensors = read_safetensors(path / WEIGHTS_FILENAME)
    return _convert(cfg, tensors, str(path), device, dtype)

def from_sae_lens(sl_sae: Any, device: str | torch.device | None = None) -> SAE:
    """Our SAE from an in-memory ``sae_lens.SAE`` (inference or training class)."""
    cfg = sl_sae.cfg.to_dict()
    tensors = {k: v.detach().cpu() for k, v in sl_sae.state_dict().items()}
    return _convert(cfg, tensors, f"sae_lens {type(sl_sae).__name__}", device or "cpu", None)

# ----------------------------------------------------------------------------------------------------------------
# Pretrained releases
# ----------------------------------------------------------------------------------------------------------------

def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within ``timeout`` seconds."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False

@contextmanager
def _hub_offline() -> Iterator[None]:
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous

def load_pretrained(release: str, sae_id: str, device: str | torch.device = "cpu") -> SAE:
    """Load a SAELens release (e.g. ``gemma-scope-2b-pt-res-canonical``) by name through SAELens's loader.

    Offline, files already in the Hugging Face cache still load; otherwise this raises a ValueError saying the
    hub is unreachable (rather than retrying for minutes).
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    from sae_lens import SAE as SAELensSAE

    offline = constants.HF_HUB_OFFLINE or not hub_reachable()
    try:
        if offline:
            with _hub_offline():
                sl_sae = SAELensSAE.from_pretrained(release, sae_id, device="cpu")
        else:
            sl_sae = SAELensSAE.from_pretrained(release, sae_id, device="cpu")
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError, OSError) as err:
        raise InputError(
            f"cannot load SAE release={release!r} sae_id={sae_id!r}: the Hugging Face hub is unreachable "
            f"({'offline' if offline else type(err).__name__}) and the files are not in the local cache. Download the "
            f"folder where the hub is reachable and open it with workbench.sae.io.load_sae(PATH)") from err
    return from_sae_lens(sl_sae, device)
