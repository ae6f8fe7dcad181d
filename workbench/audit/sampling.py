"""Batched, seeded sampling of chat replies for the out-of-distribution test. Many different prompts are decoded
together (left-padded, with an attention mask) through the HF causal-LM rebuilt from the TransformerLens weights
(:func:`workbench.data.forward.hf_causal_lm`): one decoding step for 48 prompts costs about what one costs for 4 on
CPU (measured: 48 prompts x 48 tokens in 42 s on one loaded core, 16 prompts in 17 s), where
:func:`workbench.intervene.generation.generate` decodes one prompt (with its samples) per call.

    from workbench.audit.sampling import SampleConfig, sample_replies
    replies = sample_replies(model, ["How do I boil an egg?"], SampleConfig(n_samples=2))   # [[str, str]]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from workbench.core.hardware import torch_threads

__all__ = ["SampleConfig", "sample_replies", "sample_texts"]


@dataclass(frozen=True)
class SampleConfig:
    """``n_samples`` replies per prompt of at most ``max_new_tokens``, sampled at ``temperature``/``top_p``
    (``temperature=0``: greedy, then use ``n_samples=1``), ``batch_size`` sequences decoded together."""

    n_samples: int = 2
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    batch_size: int = 48
    threads: int | None = 1  # one thread is faster than two on a shared 2-core machine (measured 17 s vs 97 s)
    system: str | None = None

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"n_samples, max_new_tokens and batch_size must be >= 1, got {self.n_samples}, "
                             f"{self.max_new_tokens}, {self.batch_size}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")


def sample_replies(model, prompts: Sequence[str], config: SampleConfig | None = None, *,
                   progress: bool = False) -> list[list[str]]:
    """``config.n_samples`` replies to each user prompt (chat template applied), in prompt order. Seeded: batch
    ``b`` draws from ``torch.manual_seed(seed + b)``, so the same call gives the same replies."""
    from workbench.data.chat import chat_prompt

    cfg = config or SampleConfig()
    if not prompts:
        return []
    rows = [p for p in prompts for _ in range(cfg.n_samples)]
    out = sample_texts(model, [chat_prompt(model, p, system=cfg.system) for p in rows], cfg, progress=progress)
    return [out[i * cfg.n_samples:(i + 1) * cfg.n_samples] for i in range(len(prompts))]


def sample_texts(model, texts: Sequence[str], config: SampleConfig | None = None, *,
                 progress: bool = False) -> list[str]:
    """One sampled continuation (stripped) per prompt text, used as given (no template applied; ``n_samples`` and
    ``system`` are not read), ``config.batch_size`` texts decoded together, left-padded. Batch ``b`` draws from
    ``torch.manual_seed(seed + b)``."""
    from workbench.data.forward import hf_causal_lm

    cfg = config or SampleConfig()
    tok = model.tokenizer
    hf = hf_causal_lm(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    side = tok.padding_side
    out: list[str] = []
    starts = range(0, len(texts), cfg.batch_size)
    try:
        tok.padding_side = "left"
        with torch_threads(cfg.threads), torch.inference_mode():
            for b, start in enumerate(tqdm(starts, desc="sample", disable=not progress)):
                enc = tok(list(texts[start:start + cfg.batch_size]), add_special_tokens=False, return_tensors="pt",
                          padding=True)
                torch.manual_seed(cfg.seed + b)
                kw = (dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p) if cfg.temperature > 0
                      else dict(do_sample=False))
                ids = hf.generate(**enc, max_new_tokens=cfg.max_new_tokens, pad_token_id=pad, **kw)
                out += tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return [r.strip() for r in out]
