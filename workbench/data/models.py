"""Load a language model as a TransformerLens ``HookedTransformer``.

Accepted names:

* the embedded models (``gemma-3-270m``, the default, and ``smollm2-135m-instruct``), read from GGUF
  files shipped inside PyPI packages and dequantised by HF transformers;
* any official TransformerLens name (``gpt2-small``, ``gemma-2-2b`` ...), downloaded from the HF hub;
* a local HF model directory (with ``config.json``) or a ``.gguf`` file.

Converting a GGUF takes about a minute; the converted TransformerLens weights and the tokenizer are
cached under ``WORKBENCH_HOME/models`` so a second load takes seconds.

The embedded models are loaded *without* TransformerLens weight processing (no LayerNorm folding, no
centring), so the residual stream a hook sees is exactly the HF model's hidden state. Hub names follow
TransformerLens's own ``from_pretrained`` defaults, as SAELens's pretrained SAEs expect; pass
``processing=False`` to turn that off.

Harvesting and sampling run these same weights through HF transformers' modules, which are about twice as fast on
a CPU, under the same hook names (``workbench.data.forward``); analyses keep the ``HookedTransformer``.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.core.protocols import ModelLike
from workbench.core.errors import ConfigError, InputError
from workbench.data.assets import ASSETS, asset_path, sha256_file
from workbench.core.hardware import default_device, default_model_dtype, mps_available
from workbench.core.home import cache_dir
from workbench.core.persist import atomic_directory, save_tensors

log = logging.getLogger(__name__)

CONVERSION_VERSION = 1  # bump when the cached layout changes


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF inside a PyPI package."""

    name: str
    asset: str
    tl_name: str | None  # official TransformerLens config to use; None maps the HF config onto TL
    chat: bool
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            "gemma-3-270m", "gemma-3-270m", "google/gemma-3-270m", False, "Gemma 3 270M base, multilingual"
        ),
        EmbeddedModel(
            "smollm2-135m-instruct", "smollm2-135m-instruct", None, True, "SmolLM2-135M-Instruct chat model (Llama)"
        ),
    ]
}
DEFAULT_MODEL = "gemma-3-270m"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` picks CUDA when available, else MPS on Apple hardware, else the CPU."""
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device={device!r} is not a torch device: use cpu, cuda or cuda:N (or None for auto)"
                         ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={str(device)!r} but this torch build ({torch.__version__}) sees no CUDA GPU: use "
                         f"device='cpu' or None (auto)", param="device")
    if resolved.type == "mps" and not mps_available():
        raise ConfigError(f"device={str(device)!r} but this torch build ({torch.__version__}) sees no Apple GPU (MPS): "
                         f"use device='cpu' or None (auto)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(f"device={str(device)!r} but only {torch.cuda.device_count()} CUDA device(s) are visible: "
                         f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """``None``: the device's default (bfloat16 on a CUDA GPU with native bf16, else float32)."""
    if dtype is None:
        return default_model_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"Unknown dtype '{dtype}'. Use one of: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def unknown_model_message(name: str) -> str:
    return (
        f"Unknown model '{name}'. Embedded (offline) models: {', '.join(EMBEDDED_MODELS)}. "
        "To use a hub model, pass an official TransformerLens name such as 'gpt2-small' or 'gemma-2-2b' "
        "(needs internet access to the HF hub), or a path to a local HF model directory or a .gguf file."
    )


@contextlib.contextmanager
def _quiet():
    """Silence the deprecation chatter TransformerLens and transformers print on every load."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl_logger = logging.getLogger("transformer_lens")
        root = logging.getLogger()
        levels = (tl_logger.level, root.level)
        tl_logger.setLevel(logging.ERROR)
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            tl_logger.setLevel(levels[0])
            root.setLevel(levels[1])


# --------------------------------------------------------------------------------------------------
# GGUF -> TransformerLens conversion, cached


def _gguf_cache_dir(gguf: Path, digest: str) -> Path:
    return cache_dir("models") / f"{gguf.stem}-{digest[:12]}-v{CONVERSION_VERSION}"


def _load_hf_from_gguf(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # HF leaves a GGUF quantization_config on the dequantised model; TransformerLens refuses it.
    if getattr(hf_model.config, "quantization_config", None) is not None:
        del hf_model.config.quantization_config
    hf_model.eval()
    return hf_model, tokenizer


def _tl_config_and_weights(hf_model, tl_name: str | None, work_dir: Path):
    """TransformerLens config and state dict for an in-memory HF model."""
    from transformer_lens import loading_from_pretrained as loading

    hf_cfg = hf_model.config.to_dict()
    if tl_name is None:  # no official config: let TL map the HF config (Llama, Qwen, ...) from a local dir
        cfg_dir = work_dir / "hf_config"
        cfg_dir.mkdir(parents=True, exist_ok=True)
        if not getattr(hf_model.config, "architectures", None):  # GGUF configs leave it empty
            hf_model.config.architectures = [type(hf_model).__name__]
        hf_model.config.save_pretrained(cfg_dir)
        tl_name = str(cfg_dir)
    cfg = loading.get_pretrained_model_config(tl_name, hf_cfg=hf_cfg, dtype=torch.float32, device="cpu")
    state_dict = loading.get_pretrained_state_dict(tl_name, cfg, hf_model=hf_model, dtype=torch.float32)
    return cfg, state_dict


def _config_to_json(cfg) -> dict:
    out = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, torch.device):
            value = str(value)
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out


def _config_from_json(data: dict):
    from transformer_lens import HookedTransformerConfig

    data = dict(data)
    data["dtype"] = resolve_dtype(data.get("dtype", "float32"))
    data["device"] = "cpu"
    data.pop("n_params", None)
    return HookedTransformerConfig.from_dict(data)


def _convert_gguf(gguf: Path, tl_name: str | None, target: Path) -> None:
    """Dequantise a GGUF with HF, convert to TL weights, write safetensors + JSON + tokenizer (all or nothing)."""
    with atomic_directory(target) as tmp:
        hf_model, tokenizer = _load_hf_from_gguf(gguf)
        cfg, state_dict = _tl_config_and_weights(hf_model, tl_name, tmp)
        model = _build_model(cfg, tokenizer, state_dict)
        # clones: tied weights share storage, which safetensors refuses to write
        save_tensors({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "tl_config.json").write_text(json.dumps(_config_to_json(cfg), indent=1))
        tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / "source.json").write_text(json.dumps({"gguf": str(gguf), "tl_name": tl_name}))


def _build_model(cfg, tokenizer, state_dict, processing: bool = False):
    from transformer_lens import HookedTransformer

    with _quiet():
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        if processing:
            model.load_and_process_state_dict(state_dict)
        else:
            model.load_and_process_state_dict(
                state_dict,
                fold_ln=False,
                center_writing_weights=False,
                center_unembed=False,
                fold_value_biases=False,
                refactor_factored_attn_matrices=False,
            )
    return model


def _load_converted(target: Path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer
    from transformer_lens import HookedTransformer

    try:
        cfg = _config_from_json(json.loads((target / "tl_config.json").read_text()))
        # TransformerLens re-reads any tokenizer that does not add BOS; loading it that way saves a reload.
        tokenizer = AutoTokenizer.from_pretrained(target / "tokenizer", add_bos_token=True)
        with _quiet():
            model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        state = load_file(str(target / "model.safetensors"))
        model.load_state_dict(state, strict=True, assign=True)
    except Exception as err:  # truncated file, or a layout from another version
        raise InputError(
            f"The cached converted model in {target} is unreadable ({type(err).__name__}: {err}). "
            "Delete that folder; the next load rebuilds it from the GGUF."
        ) from err
    return model


def _cached_gguf_model(gguf: Path, tl_name: str | None, expected_sha: str | None):
    gguf = gguf.resolve()
    digest = expected_sha or sha256_file(gguf)
    target = _gguf_cache_dir(gguf, digest)
    if not (target / "model.safetensors").exists():
        from filelock import FileLock

        with FileLock(str(target) + ".lock"):
            if not (target / "model.safetensors").exists():
                # A minute or more of silence otherwise: say what is happening, on stderr, whatever logging says.
                t0 = time.time()
                print(f"[workbench] first load of {gguf.name}: dequantising the GGUF and converting it to "
                      f"TransformerLens weights (about 1-2 minutes on 2 CPU cores, once; cached in {target})...",
                      file=sys.stderr, flush=True)
                log.info("converting %s (first load only)", gguf.name)
                _convert_gguf(gguf, tl_name, target)
                print(f"[workbench] converted {gguf.name} in {time.time() - t0:.0f} s; later loads take seconds",
                      file=sys.stderr, flush=True)
                log.info("converted in %.0fs", time.time() - t0)
    return _load_converted(target)


# --------------------------------------------------------------------------------------------------
# Public API


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    processing: bool | None = None,
    **from_pretrained_kwargs: Any,
):
    """A TransformerLens ``HookedTransformer`` with working hooks, ``run_with_cache``,
    ``stop_at_layer`` and ``generate``.

    ``device=None`` picks CUDA when available, else MPS on Apple hardware, else the CPU. ``dtype=None`` gives
    bfloat16 weights on a CUDA GPU with native bf16 (half the memory, the GPU's fast path) and float32 everywhere
    else; pass ``dtype="float32"`` to opt out of bf16 on a GPU. For hub names,
    ``processing`` (default: TransformerLens's own default) chooses ``from_pretrained`` against
    ``from_pretrained_no_processing``; extra keyword arguments go to it.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(unknown_model_message(str(name)), param="model")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)

    if name in EMBEDDED_MODELS:
        spec = EMBEDDED_MODELS[name]
        model = _cached_gguf_model(asset_path(spec.asset), spec.tl_name, ASSETS[spec.asset].sha256)
    elif Path(name).expanduser().is_file() and name.endswith(".gguf"):
        model = _cached_gguf_model(Path(name).expanduser(), None, None)
    elif (Path(name).expanduser() / "config.json").exists():
        model = _load_local_hf_dir(Path(name).expanduser(), processing=bool(processing))
    else:
        model = _load_hub_model(name, device, torch_dtype, processing, from_pretrained_kwargs)
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints "Moving model to device" on stdout
        # HookedTransformer.to takes one device or dtype at a time; casting first moves half the bytes to a GPU
        if torch_dtype != torch.float32:
            model = model.to(torch_dtype)
        model = model.to(device)
    model.cfg.device = str(device)
    model.cfg.dtype = torch_dtype
    model.eval()
    model.workbench_name = name
    return model


def _load_local_hf_dir(path: Path, processing: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    cfg, state_dict = _tl_config_and_weights(hf_model, str(path), path)
    return _build_model(cfg, tokenizer, state_dict, processing=processing)


def _official_name(name: str) -> str | None:
    from transformer_lens import loading_from_pretrained as loading

    try:
        return loading.get_official_model_name(name)
    except ValueError:
        return None


def _load_hub_model(name, device, dtype, processing, kwargs):
    from transformer_lens import HookedTransformer

    official = _official_name(name)
    if official is None:
        raise ConfigError(unknown_model_message(name), param="model")
    loader = HookedTransformer.from_pretrained_no_processing if processing is False else HookedTransformer.from_pretrained
    try:
        with _quiet():
            return loader(official, device=str(device), dtype=dtype, **kwargs)
    except (OSError, ConnectionError) as err:  # huggingface_hub raises OSError subclasses offline
        raise InputError(
            f"Could not download '{official}' from the HF hub ({type(err).__name__}: {err}). "
            "The hub is unreachable from this machine or the model is gated (set HF_TOKEN). Offline, use an "
            f"embedded model ({', '.join(EMBEDDED_MODELS)}) or a local model directory / .gguf file."
        ) from err


def load_tokenizer(name: str = DEFAULT_MODEL):
    """The tokenizer alone (fast after the first model load, which caches it)."""
    if name in EMBEDDED_MODELS:
        spec = EMBEDDED_MODELS[name]
        target = _gguf_cache_dir(asset_path(spec.asset).resolve(), ASSETS[spec.asset].sha256)
        if (target / "tokenizer").exists():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(target / "tokenizer", add_bos_token=True)
    return load_model(name, device="cpu").tokenizer


def model_info(model: ModelLike) -> dict:
    """Name, size and geometry of a loaded model, for manifests and summaries."""
    cfg = model.cfg
    return {
        "name": getattr(model, "workbench_name", cfg.model_name),
        "tl_model_name": cfg.model_name,
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "d_vocab": cfg.d_vocab,
        "n_ctx": cfg.n_ctx,
        "dtype": str(cfg.dtype).removeprefix("torch."),
    }
