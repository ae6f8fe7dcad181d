"""Text generation with hooks: a seeded sampling loop over TransformerLens's key-value cache.

    from workbench.intervene.generation import GenerationConfig, generate
    out = generate(model, "The bridge", GenerationConfig(max_new_tokens=32, n_samples=4, seed=0),
                   fwd_hooks=[("blocks.9.hook_resid_post", fn)])
    out.texts            # the n_samples continuations (special tokens dropped)

Why not ``model.generate``: we need (a) the same random draws for every condition compared (one
``torch.Generator`` per call, seeded), (b) an explicit all-ones attention mask (TransformerLens otherwise masks
every token equal to the pad token, and SmolLM2's pad token is its end-of-turn token, which chat prompts contain),
and (c) the key-value cache handed to hooks, so a hook knows the absolute position of the tokens it sees
(:func:`cache_offset`). Every sample of a call shares one prompt, so no padding is ever needed.

TransformerLens 3.9 computes ``W.T.contiguous()`` (and a ``W_O`` rearrange) inside every MLP, unembedding and
attention forward: a full copy of those weights per call, which dominates one-token decoding steps (Gemma's
262k x 640 unembedding alone is 670 MB). :func:`prepare_for_decoding` stores those parameters transposed in
memory, the same values, so that each copy becomes a no-op: about 8x faster decoding on CPU, logits identical.

For a Gemma 3 or Llama-family model loaded without weight processing (the embedded models) and hooks on
per-token block points (``hook_resid_pre/post``, ``hook_attn_out``, ``hook_mlp_out``, ``mlp.hook_pre/post``), the
loop runs on the HF transformers model rebuilt from the same weights (:func:`workbench.data.forward.hf_causal_lm`),
with the hook functions registered on the matching HF modules and HF's key-value cache; the prompt pass computes
the last position's logits only. Same sampling code, same generator, same hook semantics (a hook still sees the
absolute positions through :func:`cache_offset`), about 2x faster per token on CPU (``benchmarks/
bench_generation.py``; ``docs/methods.md`` §19). ``GenerationConfig.backend`` chooses explicitly.

Decoding runs one token per step, small matrix products that one CPU thread does as fast as several; on a shared
2-core machine two threads were 7x slower (OpenMP waits; measured at load 8.5: 4.5 s vs 31 s of CPU for 4 x 16
Gemma tokens). So :class:`GenerationConfig` runs on ``threads=1`` by default.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from workbench.core.protocols import ModelLike
from workbench.core.hardware import torch_threads

__all__ = ["GenerationConfig", "Generation", "cache_offset", "generate", "prepare_for_decoding", "prompt_tokens"]

Hook = tuple[str, Callable]


@dataclass(frozen=True)
class GenerationConfig:
    """How to sample. ``temperature=0`` is greedy (then every sample is the same: use ``n_samples=1``)."""

    max_new_tokens: int = 32
    n_samples: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    stop_at_eos: bool = True
    threads: int | None = 1  # torch CPU threads while generating (None: unchanged); see the module docstring
    backend: str = "auto"  # "auto": the HF model when model and hooks allow it; "hf"; "hooked_transformer"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.backend not in ("auto", "hf", "hooked_transformer"):
            raise ValueError(f"backend must be 'auto', 'hf' or 'hooked_transformer', got {self.backend!r}")


@dataclass
class Generation:
    """The prompt's token ids [n_prompt], the generated ids [n_samples, n_new] (``eos`` then padding after a
    stop), how many tokens each sample produced before stopping, and the decoded continuations."""

    prompt: str
    prompt_ids: Tensor
    ids: Tensor
    lengths: list[int]
    texts: list[str] = field(default_factory=list)

    def sample_ids(self, j: int) -> Tensor:
        """The tokens sample ``j`` produced (its end-of-sequence token excluded)."""
        return self.ids[j, : self.lengths[j]]


_RELAYOUT_2D = ("W_gate", "W_in", "W_out", "W_U")


@torch.no_grad()
def prepare_for_decoding(model: ModelLike) -> None:
    """Store the weights TransformerLens transposes on every forward in transposed memory order (same values,
    so outputs are bit-identical) so that its per-call ``.contiguous()`` copies cost nothing. Idempotent."""
    if getattr(model, "_workbench_decoding_layout", False):
        return
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _RELAYOUT_2D and p.ndim == 2:
            p.data = p.data.t().contiguous().t()
        elif leaf == "W_O" and p.ndim == 3:  # rearranged to [d_model, (head d_head)] on every call
            p.data = p.data.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    setattr(model, "_workbench_decoding_layout", True)  # a flag on the model object (see the check above)


def prompt_tokens(model: ModelLike, prompt: str | Tensor | Sequence[int]) -> Tensor:
    """Token ids [n] of a prompt. Text gets the BOS token unless it already starts with it (chat templates, see
    :func:`workbench.data.chat.chat_prompt`, write their own)."""
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("the prompt is empty: give some text (a base model needs at least a few words)")
        tok = model.tokenizer
        bos = getattr(tok, "bos_token", None)
        prepend = not prompt.startswith(bos) if bos else False
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if prepend:
            ids = [int(tok.bos_token_id)] + list(ids)
        return torch.tensor(ids, dtype=torch.long)
    ids = torch.as_tensor(prompt, dtype=torch.long)
    if ids.ndim != 1 or ids.numel() == 0:
        raise ValueError(f"prompt token ids must be a non-empty 1-d sequence, got shape {tuple(ids.shape)}")
    return ids


class _Positions:
    """Stands in for the key-value cache handed to hook factories on the HF path: ``cache_offset`` reads
    ``previous_attention_mask``, whose width is the number of positions seen including the ones being run."""

    def __init__(self, n: int):
        self.n, self.total = n, 0

    @property
    def previous_attention_mask(self) -> Tensor:
        return torch.ones(self.n, self.total, dtype=torch.long)


def _use_hf(model: ModelLike, hooks: Sequence[Hook], backend: str) -> bool:
    if backend == "hooked_transformer":
        return False
    from workbench.data.forward import hf_supports_editing, unsupported_reason

    reason = unsupported_reason(model) or next(
        (f"hook {name!r} has no HF site" for name, _ in hooks if not hf_supports_editing(name)), None)
    if reason and backend == "hf":
        raise ValueError(f"backend='hf' cannot run here: {reason}. Use backend='auto' or 'hooked_transformer'.")
    return reason is None


class _HFDecoder:
    """One-token-at-a-time forward of the HF model with its key-value cache (``_Positions`` kept in step)."""

    def __init__(self, model: ModelLike, hooks: Sequence[Hook], positions: _Positions):
        import inspect

        from transformers import DynamicCache

        from workbench.data.forward import attach_tl_hooks, hf_causal_lm

        self.hf = hf_causal_lm(model)
        self.positions = positions
        try:
            self.cache = DynamicCache(config=self.hf.config)
        except TypeError:  # older transformers
            self.cache = DynamicCache()
        params = inspect.signature(self.hf.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.handles = attach_tl_hooks(self.hf, model, hooks)

    def __call__(self, tokens: Tensor) -> Tensor:
        self.positions.total += tokens.shape[1]
        out = self.hf(input_ids=tokens, use_cache=True, logits_to_keep=1, **{self.cache_kw: self.cache})
        return out.logits[:, -1]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def cache_offset(cache, n_new: int) -> int:
    """The absolute position of the first of ``n_new`` tokens being processed, read inside a hook: TransformerLens
    appends the new tokens' attention mask to the cache before the blocks run. 0 when there is no cache."""
    if cache is None:
        return 0
    return int(cache.previous_attention_mask.shape[1]) - int(n_new)


def _sample(logits: Tensor, config: GenerationConfig, gen: torch.Generator) -> Tensor:
    if config.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < config.top_p  # always keeps the most likely token
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def generate(model: ModelLike, prompt: str | Tensor | Sequence[int], config: GenerationConfig | None = None, *,
             fwd_hooks: Sequence[Hook] | Callable[[object], Sequence[Hook]] = ()) -> Generation:
    """``config.n_samples`` continuations of one prompt, sampled with a generator seeded by ``config.seed``.

    ``fwd_hooks``: TransformerLens (hook name, function) pairs active for the prompt pass and every generated
    token; or a function of the key-value cache returning them (for hooks that need absolute positions, see
    :func:`cache_offset`).
    """
    from transformer_lens import TransformerLensKeyValueCache

    cfg = config or GenerationConfig()
    prepare_for_decoding(model)
    ids = prompt_tokens(model, prompt)
    device = next(model.parameters()).device
    n = cfg.n_samples
    tokens = ids.to(device)[None].expand(n, -1).contiguous()
    positions = _Positions(n)
    hooks = list(fwd_hooks(positions) if callable(fwd_hooks) else fwd_hooks)
    step_fn: Callable[[Tensor], Tensor]
    if _use_hf(model, hooks, cfg.backend):
        step_fn = _HFDecoder(model, hooks, positions)
        context = contextlib.nullcontext()
    else:
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, n)
        hooks = list(fwd_hooks(cache) if callable(fwd_hooks) else fwd_hooks)
        step_fn = lambda t: model(t, past_kv_cache=cache, attention_mask=torch.ones_like(t))[:, -1]  # noqa: E731
        context = model.hooks(fwd_hooks=hooks)
    gen = torch.Generator(device=device).manual_seed(int(cfg.seed))
    eos = getattr(model.tokenizer, "eos_token_id", None)
    out = torch.full((n, cfg.max_new_tokens), eos if eos is not None else 0, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    lengths = [cfg.max_new_tokens] * n
    with torch_threads(cfg.threads), torch.inference_mode(), context:
        try:
            out = _sample_loop(step_fn, tokens, cfg, gen, eos, out, done, lengths)
        finally:
            if isinstance(step_fn, _HFDecoder):
                step_fn.close()
    out = out.cpu()
    texts = model.tokenizer.batch_decode([out[j, : lengths[j]].tolist() for j in range(n)], skip_special_tokens=True)
    text = prompt if isinstance(prompt, str) else model.tokenizer.decode(ids.tolist())
    return Generation(prompt=text, prompt_ids=ids.cpu(), ids=out, lengths=lengths, texts=texts)


def _sample_loop(step_fn, tokens: Tensor, cfg: GenerationConfig, gen: torch.Generator, eos: int | None, out: Tensor,
                 done: Tensor, lengths: list[int]) -> Tensor:
    """Prompt pass, then sample / feed back one token at a time; fills ``out`` and ``lengths`` (returns ``out``,
    cut short when every sample stopped)."""
    logits = step_fn(tokens)
    for step in range(cfg.max_new_tokens):
        nxt = _sample(logits, cfg, gen)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        out[:, step] = nxt
        if cfg.stop_at_eos and eos is not None:
            newly = (nxt == eos) & ~done
            for j in newly.nonzero().flatten().tolist():
                lengths[j] = step
            done |= newly
            if bool(done.all()):
                out = out[:, : step + 1]
                break
        if step + 1 < cfg.max_new_tokens:
            logits = step_fn(nxt[:, None])
    return out
