"""Which model made some activations, and where its weights came from.

* :func:`model_identity`: a loaded model described by what can be checked on it (the name ``load_model`` gave it,
  TransformerLens's ``cfg.model_name``, ``d_model``, ``n_layers``, ``d_vocab``);
* :func:`check_model_matches`: refuse a model that is not the one a spec names, so a store is never cached and
  labelled under another model's key;
* :func:`weights_source`: for a model name as :func:`workbench.data.models.load_model` takes it, the weights'
  origin, format, quantisation and SHA-256, and how to rebuild the same ``HookedTransformer`` (``model_class_name``
  and ``model_from_pretrained_kwargs``, the two fields SAELens and SAEBench read from an SAE's metadata).

The embedded models are GGUF files dequantised to float32 by HF transformers and loaded without TransformerLens's
weight processing: ``gemma-3-270m`` here means *Q4_K_M-dequantised* Gemma 3 270M, whose activations differ from the
bf16 checkpoint on the Hub. That is recorded, not hidden.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from workbench.core.errors import ConfigError

__all__ = ["NO_PROCESSING_KWARGS", "check_model_matches", "gguf_quantization", "model_identity", "weights_source"]

# HookedTransformer.from_pretrained(name, **these) builds the model without weight processing, as load_model does
# for the embedded models (the residual stream is then exactly the HF model's hidden state)
NO_PROCESSING_KWARGS: dict[str, bool] = {
    "fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False,
    "refactor_factored_attn_matrices": False,
}
# where each embedded model's GGUF was quantised from (its upstream Hugging Face repository)
_EMBEDDED_ORIGIN = {"gemma-3-270m": "google/gemma-3-270m", "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
_QUANT = re.compile(r"[._-](q\d(?:_k)?(?:_[a-z0-9]+)?|iq\d\w*|bf16|f16|f32)\.gguf$", re.IGNORECASE)


def gguf_quantization(filename: str) -> str | None:
    """The quantisation type a GGUF file name carries (``...q4_k_m.gguf`` -> ``"Q4_K_M"``), or None."""
    m = _QUANT.search(str(filename))
    return m.group(1).upper() if m else None


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies a loaded model: the name ``load_model`` gave it (None for a model built elsewhere), its
    TransformerLens ``cfg.model_name`` and its geometry."""
    cfg = getattr(model, "cfg", None)
    return {
        "name": getattr(model, "workbench_name", None),
        "tl_model_name": getattr(cfg, "model_name", None),
        "d_model": getattr(cfg, "d_model", None),
        "n_layers": getattr(cfg, "n_layers", None),
        "d_vocab": getattr(cfg, "d_vocab", None),
    }


def _canonical(name: str) -> tuple[str, str]:
    """A comparable form of a model name: an embedded name, a resolved local path, or TransformerLens's official
    name (``gpt2-small`` and ``gpt2`` are one model)."""
    from workbench.data.models import EMBEDDED_MODELS

    if name in EMBEDDED_MODELS:
        return "embedded", name
    path = Path(name).expanduser()
    if path.exists():
        return "path", str(path.resolve())
    try:
        from transformer_lens import loading_from_pretrained as loading

        return "tl", loading.get_official_model_name(name)
    except (ImportError, ValueError):
        return "name", name


def _describe(identity: dict[str, Any]) -> str:
    name = identity["name"] or identity["tl_model_name"] or "an unnamed model"
    return (f"{name!r} (cfg.model_name={identity['tl_model_name']!r}, d_model={identity['d_model']}, "
            f"n_layers={identity['n_layers']}"
            + (", not loaded by workbench.data.models.load_model)" if identity["name"] is None else ")"))


def check_model_matches(model: Any, expected: str, what: str = "spec.model") -> None:
    """Raise a ConfigError naming both models unless ``model`` is the model ``expected`` names.

    A model from :func:`workbench.data.models.load_model` matches when its name is ``expected``'s (compared as
    embedded name, resolved path or TransformerLens official name). A model built elsewhere carries no such
    name: it matches a TransformerLens or local name by ``cfg.model_name``, and never an embedded name, which means
    this project's dequantised GGUF weights."""
    ident = model_identity(model)
    kind, want = _canonical(expected)
    if ident["name"] is not None:
        if _canonical(str(ident["name"])) == (kind, want):
            return
    elif kind != "embedded" and ident["tl_model_name"] is not None:
        tl = str(ident["tl_model_name"])
        if tl in (want.split("/")[-1], Path(want).name, expected):
            return
    hint = (f"load it with workbench.data.models.load_model({expected!r}), or pass model=None and harvest loads it"
            if kind == "embedded" else f"pass the model {expected!r} names, or model=None and harvest loads it")
    own = ident["name"] or ident["tl_model_name"]
    raise ConfigError(
        f"model is {_describe(ident)} but {what}={expected!r}: the store would be cached and labelled as "
        f"{expected!r}'s activations",
        fix=f"{hint}; to harvest this model, name it in the spec (HarvestSpec(model={own!r}))" if own else hint,
        param="model")


def weights_source(name: str | None) -> dict[str, Any]:
    """Provenance of the weights ``load_model(name)`` uses, as recorded in stores and SAE ``cfg.json`` files:
    ``model_class_name``, ``model_from_pretrained_kwargs`` (what rebuilds the same ``HookedTransformer``) and
    ``weights`` (origin, format, quantisation, dequantised dtype, SHA-256). Never loads the model."""
    if not name:
        return {}
    from workbench.data.models import EMBEDDED_MODELS

    out: dict[str, Any] = {"model_class_name": "HookedTransformer"}
    if name in EMBEDDED_MODELS:
        from workbench.data.assets import ASSETS

        asset = ASSETS[EMBEDDED_MODELS[name].asset]
        out["model_from_pretrained_kwargs"] = dict(NO_PROCESSING_KWARGS)
        out["weights"] = {"source": "gguf", "origin": _EMBEDDED_ORIGIN.get(name), "file": asset.filename,
                          "quantization": gguf_quantization(asset.filename), "dequantized_to": "float32",
                          "sha256": asset.sha256, "packages": list(asset.packages)}
        return out
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from workbench.data.assets import sha256_file

        out["model_from_pretrained_kwargs"] = dict(NO_PROCESSING_KWARGS)
        out["weights"] = {"source": "gguf", "file": str(path.resolve()), "quantization": gguf_quantization(path.name),
                          "dequantized_to": "float32", "sha256": sha256_file(path)}
    elif (path / "config.json").is_file():
        out["model_from_pretrained_kwargs"] = dict(NO_PROCESSING_KWARGS)
        out["weights"] = {"source": "local-hf", "path": str(path.resolve())}
    else:  # a TransformerLens hub name, loaded with TransformerLens's own from_pretrained defaults
        out["model_from_pretrained_kwargs"] = {}
        out["weights"] = {"source": "hf-hub", "origin": _canonical(name)[1]}
    return out


def dataset_path(corpus: dict[str, Any] | None) -> str | None:
    """The ``dataset_path`` SAELens records for a corpus (a :meth:`CorpusSpec.to_dict`): the HF dataset name for
    ``hf:`` sources, the file or folder for local ones, ``workbench:<source>`` (not a Hub name) for the embedded
    and code corpora."""
    if not corpus:
        return None
    source = str(corpus.get("source", ""))
    if source.startswith("hf:"):
        return source[3:].strip()
    if source == "wiki":
        return "workbench:wiki/" + "+".join(corpus.get("languages") or [])
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else f"workbench:{source}"


def store_provenance(manifest: dict[str, Any], path: str | Path | None = None) -> dict[str, Any]:
    """What an SAE trained on a store should record about it: the store's path, corpus (spec, fingerprint,
    ``dataset_path``), harvest spec key and the model's identity and weights, from the store's manifest."""
    extra = manifest.get("extra") or {}
    out: dict[str, Any] = {"path": str(Path(path).resolve()) if path is not None else None,
                           "corpus": manifest.get("corpus"), "corpus_fingerprint": manifest.get("corpus_fingerprint"),
                           "dataset_path": dataset_path(manifest.get("corpus")),
                           "shard_contexts": manifest.get("shard_contexts")}
    for key in ("model_identity", "model_class_name", "model_from_pretrained_kwargs", "weights"):
        if key in extra:
            out[key] = extra[key]
    return out
