"""Monitoring a trait by projection (docs/methods.md §12, §16).

    from workbench.persona.monitor import monitor_trait, projection, token_projections
    res = monitor_trait(model, pv, "pirate", judge, layer=15, n_questions=5)
    res["r"]                      # Pearson r between the last prompt token's projection and the judged trait

The projection of an activation ``a`` onto a persona vector ``v`` is ``a . v / ||v||``. Before the model writes a
word, the last prompt token's projection should already predict how strongly the response will express the trait.
:func:`monitor_trait` builds prompts whose system prompts range from discouraging to encouraging the trait (the
trait file's 5 negative prompts, no system prompt, and its 5 positive prompts) over the evaluation questions,
samples ``n_samples`` responses per prompt, judges them, and correlates each prompt's projection with the mean
judged score of its responses (Pearson r over the prompts: 11 system prompts x ``n_questions``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike
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


def _resids(model: ModelLike, ids: Tensor, layers: Sequence[int]) -> list[Tensor]:
    names = [f"blocks.{int(L)}.hook_resid_post" for L in layers]
    device = next(model.parameters()).device
    with torch.inference_mode():
        _, cache = model.run_with_cache(ids[None].to(device), names_filter=lambda n: n in names, return_type=None,
                                        stop_at_layer=max(int(L) for L in layers) + 1)
    return [cache[n][0].float().cpu() for n in names]


def _resid(model: ModelLike, ids: Tensor, layer: int) -> Tensor:
    return _resids(model, ids, [layer])[0]


def token_projections(model: ModelLike, text: str, vector: Tensor, layer: int) -> tuple[list[str], Tensor]:
    """(token strings, projection per token [n]) of ``text`` at ``blocks.layer.hook_resid_post``."""
    ids = prompt_tokens(model, text)
    return [model.tokenizer.decode([int(i)]) for i in ids], projection(_resid(model, ids, layer), vector)


def prompt_projection(model: ModelLike, prompt: str, vector: Tensor, layer: int) -> float:
    """The last prompt token's projection."""
    return float(projection(_resid(model, prompt_tokens(model, prompt), layer)[-1], vector))


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = torch.tensor(list(a), dtype=torch.float64), torch.tensor(list(b), dtype=torch.float64)
    if len(x) < 3 or float(x.std()) == 0 or float(y.std()) == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def monitor_trait(model: ModelLike, pv, trait: Trait | str, judge, layer: int, *, n_questions: int = 5,
                  n_samples: int = 4,
                  max_new_tokens: int = 40, seed: int = 2, layers: Sequence[int] | None = None,
                  first_question: int = 0, progress: bool = True) -> dict:
    """Projection vs judged trait over prompts from discouraging to encouraging the trait (module docstring):
    ``{"r", "layer", "n", "n_samples", "levels", "r_by_layer", "points": [{"system", "level", "question",
    "projection", "trait", "coherence"}...]}``. ``level`` is -1 (a negative prompt), 0 (none) or +1 (a positive
    prompt); ``levels`` gives each level's mean projection and trait. ``layers``: also the r at these layers, from
    the same responses (one forward per prompt; the projection there is on the vector of that layer).
    ``first_question``: start at this evaluation question (a fresh set for checking a layer chosen on another)."""
    from workbench.data.chat import chat_prompt

    trait = load_trait(trait)
    per_layer = hasattr(pv, "vectors")
    if not per_layer and layers:
        raise ValueError("layers= needs a PersonaVector (one vector per layer), not a single vector")
    all_layers = sorted({int(layer), *(int(L) for L in (layers or ()))})
    vectors = {L: (pv.vectors[L] if per_layer else torch.as_tensor(pv)) for L in all_layers}
    systems = ([(p.negative, -1) for p in trait.pairs] + [(None, 0)] + [(p.positive, 1) for p in trait.pairs])
    questions = trait.eval_questions[first_question:first_question + n_questions]
    if not questions:
        raise ValueError(f"no evaluation questions from index {first_question}: the trait has "
                         f"{len(trait.eval_questions)}")
    points = []
    jobs = [(s, q) for s in systems for q in questions]
    for k, ((system, level), q) in enumerate(tqdm(jobs, desc=f"monitor {trait.name}", disable=not progress)):
        prompt = chat_prompt(model, q, system=system)
        with torch_threads(1):
            acts = _resids(model, prompt_tokens(model, prompt), all_layers)
        proj = {L: float(projection(a[-1], vectors[L])) for L, a in zip(all_layers, acts)}
        gen = generate(model, prompt, GenerationConfig(max_new_tokens=max_new_tokens, n_samples=n_samples,
                                                       seed=seed * 100003 + k))
        scores = [judge(q, t.strip()) for t in gen.texts]
        points.append({"system": system, "level": level, "question": q, "projection": proj[int(layer)],
                       "projections": proj, "trait": sum(s.trait for s in scores) / len(scores),
                       "coherence": sum(s.coherence for s in scores) / len(scores)})
    traits = [p["trait"] for p in points]
    levels = {}
    for lev in (-1, 0, 1):
        sel = [p for p in points if p["level"] == lev]
        levels[lev] = {"n": len(sel), "projection": sum(p["projection"] for p in sel) / len(sel),
                       "trait": sum(p["trait"] for p in sel) / len(sel)}
    return {"trait": trait.name, "layer": int(layer), "n": len(points), "n_samples": int(n_samples),
            "r": pearson([p["projection"] for p in points], traits), "levels": levels,
            "r_by_layer": {L: pearson([p["projections"][L] for p in points], traits) for L in all_layers},
            "points": points}
