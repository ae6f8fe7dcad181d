"""TransformerLens hook names: the default SAE site, validation, and how deep a forward must run."""
from __future__ import annotations

import re

from workbench.core.protocols import ModelLike, SAELike
from workbench.core.errors import ConfigError

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def default_hook(n_layers: int) -> str:
    """The residual stream after the middle block, where the paper trained its SAEs."""
    return f"blocks.{n_layers // 2}.hook_resid_post"


def hook_layer(hook: str) -> int | None:
    """The block index a hook belongs to, or None for embedding/final hooks."""
    match = _BLOCK.match(hook)
    return int(match.group(1)) if match else None


def validate_hooks(model: ModelLike, hooks: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Check hook names against the model; ``None`` or empty gives the default hook.

    Raises ``ValueError`` for an unknown hook or a layer out of range, with the valid choices.
    """
    n_layers = model.cfg.n_layers
    if hooks is None or hooks == () or hooks == []:
        return [default_hook(n_layers)]
    if isinstance(hooks, str):
        hooks = [hooks]
    known = model.hook_dict
    out = []
    for hook in hooks:
        if hook in known:
            if hook not in out:
                out.append(hook)
            continue
        layer = hook_layer(hook)
        if layer is not None and layer >= n_layers:
            raise ConfigError(
                f"Hook '{hook}' asks for layer {layer}, but the model has {n_layers} layers (0..{n_layers - 1}). "
                f"The default SAE site is '{default_hook(n_layers)}'."
            )
        suffixes = sorted({name.split(".", 2)[2] for name in known if name.startswith("blocks.0.")})
        raise ConfigError(
            f"Unknown hook '{hook}'. Use a TransformerLens hook name: 'blocks.<layer>.<point>' with point one "
            f"of {', '.join(suffixes)}; or 'hook_embed', 'ln_final.hook_normalized'. "
            f"Default: '{default_hook(n_layers)}'."
        )
    return out


def stop_layer(model: ModelLike, hooks: list[str]) -> int | None:
    """The ``stop_at_layer`` that still runs every hook; None means the whole model must run."""
    deepest = -1
    for hook in hooks:
        layer = hook_layer(hook)
        if layer is None:
            if hook.startswith(("hook_embed", "hook_pos_embed", "embed.")):
                continue
            return None
        deepest = max(deepest, layer)
    return deepest + 1 if deepest + 1 < model.cfg.n_layers else None


def sae_hook(sae: SAELike, hook: str | None = None) -> str:
    """``hook`` if given, else the hook named in the SAE's metadata; a ValueError says how to pass one."""
    hook = hook or getattr(getattr(sae, "metadata", None), "hook_name", None)
    if not hook:
        raise ValueError("the SAE's metadata names no hook: pass hook='blocks.<layer>.hook_resid_post'")
    return hook
