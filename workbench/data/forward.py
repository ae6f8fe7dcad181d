"""The fastest exact forward to a hook: TransformerLens hook names over an HF transformers model.

``HookedTransformer`` runs attention as explicit einsums with materialised masks; the HF model of the same
weights runs PyTorch's fused ``scaled_dot_product_attention`` and is about twice as fast on a CPU
(``benchmarks/bench_harvest.py``). This module rebuilds that HF model from a loaded ``HookedTransformer``'s own
weights (no second download, the embedding shared, not copied), truncated to the deepest block a set of hooks
needs, and reads each TransformerLens hook off the HF module where the same value flows
(``docs/methods.md`` §19):

* ``blocks.L.hook_resid_pre`` / ``hook_resid_post``: the input / output of decoder layer L;
* ``blocks.L.hook_resid_mid``: the input of the norm in front of the MLP;
* ``blocks.L.hook_attn_out`` / ``hook_mlp_out``: the attention / MLP branch as added to the residual stream
  (for Gemma 2/3 after its post-norm, as TransformerLens defines it);
* ``blocks.L.mlp.hook_pre`` / ``mlp.hook_pre_linear`` / ``mlp.hook_post``: gate and up projections, and the
  input of the down projection.

Supported: Gemma 3 and Llama-family weights loaded without TransformerLens weight processing (the embedded
models). Anything else -- another architecture, a processed hub model, a hook not listed above -- runs
through ``HookedTransformer.run_with_hooks`` with ``stop_at_layer``, as before. Every HF path is checked
against ``HookedTransformer`` on a short input when it is built and falls back (with a warning) on mismatch.
"""
from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from workbench.core.protocols import ModelLike
from workbench.data.hooks import hook_layer, stop_layer

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("Gemma3ForCausalLM", "LlamaForCausalLM")
_POINT = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out|"
                    r"mlp\.hook_pre|mlp\.hook_pre_linear|mlp\.hook_post)$")
# Agreement with HookedTransformer demanded when a path is built: relative to each activation's scale (float32
# models; half-precision ones get HALF_CHECK_RTOL, two bf16 paths differing by a few rounding steps).
CHECK_RTOL = 1e-3
HALF_CHECK_RTOL = 5e-2


# --------------------------------------------------------------------------------------------------
# HF model from TransformerLens weights


def unsupported_reason(model: ModelLike) -> str | None:
    """Why ``model`` cannot be run as an HF model here, or None when it can."""
    cfg = model.cfg
    arch = getattr(cfg, "original_architecture", None)
    if arch not in SUPPORTED_ARCHITECTURES:
        return f"architecture {arch!r} is not one of {SUPPORTED_ARCHITECTURES}"
    if cfg.normalization_type != "RMS" or cfg.positional_embedding_type != "rotary" or not cfg.gated_mlp:
        return "weights were processed by TransformerLens (folded norms) or the block is not a gated RMS block"
    if cfg.rotary_dim != cfg.d_head or getattr(cfg, "rotary_adjacent_pairs", False):
        return "partial or interleaved rotary embeddings"
    for flag in ("use_NTK_by_parts_rope", "use_yarn_rope", "use_dynamic_ntk_rope", "use_attn_result",
                 "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in", "parallel_attn_mlp"):
        if getattr(cfg, flag, False):
            return f"cfg.{flag} is set"
    if getattr(cfg, "rotary_scaling_factor", 1.0) != 1.0 or getattr(cfg, "attn_scores_soft_cap", -1.0) > 0:
        return "scaled rotary embeddings or attention soft-capping"
    if arch == "LlamaForCausalLM" and abs(cfg.attn_scale - cfg.d_head**0.5) > 1e-6:
        return "attention scale differs from sqrt(d_head)"
    state = model.state_dict()
    for name, value in state.items():
        if re.search(r"\.(b_Q|_?b_K|_?b_V|b_O|b_in|b_out)$", name) and bool(value.abs().max() > 0):
            return f"non-zero bias {name}"
    return None


def _hf_config(cfg, n_layers: int):
    if cfg.original_architecture == "Gemma3ForCausalLM":
        from transformers import Gemma3TextConfig

        Config: Any = Gemma3TextConfig
        types = {"local": "sliding_attention", "global": "full_attention"}
        layer_types = [types[t] for t in (cfg.attn_types or ["global"] * cfg.n_layers)][:n_layers]
        extra = dict(
            hidden_activation=cfg.act_fn,
            query_pre_attn_scalar=int(round(cfg.attn_scale**2)),
            sliding_window=cfg.window_size or 4096,
            layer_types=layer_types,
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": float(cfg.rotary_base)},
                "sliding_attention": {"rope_type": "default",
                                      "rope_theta": float(cfg.rotary_base_local or cfg.rotary_base)},
            },
            attn_logit_softcapping=None,
            final_logit_softcapping=None,
        )
    else:
        from transformers import LlamaConfig

        Config = LlamaConfig

        extra = dict(hidden_act=cfg.act_fn, rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rotary_base)})
    return Config(
        vocab_size=cfg.d_vocab,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_key_value_heads or cfg.n_heads,
        head_dim=cfg.d_head,
        rms_norm_eps=cfg.eps,
        max_position_embeddings=cfg.n_ctx,
        tie_word_embeddings=False,
        pad_token_id=None,
        **extra,
    )


def _hf_weights(model: ModelLike, n_layers: int, causal_lm: bool) -> dict[str, torch.Tensor]:
    """HF parameter names -> tensors, inverting TransformerLens's Gemma/Llama conversion."""
    import einops

    sd = model.state_dict()
    gemma = model.cfg.original_architecture == "Gemma3ForCausalLM"
    norm = (lambda w: w.float() - 1.0) if gemma else (lambda w: w)  # Gemma's RMSNorm multiplies by (1 + weight)
    pre = "model." if causal_lm else ""
    out = {f"{pre}norm.weight": norm(sd["ln_final.w"])}
    for i in range(n_layers):
        b, h = f"blocks.{i}.", f"{pre}layers.{i}."
        kv = "_" if f"{b}attn._W_K" in sd else ""
        out[h + "self_attn.q_proj.weight"] = einops.rearrange(sd[b + "attn.W_Q"], "n m h -> (n h) m")
        out[h + "self_attn.k_proj.weight"] = einops.rearrange(sd[f"{b}attn.{kv}W_K"], "n m h -> (n h) m")
        out[h + "self_attn.v_proj.weight"] = einops.rearrange(sd[f"{b}attn.{kv}W_V"], "n m h -> (n h) m")
        out[h + "self_attn.o_proj.weight"] = einops.rearrange(sd[b + "attn.W_O"], "n h m -> m (n h)")
        out[h + "mlp.gate_proj.weight"] = sd[b + "mlp.W_gate"].T.contiguous()
        out[h + "mlp.up_proj.weight"] = sd[b + "mlp.W_in"].T.contiguous()
        out[h + "mlp.down_proj.weight"] = sd[b + "mlp.W_out"].T.contiguous()
        out[h + "input_layernorm.weight"] = norm(sd[b + "ln1.w"])
        if gemma:
            out[h + "post_attention_layernorm.weight"] = norm(sd[b + "ln1_post.w"])
            out[h + "pre_feedforward_layernorm.weight"] = norm(sd[b + "ln2.w"])
            out[h + "post_feedforward_layernorm.weight"] = norm(sd[b + "ln2_post.w"])
            out[h + "self_attn.q_norm.weight"] = norm(sd[b + "attn.q_norm.w"])
            out[h + "self_attn.k_norm.weight"] = norm(sd[b + "attn.k_norm.w"])
        else:
            out[h + "post_attention_layernorm.weight"] = sd[b + "ln2.w"]
    if causal_lm:
        out["lm_head.weight"] = sd["unembed.W_U"].T  # a view: x @ W_U, as TransformerLens computes it
    return out


def hf_model_from_tl(model: ModelLike, n_layers: int | None = None, causal_lm: bool = False):
    """The HF transformers model holding ``model``'s weights: the bare decoder truncated to ``n_layers`` blocks,
    or (``causal_lm=True``) the full model with its LM head, for ``generate``.

    The token embedding is ``model.embed.W_E`` itself (shared storage; Gemma's sqrt(d_model) scale is already in
    it, so the HF scale is set to 1); the other weights are copies (``docs/methods.md`` §19). Raises ValueError
    naming the reason when the model is not supported (see ``unsupported_reason``).
    """
    reason = unsupported_reason(model)
    if reason:
        raise ValueError(f"Cannot rebuild {getattr(model.cfg, 'model_name', 'this model')} as an HF model: {reason}. "
                         "Use the HookedTransformer directly (hook_forward falls back to it by itself).")
    from transformers import Gemma3ForCausalLM, Gemma3TextModel, LlamaForCausalLM, LlamaModel

    n_layers = model.cfg.n_layers if n_layers is None else n_layers
    if not 1 <= n_layers <= model.cfg.n_layers:
        raise ValueError(f"n_layers must be in 1..{model.cfg.n_layers}, got {n_layers}")
    gemma = model.cfg.original_architecture == "Gemma3ForCausalLM"
    config = _hf_config(model.cfg, n_layers)
    config.vocab_size = 1  # the embedding comes from TransformerLens; do not allocate and initialise another
    cls = (Gemma3ForCausalLM if causal_lm else Gemma3TextModel) if gemma else (LlamaForCausalLM if causal_lm else LlamaModel)
    param = next(model.parameters())
    skip_init: Callable[[], contextlib.AbstractContextManager[Any]]
    try:  # every weight is replaced below: skip HF's random initialisation (about a second)
        from transformers.initialization import no_init_weights
        skip_init = no_init_weights
    except ImportError:  # older transformers
        skip_init = contextlib.nullcontext
    with torch.device(param.device), skip_init():
        hf: Any = cls(config)  # one of four HF classes; its submodules (model, embed_tokens) are dynamic attributes
    config.vocab_size = model.cfg.d_vocab
    weights = _hf_weights(model, n_layers, causal_lm)
    if causal_lm:  # built for one token of vocabulary: swap in full-size heads before loading
        hf.lm_head = torch.nn.Linear(model.cfg.d_model, model.cfg.d_vocab, bias=False, device="meta")
    missing, unexpected = hf.load_state_dict(weights, strict=False, assign=True)
    embed_name = "model.embed_tokens.weight" if causal_lm else "embed_tokens.weight"
    if set(missing) != {embed_name} or unexpected:
        raise RuntimeError(f"HF weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    base = hf.model if causal_lm else hf
    base.embed_tokens.weight = torch.nn.Parameter(model.embed.W_E, requires_grad=False)
    base.embed_tokens.num_embeddings = model.cfg.d_vocab
    if gemma:
        base.embed_tokens.embed_scale.fill_(1.0)
        base.embed_tokens.scalar_embed_scale = 1.0
    hf.to(param.dtype)
    hf.requires_grad_(False)
    return hf.eval()


# --------------------------------------------------------------------------------------------------
# TransformerLens hook names on HF modules


def _hf_site(layer_module, point: str, gemma: bool) -> tuple[torch.nn.Module, str]:
    """(module, 'input' | 'output') where the TransformerLens hook ``point`` of one block flows in HF."""
    mlp, attn = layer_module.mlp, layer_module.self_attn
    sites = {
        "hook_resid_pre": (layer_module, "input"),
        "hook_resid_post": (layer_module, "output"),
        "hook_resid_mid": (layer_module.pre_feedforward_layernorm if gemma else layer_module.post_attention_layernorm,
                           "input"),
        "hook_attn_out": (layer_module.post_attention_layernorm if gemma else attn.o_proj, "output"),
        "hook_mlp_out": (layer_module.post_feedforward_layernorm if gemma else mlp.down_proj, "output"),
        "mlp.hook_pre": (mlp.gate_proj, "output"),
        "mlp.hook_pre_linear": (mlp.up_proj, "output"),
        "mlp.hook_post": (mlp.down_proj, "input"),
    }
    return sites[point]


def hf_supports_hook(hook: str) -> bool:
    """Whether ``hook`` can be read off the HF model (the per-token block hooks listed in the module docstring)."""
    return _POINT.match(hook) is not None


@dataclass
class HookForward:
    """``forward(tokens) -> {hook: activation}`` for a fixed set of hooks, run by the fastest exact path.

    ``path`` is ``"hf"`` (HF model rebuilt from the TransformerLens weights) or ``"hooked_transformer"``.
    """

    hooks: list[str]
    path: str
    _run: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    hf_model: Any = field(default=None, repr=False, compare=False)  # the HF model behind path "hf"

    def __call__(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self._run(tokens)


def tl_forward(model: ModelLike, hooks: list[str]) -> HookForward:
    """The ``HookedTransformer.run_with_hooks`` path with ``stop_at_layer`` (any hook, any model)."""
    stop = stop_layer(model, hooks)

    def run(tokens):
        grabbed: dict[str, torch.Tensor] = {}

        def grab(act, hook):
            grabbed[hook.name] = act.detach()

        model.run_with_hooks(tokens, fwd_hooks=[(h, grab) for h in hooks], stop_at_layer=stop, return_type=None)
        return {h: grabbed[h] for h in hooks}

    return HookForward(list(hooks), "hooked_transformer", run)


def hf_forward(model: ModelLike, hooks: list[str]) -> HookForward:
    """The HF path for ``hooks``; ValueError when a hook or the model is not supported."""
    bad = [h for h in hooks if not hf_supports_hook(h)]
    if bad:
        raise ValueError(f"Hooks {bad} have no HF equivalent here; supported: blocks.L.<{_POINT.pattern}>")
    n_layers = max(hook_layer(h) or 0 for h in hooks) + 1  # every hook names a layer (hf_supports_hook)
    hf = hf_model_from_tl(model, n_layers=n_layers)
    gemma = model.cfg.original_architecture == "Gemma3ForCausalLM"
    grabbed: dict[str, torch.Tensor] = {}

    def grabber(name: str, where: str):
        if where == "input":
            def pre_hook(module, args, kwargs):
                grabbed[name] = args[0] if args else kwargs["hidden_states"]
            return pre_hook

        def post_hook(module, args, output):
            grabbed[name] = output[0] if isinstance(output, tuple) else output
        return post_hook

    for hook in hooks:
        match = _POINT.match(hook)
        assert match is not None  # hf_supports_hook checked every name
        module, where = _hf_site(hf.layers[int(match.group(1))], match.group(2), gemma)
        if where == "input":
            module.register_forward_pre_hook(grabber(hook, where), with_kwargs=True)
        else:
            module.register_forward_hook(grabber(hook, where))

    def run(tokens):
        grabbed.clear()
        hf(input_ids=tokens, use_cache=False)
        return {h: grabbed[h] for h in hooks}

    forward = HookForward(list(hooks), "hf", run)
    forward.hf_model = hf
    return forward


def max_relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per hook: max |a - b| over max |b| (the activation's scale)."""
    return {h: float((a[h].float() - b[h].float()).abs().max() / b[h].float().abs().max().clamp_min(1e-12)) for h in b}


def hook_forward(model: ModelLike, hooks: list[str], prefer: str = "auto", check: bool = True) -> HookForward:
    """The fastest exact forward for ``hooks`` on ``model`` (``docs/methods.md`` §19).

    ``prefer="auto"`` takes the HF path when the model and every hook are supported and, with ``check``, when it
    agrees with ``HookedTransformer`` on a short input to ``CHECK_RTOL``; otherwise the HookedTransformer path.
    ``prefer="hooked_transformer"`` forces the latter; ``prefer="hf"`` raises instead of falling back.
    """
    if prefer not in ("auto", "hf", "hooked_transformer"):
        raise ValueError(f"prefer must be 'auto', 'hf' or 'hooked_transformer', got {prefer!r}")
    hooks = list(hooks)
    if prefer == "hooked_transformer":
        return tl_forward(model, hooks)
    reason = unsupported_reason(model) or next((f"hook {h!r} has no HF site" for h in hooks if not hf_supports_hook(h)), None)
    if reason:
        if prefer == "hf":
            raise ValueError(f"The HF forward cannot run here: {reason}")
        log.info("harvest forward: HookedTransformer (%s)", reason)
        return tl_forward(model, hooks)
    key = _fingerprint(model)
    forward = _cached_hf_forward(model, hooks, key)
    checked = model.__dict__.setdefault("_workbench_hf_checked", {})  # {weights fingerprint: hooks verified}
    if check and set(hooks) <= checked.get(key, set()):
        return forward  # verified for these weights by an earlier call (a probe costs seconds on a busy CPU)
    if check:
        device = next(model.parameters()).device
        probe = torch.arange(1, 17, device=device).remainder(model.cfg.d_vocab).unsqueeze(0)
        errors = max_relative_error(forward(probe), tl_forward(model, hooks)(probe))
        worst = max(errors.values())
        if worst > (CHECK_RTOL if next(model.parameters()).dtype == torch.float32 else HALF_CHECK_RTOL):
            model.__dict__["_workbench_hf_forwards"].pop((key, tuple(hooks)), None)  # never reuse a refused build
            if prefer == "hf":
                raise RuntimeError(f"The HF forward disagrees with HookedTransformer: {errors}")
            import warnings

            warnings.warn(f"The HF forward disagrees with HookedTransformer ({errors}); using HookedTransformer.",
                          stacklevel=2)
            return tl_forward(model, hooks)
        checked[key] = checked.get(key, set()) | set(hooks)
    return forward


HF_FORWARDS_KEPT = 2  # truncated HF copies kept per model (a Gemma-3-270M one is about 200 MB in float32)


def _cached_hf_forward(model: ModelLike, hooks: list[str], key: tuple) -> HookForward:
    """``hf_forward(model, hooks)``, kept on ``model`` for the same weights and hooks, so repeated harvests do not
    rebuild the HF copy of the weights; rebuilt when any parameter was replaced or changed in place."""
    cache = model.__dict__.setdefault("_workbench_hf_forwards", {})  # a plain attribute: not a submodule
    entry = (key, tuple(hooks))
    if entry not in cache:
        for stale in [k for k in cache if k[0] != key]:
            del cache[stale]
        while len(cache) >= HF_FORWARDS_KEPT:
            del cache[next(iter(cache))]
        cache[entry] = hf_forward(model, hooks)
    return cache[entry]


def _fingerprint(model: ModelLike) -> tuple:
    """Changes when any parameter is replaced, moved, cast or modified in place."""
    return tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in model.parameters())


# --------------------------------------------------------------------------------------------------
# TransformerLens hook functions on the HF model, for decoding (workbench.intervene.generation)

# Sites where a hook's returned tensor changes the forward exactly as it would in HookedTransformer. Not
# hook_resid_mid: HF reads the residual before the pre-MLP norm, so replacing the norm's input would not carry on.
_EDITABLE = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "mlp.hook_pre",
             "mlp.hook_pre_linear", "mlp.hook_post")


def hf_supports_editing(hook: str) -> bool:
    """Whether a TransformerLens hook function on ``hook`` (reading or replacing it) can run on the HF model."""
    match = _POINT.match(hook)
    return match is not None and match.group(2) in _EDITABLE


class _HookPointName:
    """What a TransformerLens hook function receives as ``hook`` on the HF path: the hook's ``name``."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


def attach_tl_hooks(hf, model: ModelLike, fwd_hooks) -> list:
    """Register TransformerLens ``(name, fn(act, hook))`` pairs on an HF model from ``hf_model_from_tl``; ``fn``
    may return a replacement activation, as in ``HookedTransformer``. Returns the handles (``.remove()`` them)."""
    layers = hf.model.layers if hasattr(hf, "model") else hf.layers
    gemma = model.cfg.original_architecture == "Gemma3ForCausalLM"
    handles = []
    for name, fn in fwd_hooks:
        if not hf_supports_editing(name):
            raise ValueError(f"hook {name!r} cannot run on the HF model; supported points: {', '.join(_EDITABLE)}")
        match = _POINT.match(name)
        assert match is not None  # hf_supports_editing checked the name
        module, where = _hf_site(layers[int(match.group(1))], match.group(2), gemma)
        point = _HookPointName(name)
        if where == "input":
            def pre(mod, args, kwargs, fn=fn, point=point):
                x = args[0] if args else kwargs["hidden_states"]
                y = fn(x, point)
                if y is None or y is x:
                    return None
                if args:
                    return (y, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": y}

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(mod, args, out, fn=fn, point=point):
                x = out[0] if isinstance(out, tuple) else out
                y = fn(x, point)
                if y is None or y is x:
                    return None
                return (y, *out[1:]) if isinstance(out, tuple) else y

            handles.append(module.register_forward_hook(post))
    return handles


def hf_causal_lm(model: ModelLike):
    """``hf_model_from_tl(model, causal_lm=True)``, kept on ``model`` and rebuilt when any of its parameters was
    replaced or changed in place since (tracked by storage pointer and version counter)."""
    key = _fingerprint(model)
    cached = model.__dict__.get("_workbench_hf_causal_lm")
    if cached is not None and cached[0] == key:
        return cached[1]
    hf = hf_model_from_tl(model, causal_lm=True)
    model.__dict__["_workbench_hf_causal_lm"] = (key, hf)  # a plain attribute: not a submodule of the TL model
    return hf
