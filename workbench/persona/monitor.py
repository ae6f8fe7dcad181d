"""Monitoring a trait by projection (docs/methods.md §12, §16).

    from workbench.persona.monitor import monitor_trait, projection, token_projections
    res = monitor_trait(model, pv, "pirate", judge, layer=15, n_questions=5)
    res["r"]                      # Pearson r between the last prompt token's projection and the judged trait

The projection of an activation ``a`` onto a persona vector ``v`` is ``a . v / ||v||``. Before the model writes a
word, the last prompt token's projection should already predict how strongly the response will express the trait.
:func:`monitor_trait` builds prompts whose system prompts range from discouraging to encouraging the trait (the
trait file's 5 negative prompts, no system prompt, and its 5 positive prompts) over the evaluation questions,
samples responses, judges them, and correlates each prompt's projection with the mean judged score of its
responses (Pearson r).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.hardware import torch_threads
from workbench.intervene.generation import GenerationConfig, generate, prompt_tokens
from workbench.persona.traits import Trait, load_trait

__all__ = ["monitor_trait", "pearson", "projection", "prompt_projection", "token_projections"]


def projection(acts: Tensor, vector: Tensor) -> Tensor:
    """``acts . v / ||v||`` over the last axis of ``acts`` [..., d]."""
    v = vector.to(torch.float32)
    n = float(v.norm())
    if n == 0:
        raise ValueError("the vector is zero: nothing to project on")
    if acts.shape[-1] != v.shape[-1]:
        raise ValueError(f"d_model mismatch: activations have {acts.shape[-1]}, the vector {v.shape[-1]}")
    return acts.to(torch.float32) @ v / n


def _resid(model, ids: Tensor, layer: int) -> Tensor:
    name = f"blocks.{int(layer)}.hook_resid_post"
    device = next(model.parameters()).device
    with torch.inference_mode():
        _, cache = model.run_with_cache(ids[None].to(device), names_filter=lambda n: n == name, return_type=None,
                                        stop_at_layer=int(layer) + 1)
    return cache[name][0].float().cpu()


def token_projections(model, text: str, vector: Tensor, layer: int) -> tuple[list[str], Tensor]:
    """(token strings, projection per token [n]) of ``text`` at ``blocks.layer.hook_resid_post``."""
    ids = prompt_tokens(model, text)
    return [model.tokenizer.decode([int(i)]) for i in ids], projection(_resid(model, ids, layer), vector)


def prompt_projection(model, prompt: str, vector: Tensor, layer: int) -> float:
    """The last prompt token's projection."""
    return float(projection(_resid(model, prompt_tokens(model, prompt), layer)[-1], vector))


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = torch.tensor(list(a), dtype=torch.float64), torch.tensor(list(b), dtype=torch.float64)
    if len(x) < 3 or float(x.std()) == 0 or float(y.std()) == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def monitor_trait(model, pv, trait: Trait | str, judge, layer: int, *, n_questions: int = 5, n_samples: int = 2,
                  max_new_tokens: int = 40, seed: int = 2, progress: bool = True) -> dict:
    """Projection vs judged trait over prompts from discouraging to encouraging the trait (module docstring):
    ``{"r", "layer", "points": [{"system", "question", "projection", "trait", "coherence"}...]}``."""
    from workbench.data.chat import chat_prompt

    trait = load_trait(trait)
    vector = pv.vectors[int(layer)] if hasattr(pv, "vectors") else torch.as_tensor(pv)
    systems = [p.negative for p in trait.pairs] + [None] + [p.positive for p in trait.pairs]
    questions = trait.eval_questions[:n_questions]
    points = []
    jobs = [(s, q) for s in systems for q in questions]
    for k, (system, q) in enumerate(tqdm(jobs, desc=f"monitor {trait.name}", disable=not progress)):
        prompt = chat_prompt(model, q, system=system)
        with torch_threads(1):
            proj = prompt_projection(model, prompt, vector, layer)
        gen = generate(model, prompt, GenerationConfig(max_new_tokens=max_new_tokens, n_samples=n_samples,
                                                       seed=seed * 100003 + k))
        scores = [judge(q, t.strip()) for t in gen.texts]
        points.append({"system": system, "question": q, "projection": proj,
                       "trait": sum(s.trait for s in scores) / len(scores),
                       "coherence": sum(s.coherence for s in scores) / len(scores)})
    return {"trait": trait.name, "layer": int(layer), "n": len(points),
            "r": pearson([p["projection"] for p in points], [p["trait"] for p in points]), "points": points}
