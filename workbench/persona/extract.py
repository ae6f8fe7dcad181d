"""Persona-vector extraction as the persona-vector paper does it (docs/methods.md §12, §16).

    from workbench.persona.extract import ExtractConfig, extract_persona_vector
    pv = extract_persona_vector(model, "pirate", judge, ExtractConfig(n_questions=6, n_samples=3))
    pv.vectors            # [n_layers, d_model]: mean(positive responses) - mean(negative responses) per layer
    pv.save("pirate.safetensors"); PersonaVector.load("pirate.safetensors")

1. For each of the trait's contrastive system-prompt pairs and each *extraction* question, sample ``n_samples``
   responses under the positive and under the negative system prompt (the same seed for both, so sample ``j`` of
   each forms the pair ``j``). ``chat=True`` uses the tokenizer's chat template (SmolLM2-Instruct);
   ``chat=False`` is the tracing paper's base-model variant: an *instructed continuation*, the system prompt as an
   instruction followed by ``Question: ...\\nAnswer:``, cut at the first blank line or next ``Question:``.
2. Judge every response; keep a pair when positive trait >= 50, negative trait < 50 and both coherences >= 50
   (:func:`filter_pairs`).
3. Run each kept response (prompt + response tokens, teacher-forced) and average the residual stream
   ``blocks.L.hook_resid_post`` over the response tokens only (:func:`response_means`); the vector at layer L is the
   mean over positive responses of these averages minus the same over negative ones (:func:`mean_difference`).
   Layer L is block L's output (the paper's hook on the output of layer L - 1 in 1-based numbering): steering at
   layer L adds to the same hook.

The control vector for steering (``shuffled``) repeats step 3 with the labels of exactly half of the kept pairs
swapped (seeded; :func:`balanced_swaps`). Each pair contributes its difference ``d_i = pos_i - neg_i`` with sign +1
or -1, and the signs sum to zero, so a component shared by every pair (the trait) cancels exactly and only the
pair-to-pair variation remains; with an odd count one pair is left out. (Swapping each pair with probability 0.5
leaves ``(n_unswapped - n_swapped) / n`` of the trait direction, which the rescaling to the vector's norm in
:mod:`workbench.persona.steer` then amplifies.) Its cosine with the vector per layer is in the sidecar
(``shuffled_cos``). Fewer than 2 kept pairs: no control.

Saved as safetensors (``vectors``, ``shuffled``, ``resid_norm``) with a JSON sidecar: model, trait
name/version/file hash, counts generated and kept, the config and every response with its scores.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike
from workbench.core.hardware import torch_threads
from workbench.core.persist import atomic_write_text, load_tensors, save_tensors
from workbench.intervene.generation import GenerationConfig, generate, prompt_tokens
from workbench.persona.judge import JudgeScore
from workbench.persona.traits import Trait, load_trait

__all__ = ["SHUFFLE_METHOD", "ExtractConfig", "PersonaVector", "Response", "balanced_swaps", "build_prompt",
           "extract_persona_vector", "filter_pairs", "generate_responses", "load_persona_vector", "mean_difference",
           "rejudge", "response_means", "shuffled_control", "span_residuals", "stored_responses", "vector_from_responses"]

SHUFFLE_METHOD = "balanced-v1"  # recorded in the sidecar; caches without it are rebuilt (studies.persona)


@dataclass(frozen=True)
class ExtractConfig:
    """How many prompt pairs, questions and samples; generation length; the filter's thresholds."""

    n_pairs: int = 5
    n_questions: int = 20
    n_samples: int = 4
    max_new_tokens: int = 48
    temperature: float = 0.7
    seed: int = 0
    chat: bool = True
    trait_threshold: float = 50.0
    coherence_threshold: float = 50.0
    split: str = "extract"
    threads: int | None = 1  # torch threads (see workbench.intervene.generation: 1 is faster on a shared CPU)

    def __post_init__(self) -> None:
        if not 1 <= self.n_pairs <= 5 or not 1 <= self.n_questions <= 20 or self.n_samples < 1:
            raise ValueError(f"n_pairs must be 1-5, n_questions 1-20, n_samples >= 1; got {self.n_pairs}, "
                             f"{self.n_questions}, {self.n_samples}")
        if self.split not in ("extract", "eval"):
            raise ValueError(f"split must be 'extract' or 'eval', got {self.split!r}")


@dataclass
class Response:
    """One sampled response: which pair / question / sample, its polarity, the prompt text and the judged scores."""

    pair: int
    question: str
    sample: int
    positive: bool
    prompt: str
    text: str
    trait: float = float("nan")
    coherence: float = float("nan")


def build_prompt(model: ModelLike, system: str | None, question: str, chat: bool = True) -> str:
    """The prompt text: the chat template (``chat=True``) or an instructed continuation for a base model."""
    if chat:
        from workbench.data.chat import chat_prompt

        return chat_prompt(model, question, system=system)
    head = f"{system}\n\n" if system else ""
    return f"{head}Question: {question}\nAnswer:"


_CUT = re.compile(r"\n\s*\n|\nQuestion:|\nUser:", re.IGNORECASE)


def _clean(text: str, chat: bool) -> str:
    if not chat:
        m = _CUT.search(text)
        text = text[: m.start()] if m else text
    return text.strip()


def generate_responses(model: ModelLike, trait: Trait | str, judge, config: ExtractConfig | None = None, *,
                       progress: bool = True) -> list[Response]:
    """Sample and judge the responses of step 1-2 (module docstring), positive and negative alternating."""
    cfg = config or ExtractConfig()
    trait = load_trait(trait)
    questions = (trait.extract_questions if cfg.split == "extract" else trait.eval_questions)[: cfg.n_questions]
    gcfg: dict[str, Any] = dict(max_new_tokens=cfg.max_new_tokens, n_samples=cfg.n_samples, temperature=cfg.temperature)
    out: list[Response] = []
    jobs = [(i, q) for i in range(cfg.n_pairs) for q in questions]
    for k, (i, q) in enumerate(tqdm(jobs, desc=f"responses {trait.name}", disable=not progress)):
        for positive in (True, False):
            pair = trait.pairs[i]
            prompt = build_prompt(model, pair.positive if positive else pair.negative, q, cfg.chat)
            gen = generate(model, prompt, GenerationConfig(**gcfg, seed=cfg.seed * 100003 + k))
            for j, text in enumerate(gen.texts):
                text = _clean(text, cfg.chat)
                s = judge(q, text)
                out.append(Response(i, q, j, positive, prompt, text, s.trait, s.coherence))
    return out


def filter_pairs(positive: Sequence[JudgeScore], negative: Sequence[JudgeScore], trait_threshold: float = 50.0,
                 coherence_threshold: float = 50.0) -> list[int]:
    """Indices of the (positive, negative) pairs to keep: positive trait >= threshold, negative trait < threshold,
    both coherences >= ``coherence_threshold``."""
    if len(positive) != len(negative):
        raise ValueError(f"{len(positive)} positive scores but {len(negative)} negative ones: pairs must align")
    return [k for k, (p, n) in enumerate(zip(positive, negative))
            if p.trait >= trait_threshold and n.trait < trait_threshold
            and p.coherence >= coherence_threshold and n.coherence >= coherence_threshold]


def response_means(model: ModelLike, prompts: Sequence[str], responses: Sequence[str],
                   layers: Sequence[int] | None = None,
                   *, progress: bool = False) -> Tensor:
    """Per response, the residual stream ``blocks.L.hook_resid_post`` averaged over the response tokens:
    ``[n_responses, n_layers, d_model]`` (float32). The response is tokenised after the prompt's tokens."""
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    out = torch.zeros(len(responses), len(layers), model.cfg.d_model)
    for r, (prompt, resp) in enumerate(tqdm(list(zip(prompts, responses)), desc="activations", disable=not progress)):
        acts = span_residuals(model, prompt, resp, layers,
                              empty_error=f"response {r} is empty: drop it before computing activations")
        for i, L in enumerate(layers):
            out[r, i] = acts[L].float().mean(0).cpu()
    return out


def span_residuals(model: ModelLike, prompt: str, span: str, layers: Sequence[int], *,
                   empty_error: str = "the span has no tokens: drop empty texts first") -> dict[int, Tensor]:
    """The residual stream ``blocks.L.hook_resid_post`` at ``span``'s tokens, tokenised after ``prompt``'s (one
    forward pass, stopped after the deepest layer): ``{L: [n_span_tokens, d_model]}``. ``ValueError(empty_error)``
    if the span has no tokens."""
    p_ids = prompt_tokens(model, prompt)
    s_ids = model.tokenizer(span, add_special_tokens=False)["input_ids"]
    if not s_ids:
        raise ValueError(empty_error)
    names = {f"blocks.{L}.hook_resid_post" for L in layers}
    ids = torch.cat([p_ids, torch.tensor(s_ids)])[None].to(next(model.parameters()).device)
    with torch.inference_mode():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names, return_type=None,
                                        stop_at_layer=max(layers) + 1)
    return {L: cache[f"blocks.{L}.hook_resid_post"][0, len(p_ids):] for L in layers}


def mean_difference(means: Tensor, positive: Sequence[bool] | Tensor) -> Tensor:
    """``mean(means[positive]) - mean(means[~positive])`` over the first axis."""
    mask = torch.as_tensor(positive, dtype=torch.bool)
    if not bool(mask.any()) or bool(mask.all()):
        raise ValueError("need at least one positive and one negative response")
    return means[mask].mean(0) - means[~mask].mean(0)


def balanced_swaps(n_pairs: int, seed: int = 0) -> Tensor:
    """Signs [n_pairs] for the shuffled-label control: exactly ``n_pairs // 2`` pairs swapped (-1), as many kept
    (+1) and, when ``n_pairs`` is odd, one pair left out (0); which ones is a seeded permutation."""
    if n_pairs < 2:
        raise ValueError(f"a balanced label shuffle needs at least 2 pairs, got {n_pairs}")
    order = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(int(seed)))
    signs = torch.zeros(n_pairs)
    half = n_pairs // 2
    signs[order[:half]] = -1.0
    signs[order[half:2 * half]] = 1.0
    return signs


def shuffled_control(pos_means: Tensor, neg_means: Tensor, seed: int = 0) -> Tensor:
    """The shuffled-label vector: the mean difference after swapping the labels of exactly half of the pairs
    (:func:`balanced_swaps`), i.e. ``sum_i s_i (pos_i - neg_i) / n_used``. ``pos_means``/``neg_means``:
    ``[n_pairs, ...]``, row i of each forming pair i."""
    if pos_means.shape != neg_means.shape:
        raise ValueError(f"positive {tuple(pos_means.shape)} and negative {tuple(neg_means.shape)} means must align")
    signs = balanced_swaps(pos_means.shape[0], seed)
    diffs = pos_means - neg_means
    return (signs.view(-1, *[1] * (diffs.ndim - 1)) * diffs).sum(0) / signs.abs().sum()


@dataclass
class PersonaVector:
    """A trait's vectors at every layer of one model, with its provenance (module docstring)."""

    trait: str
    model: str
    vectors: Tensor              # [n_layers, d_model]
    shuffled: Tensor | None = None
    resid_norm: Tensor | None = None  # [n_layers]: mean residual norm over the kept responses' tokens
    meta: dict = field(default_factory=dict)

    def layer(self, layer: int) -> Tensor:
        return self.vectors[int(layer)]

    def hook(self, layer: int) -> str:
        return f"blocks.{int(layer)}.hook_resid_post"

    def save(self, path: str | Path) -> Path:
        path = Path(path).with_suffix(".safetensors")
        tensors = {"vectors": self.vectors}
        if self.shuffled is not None:
            tensors["shuffled"] = self.shuffled
        if self.resid_norm is not None:
            tensors["resid_norm"] = self.resid_norm
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(tensors, path, metadata={"trait": self.trait, "model": self.model})
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"format": "workbench-persona-vector", "format_version": 1, "trait": self.trait, "model": self.model,
             "n_layers": int(self.vectors.shape[0]), "d_model": int(self.vectors.shape[1]), **self.meta},
            indent=1, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PersonaVector":
        path = Path(path).with_suffix(".safetensors")
        t, md = load_tensors(path, "extract the vector again with extract_persona_vector(...).save(path)")
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        for k in ("format", "format_version", "trait", "model", "n_layers", "d_model"):
            meta.pop(k, None)
        return cls(md.get("trait", ""), md.get("model", ""), t["vectors"], t.get("shuffled"), t.get("resid_norm"), meta)


load_persona_vector = PersonaVector.load


def stored_responses(pv: "PersonaVector") -> list[Response]:
    """The judged responses a vector was extracted from, as saved in its sidecar (``meta["responses"]``)."""
    rows = pv.meta.get("responses")
    if not rows:
        raise ValueError("this persona vector has no stored responses (meta['responses']): extract it with "
                         "extract_persona_vector")
    keys = set(Response.__dataclass_fields__)
    return [Response(**{k: v for k, v in r.items() if k in keys}) for r in rows]


def rejudge(responses: Sequence[Response], judge) -> list[Response]:
    """``responses`` with their trait and coherence scored again by ``judge`` (no sampling): a new judge reuses the
    samples a vector was extracted from."""
    out = []
    for r in responses:
        s = judge(r.question, r.text)
        out.append(replace(r, trait=s.trait, coherence=s.coherence))
    return out


def _pair_up(responses: Sequence[Response]) -> list[tuple[Response, Response]]:
    pos = {(r.pair, r.question, r.sample): r for r in responses if r.positive}
    neg = {(r.pair, r.question, r.sample): r for r in responses if not r.positive}
    return [(pos[k], neg[k]) for k in pos if k in neg]


def vector_from_responses(model: ModelLike, trait: Trait, responses: Sequence[Response], config: ExtractConfig, *,
                          progress: bool = False) -> PersonaVector:
    """Steps 2-3 on already judged ``responses`` (also used to re-extract on other checkpoints)."""
    pairs = _pair_up(responses)
    keep = filter_pairs([JudgeScore(p.trait, p.coherence) for p, _ in pairs],
                        [JudgeScore(n.trait, n.coherence) for _, n in pairs],
                        config.trait_threshold, config.coherence_threshold)
    if not keep:
        raise ValueError(f"no pair passed the filter for trait {trait.name!r} ({len(pairs)} pairs): the model does "
                         "not express the trait under its system prompts, or the judge misses it. Try more samples "
                         "(n_samples), a higher temperature, or check the judge with judge_agreement()")
    kept = [pairs[k] for k in keep]
    rs = [p for p, _ in kept] + [n for _, n in kept]
    means = response_means(model, [r.prompt for r in rs], [r.text for r in rs], progress=progress)
    labels = torch.tensor([True] * len(kept) + [False] * len(kept))
    vec = mean_difference(means, labels)
    shuffled = shuffled_control(means[:len(kept)], means[len(kept):], config.seed) if len(kept) >= 2 else None
    cos = (torch.nn.functional.cosine_similarity(vec, shuffled, dim=-1).tolist() if shuffled is not None else None)
    norms = means.norm(dim=-1).mean(0)  # mean over responses of the response-averaged residual norm
    kept_keys = {(p.pair, p.question, p.sample) for p, _ in kept}
    meta = {"trait_version": trait.version, "trait_sha256": trait.sha256, "trait_source": trait.source,
            "pairs_generated": len(pairs), "pairs_kept": len(kept), "config": asdict(config),
            "hook": "blocks.{layer}.hook_resid_post", "shuffle_method": SHUFFLE_METHOD,
            "shuffled_cos": None if cos is None else [round(c, 4) for c in cos],
            "responses": [asdict(r) | {"kept": (r.pair, r.question, r.sample) in kept_keys} for r in responses]}
    name = getattr(model, "workbench_name", model.cfg.model_name)
    return PersonaVector(trait.name, name, vec, shuffled, norms, meta)


def extract_persona_vector(model: ModelLike, trait: Trait | str, judge, config: ExtractConfig | None = None, *,
                           progress: bool = True) -> PersonaVector:
    """Generate, judge, filter and average (module docstring): the trait's vector at every layer of ``model``."""
    cfg = config or ExtractConfig()
    trait = load_trait(trait)
    with torch_threads(cfg.threads):
        responses = generate_responses(model, trait, judge, cfg, progress=progress)
        return vector_from_responses(model, trait, responses, cfg, progress=progress)
