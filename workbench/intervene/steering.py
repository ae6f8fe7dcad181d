"""Steering a model: clamping an SAE feature (Scaling Monosemanticity), adding a direction, and the
diff-of-means steering-vector baseline; with the measures that say whether steering worked and what it cost.

    from workbench.intervene.steering import FeatureClamp, steering_methods, diff_of_means, ConceptCheck, sweep
    clamp = FeatureClamp(sae, feature=123, value=10 * max_acts[123], hook="blocks.9.hook_resid_post")
    out = steered_generate(model, "I went on holiday to", clamp, GenerationConfig(n_samples=4))

**Clamping** (docs/methods.md §11). Write ``x = SAE(x) + err(x)`` with ``SAE(x) = b_dec + sum_j f_j(x) W_dec[j]``.
Replacing ``f_i(x)`` by a value ``v`` and adding the same error back gives ``x' = x + (v - f_i(x)) W_dec[i]``:
only the coordinate along feature i's decoder direction changes, every other feature's contribution and the
reconstruction error are kept (:func:`clamp_feature`). The value is ``c x`` the feature's max activation over the
training data (:func:`max_activations`, or ``FeatureResults.max_activation`` from the analysis pass). It is applied
at every position, prompt and generated tokens alike, except the first ``skip_first`` (default 1): the BOS /
first token is the attention sink, whose residual norm is an order of magnitude larger than other tokens' and
which no SAE saw in training (stores exclude it).

**Additive steering** (:class:`AddVector`): ``x' = x + s u`` at the same positions, for a unit direction ``u``:
the feature's decoder direction, or a diff-of-means vector (:func:`diff_of_means`: mean activation over the
completion tokens of positive examples minus that of negative ones, as persona vectors do, docs/methods.md §12).

**Matched strengths.** Strength ``c`` means the same thing for every method: an added vector of norm
``c x max_i x ||W_dec[i]||`` (what clamping feature i at ``c x max_i`` adds where the feature was off). So at one
``c`` the clamp, the decoder direction and the diff-of-means vector move the residual stream equally far
(:func:`steering_methods`).

**Finding a feature.** :func:`contrast_completions` ranks features by how much more they fire on the completions
of positive examples than of negative ones; :func:`screen_features` clamps a few candidates on screening prompts and
ranks them by the concept rate they produce (fluency-checked).

**Measures.**

- *Concept rate*: the fraction of generations a :class:`ConceptCheck` (a regular expression) matches.
- *Perplexity cost*, two ways: ``neutral_ppl`` is the steered model's perplexity on held-out Wikipedia text
  (teacher-forced, the intervention applied at every position), reported as a ratio to the unsteered model's;
  ``gen_ppl`` is the *unsteered* model's perplexity of the steered generations (how fluent the output is, judged
  by the clean model).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike, SAELike, SAESource, StoreLike
from workbench.analysis.features import resolve_hook, sae_fingerprint
from workbench.analysis.search import ContrastHit, hook_activations
from workbench.core.hardware import torch_threads
from workbench.core.persist import load_tensors, save_tensors
from workbench.data.corpus import CorpusSpec, packed_contexts
from workbench.data.hooks import sae_hook
from workbench.intervene.generation import Generation, GenerationConfig, cache_offset, generate, prompt_tokens
from workbench.sae.interop import as_sae

__all__ = [
    "AddVector",
    "ConceptCheck",
    "FeatureClamp",
    "Steering",
    "SteeringExample",
    "SweepRow",
    "add_vector",
    "best_within_cost",
    "clamp_feature",
    "completion_features",
    "concept_rate",
    "contrast_completions",
    "diff_of_means",
    "feature_direction",
    "generation_nll",
    "heldout_tokens",
    "max_activations",
    "mean_activation",
    "screen_features",
    "steered_generate",
    "steered_loss",
    "steering_methods",
    "sweep",
]


# ----------------------------------------------------------------------------------------------------------------
# Interventions on activations (pure functions)
# ----------------------------------------------------------------------------------------------------------------


def _check_feature(sae: SAELike, feature) -> int:
    d_sae = int(sae.cfg.d_sae)
    try:
        i = int(feature)
    except (TypeError, ValueError):
        raise ValueError(f"feature must be an integer index, got {feature!r}") from None
    if i != feature or not 0 <= i < d_sae:
        raise ValueError(f"unknown feature index {feature!r}: the SAE has features 0..{d_sae - 1}")
    return i


def _check_d_model(x: Tensor, d: int, what: str) -> None:
    if x.shape[-1] != d:
        raise ValueError(f"d_model mismatch: the activations have last dimension {x.shape[-1]} but {what} has {d}: "
                         f"use the SAE / vector built for this model and hook")


def clamp_feature(x: Tensor, sae: SAELike, feature: int, value: float | Tensor) -> Tensor:
    """``x`` [..., d_in] with feature ``feature``'s activation set to ``value``, the SAE error term kept:
    ``x + (value - f_i(x)) W_dec[i]``."""
    i = _check_feature(sae, feature)
    _check_d_model(x, int(sae.cfg.d_in), "the SAE (d_in)")
    with torch.no_grad():
        f_i = sae.encode(x.to(sae.device, sae.dtype))[..., i].to(torch.float32)
        delta = (torch.as_tensor(value, dtype=torch.float32, device=f_i.device) - f_i)[..., None]
        step = delta * sae.W_dec[i].to(torch.float32)
    return (x.to(torch.float32) + step.to(x.device)).to(x.dtype)


def add_vector(x: Tensor, vector: Tensor) -> Tensor:
    """``x + vector`` at every position of ``x`` [..., d]."""
    _check_d_model(x, int(vector.shape[-1]), "the steering vector")
    return (x.to(torch.float32) + vector.to(x.device, torch.float32)).to(x.dtype)


def feature_direction(sae: SAESource, feature: int) -> Tensor:
    """Feature ``feature``'s decoder row W_dec[i] [d_in] (float32, not normalised)."""
    sae = as_sae(sae)
    return sae.W_dec[_check_feature(sae, feature)].detach().to(torch.float32).cpu()


# ----------------------------------------------------------------------------------------------------------------
# Interventions as hooks
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Steering:
    """An intervention on one hook's activations, applied at absolute positions ``>= skip_first``."""

    hook: str
    skip_first: int = 1
    label: str = ""

    def apply(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def hooks(self, cache=None) -> list[tuple[str, Callable]]:
        """TransformerLens forward hooks; with a key-value ``cache`` positions are counted from the prompt's start."""
        skip = int(self.skip_first)

        def fn(act: Tensor, hook) -> Tensor:
            start = cache_offset(cache, act.shape[1])
            lo = max(0, skip - start)
            if lo >= act.shape[1]:
                return act
            out = act.clone()
            out[:, lo:] = self.apply(act[:, lo:])
            return out

        return [(self.hook, fn)]


@dataclass(eq=False)
class FeatureClamp(Steering):
    """Clamp one SAE feature to ``value`` (absolute, in activation units) at every steered position."""

    sae: Any = field(default=None, repr=False)  # an SAESource; the workbench SAE it names after __post_init__
    feature: int = 0
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.sae is None:
            raise ValueError("FeatureClamp needs sae=")
        self.sae = as_sae(self.sae)
        self.feature = _check_feature(self.sae, self.feature)
        hook = getattr(getattr(self.sae, "metadata", None), "hook_name", None)
        if hook and self.hook and hook != self.hook:
            raise ValueError(f"the SAE was trained on {hook!r} but the clamp targets {self.hook!r}")

    def apply(self, x: Tensor) -> Tensor:
        return clamp_feature(x, self.sae, self.feature, self.value)


@dataclass(eq=False)
class AddVector(Steering):
    """Add ``vector`` [d_model] at every steered position."""

    vector: Tensor | None = field(default=None, repr=False)  # required: None only as the dataclass default

    def __post_init__(self) -> None:
        if self.vector is None or self.vector.ndim != 1:
            raise ValueError("AddVector needs a 1-d vector= of size d_model")

    def apply(self, x: Tensor) -> Tensor:
        assert self.vector is not None  # __post_init__ refused None
        return add_vector(x, self.vector)


def _hooks_of(steering: Steering | None, cache=None) -> list:
    return [] if steering is None else steering.hooks(cache)


def steered_generate(model: ModelLike, prompt, steering: Steering | None, config: GenerationConfig | None = None
                     ) -> Generation:
    """:func:`workbench.intervene.generation.generate` with ``steering`` active on the prompt and every generated token."""
    if steering is not None and steering.hook not in model.hook_dict:
        raise ValueError(f"unknown hook {steering.hook!r} for this model")
    return generate(model, prompt, config, fwd_hooks=lambda cache: _hooks_of(steering, cache))


# ----------------------------------------------------------------------------------------------------------------
# Max activations and diff-of-means vectors
# ----------------------------------------------------------------------------------------------------------------


def max_activations(store: StoreLike, sae: SAESource, *, hook: str | None = None, max_tokens: int | None = None,
                    batch_size: int = 4096,
                    cache: str | Path | None = None, progress: bool = False) -> Tensor:
    """Each feature's max activation [d_sae] over the store (BOS excluded, as in training), in one pass.

    The analysis pass gives the same numbers (``FeatureResults.max_activation``) when it has run over the store.
    ``max_tokens`` stops early (the first tokens of the store). ``cache``: a folder where the result is saved
    (safetensors, keyed by the SAE's fingerprint, the store and ``max_tokens``) and reused.
    """
    sae = as_sae(sae)
    hook = resolve_hook(store, sae, hook)
    if store.d_in(hook) != sae.cfg.d_in:
        raise ValueError(f"d_model mismatch: the store's {hook!r} has d_model={store.d_in(hook)} but the SAE takes "
                         f"d_in={sae.cfg.d_in}")
    total = store.n_rows() if max_tokens is None else min(int(max_tokens), store.n_rows())
    if total <= 0:
        raise ValueError("max_tokens must be > 0 and the store must hold tokens")
    path = None
    if cache is not None:
        key = json.dumps({"sae": sae_fingerprint(sae), "store": str(Path(store.path).resolve()),
                          "created": store.manifest.get("created"), "hook": hook, "tokens": total}, sort_keys=True)
        path = Path(cache) / f"max_activations-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
        if path.exists():
            try:
                return load_tensors(path, "")[0]["max"]
            except (ValueError, KeyError):
                pass  # corrupt or foreign: compute again and overwrite
    mx = torch.zeros(int(sae.cfg.d_sae), dtype=torch.float32)
    bar = tqdm(total=total, unit="tok", desc="max activations", disable=not progress)
    with torch.no_grad():
        for batch in store.iter_batches(batch_size, hook=hook, shuffle=False, drop_last=False, max_tokens=total):
            f = sae.encode(batch.to(sae.device, sae.dtype)).to(torch.float32)
            mx = torch.maximum(mx, f.max(0).values.cpu())
            bar.update(batch.shape[0])
    bar.close()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors({"max": mx}, path, metadata={"key": key})
    return mx


@dataclass(frozen=True)
class SteeringExample:
    """A prompt and a completion; a diff-of-means vector averages activations over the completion's tokens."""

    prompt: str
    completion: str

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def mean_activation(model: ModelLike, hook: str, examples: Sequence[SteeringExample]) -> Tensor:
    """Mean activation at ``hook`` [d_model] over the completion tokens of ``examples`` (each token weighs the same;
    the first token of the text is never included)."""

    if not examples:
        raise ValueError("no examples: give at least one SteeringExample")
    total: Tensor | None = None
    count = 0
    for ex in examples:
        if not ex.completion:
            raise ValueError(f"example with prompt {ex.prompt[:40]!r} has an empty completion")
        n_prompt = len(prompt_tokens(model, ex.prompt)) if ex.prompt else 1
        ids = prompt_tokens(model, ex.text)
        lo = max(1, n_prompt)
        if lo >= len(ids):
            raise ValueError(f"the completion {ex.completion[:40]!r} adds no token after its prompt")
        x = hook_activations(model, ids[None], hook)[0, lo:].to(torch.float32).cpu()
        total = x.sum(0) if total is None else total + x.sum(0)
        count += x.shape[0]
    assert total is not None  # examples is not empty
    return total / count


def completion_features(model: ModelLike, sae: SAESource, examples: Sequence[SteeringExample],
                        hook: str | None = None) -> Tensor:
    """SAE feature activations [n_tokens, d_sae] on the completion tokens of ``examples`` (all examples stacked)."""
    sae = as_sae(sae, model=model)
    hook = sae_hook(sae, hook)
    if not examples:
        raise ValueError("no examples: give at least one SteeringExample")
    out = []
    for ex in examples:
        lo = max(1, len(prompt_tokens(model, ex.prompt)) if ex.prompt else 1)
        ids = prompt_tokens(model, ex.text)
        if lo >= len(ids):
            raise ValueError(f"the completion {ex.completion[:40]!r} adds no token after its prompt")
        x = hook_activations(model, ids[None], hook)[0, lo:]
        _check_d_model(x, int(sae.cfg.d_in), "the SAE (d_in)")
        with torch.no_grad():
            out.append(sae.encode(x.to(sae.device, sae.dtype)).to(torch.float32).cpu())
    return torch.cat(out)


def contrast_completions(model: ModelLike, sae: SAESource, positive: Sequence[SteeringExample],
                         negative: Sequence[SteeringExample], *,
                         by: str = "score", max_activations: Tensor | None = None, top_n: int = 10,
                         hook: str | None = None) -> list:
    """Features more active on the completions of ``positive`` than on those of ``negative`` (prompt tokens left
    out, unlike :func:`workbench.analysis.search.contrast_features`, which takes whole texts), every completion token a
    sample. ``by``: ``"score"`` (difference of means over the pooled standard deviation, Cohen's d), ``"diff"``
    (difference of means) or ``"relative"`` (difference divided by the feature's max activation over the training
    data: needs ``max_activations``). Returns ``workbench.analysis.search.ContrastHit``s, best first."""

    sae = as_sae(sae, model=model)
    if by not in ("score", "diff", "relative"):
        raise ValueError(f"by must be 'score', 'diff' or 'relative', got {by!r}")
    if by == "relative" and max_activations is None:
        raise ValueError("by='relative' needs max_activations= (each feature's max over the training data)")
    fa, fb = completion_features(model, sae, positive, hook), completion_features(model, sae, negative, hook)
    ma, mb = fa.mean(0), fb.mean(0)
    diff = ma - mb
    score = diff / ((fa.var(0, unbiased=False) + fb.var(0, unbiased=False)) / 2).sqrt().clamp_min(1e-8)
    score = torch.where(diff == 0, torch.zeros_like(score), score)
    key = score if by == "score" else diff
    if by == "relative":
        mx = torch.as_tensor(max_activations, dtype=torch.float32)
        if mx.shape != diff.shape:
            raise ValueError(f"max_activations has shape {tuple(mx.shape)}, the SAE has d_sae={diff.numel()}")
        key = torch.where(mx > 0, diff / mx.clamp_min(1e-12), torch.full_like(diff, float("-inf")))
    top = torch.topk(key, min(int(top_n), key.numel())).indices.tolist()
    pa, pb = (fa > 0).float().mean(0), (fb > 0).float().mean(0)
    return [ContrastHit(feature=i, mean_a=float(ma[i]), mean_b=float(mb[i]), diff=float(diff[i]), score=float(score[i]),
                        freq_a=float(pa[i]), freq_b=float(pb[i])) for i in top if diff[i] > 0]


def diff_of_means(model: ModelLike, hook: str, positive: Sequence[SteeringExample], negative: Sequence[SteeringExample]
                  ) -> Tensor:
    """The steering vector mean(positive completions) - mean(negative completions) at ``hook`` [d_model]."""
    if hook not in model.hook_dict:
        raise ValueError(f"unknown hook {hook!r} for this model")
    return mean_activation(model, hook, positive) - mean_activation(model, hook, negative)


def steering_methods(sae: SAESource, feature: int, max_activation: float, hook: str | None = None,
                     vectors: dict[str, Tensor] | None = None, *, skip_first: int = 1
                     ) -> dict[str, Callable[[float], Steering]]:
    """Builders ``strength c -> Steering`` at matched strengths (module docstring): ``"clamp"`` (feature to
    ``c x max``), ``"add feature"`` (``c x max x W_dec[i]``) and one per named vector (its unit direction scaled to
    the same norm ``c x max x ||W_dec[i]||``)."""
    sae = as_sae(sae)
    i = _check_feature(sae, feature)
    hook = sae_hook(sae, hook)
    mx = float(max_activation)
    if not math.isfinite(mx) or mx <= 0:
        raise ValueError(f"feature {i} has max activation {max_activation}: it never fires, so c x max is 0; "
                         "pick an alive feature")
    w = feature_direction(sae, i)
    unit_norm = mx * float(w.norm())
    methods: dict[str, Callable[[float], Steering]] = {
        "clamp": lambda c: FeatureClamp(hook=hook, skip_first=skip_first, label=f"clamp F{i} {c:+g}x",
                                        sae=sae, feature=i, value=c * mx),
        "add feature": lambda c: AddVector(hook=hook, skip_first=skip_first, label=f"add F{i} {c:+g}x",
                                           vector=c * mx * w),
    }
    for name, v in (vectors or {}).items():
        v = v.detach().to(torch.float32).cpu()
        _check_d_model(v, int(sae.cfg.d_in), "the SAE (d_in)")
        if float(v.norm()) == 0:
            raise ValueError(f"steering vector {name!r} is zero")
        u = v / v.norm()
        methods[name] = (lambda u_, n_: lambda c: AddVector(hook=hook, skip_first=skip_first, label=f"{n_} {c:+g}x",
                                                            vector=c * unit_norm * u_))(u, name)
    return methods


# ----------------------------------------------------------------------------------------------------------------
# Measures
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptCheck:
    """Whether a text shows a concept: a case-insensitive regular expression search."""

    name: str
    pattern: str

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise ValueError(f"ConceptCheck {self.name!r}: bad regular expression {self.pattern!r}: {err}") from None

    def __call__(self, text: str) -> bool:
        return re.search(self.pattern, text, flags=re.IGNORECASE) is not None

    def rate(self, texts: Iterable[str]) -> float:
        return concept_rate(texts, self)


def concept_rate(texts: Iterable[str], check: ConceptCheck) -> float:
    """The fraction of ``texts`` that ``check`` matches."""
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to check")
    return sum(map(check, texts)) / len(texts)


def heldout_tokens(tokenizer, n_contexts: int = 8, context_size: int = 64, language: str = "en") -> Tensor:
    """``[n_contexts, context_size]`` token ids of held-out embedded Wikipedia (BOS first): neutral text for the
    perplexity cost of steering, never seen by the SAE."""

    spec = CorpusSpec(source="wiki", languages=(language,), split="heldout")
    batches = packed_contexts(spec, tokenizer, n_contexts * context_size, context_size=context_size)
    return torch.cat([torch.as_tensor(b.tokens, dtype=torch.long) for b in batches])[:n_contexts]


def steered_loss(model: ModelLike, tokens: Tensor, steering: Steering | None = None, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy of ``tokens`` [batch, seq] with ``steering`` applied (teacher forcing); the
    prediction made at position 0 (from BOS alone) is left out."""
    if tokens.ndim != 2 or tokens.shape[1] < 3:
        raise ValueError(f"tokens must be [batch, seq >= 3], got shape {tuple(tokens.shape)}")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode(), model.hooks(fwd_hooks=_hooks_of(steering)):
        for lo in range(0, tokens.shape[0], batch_size):
            t = tokens[lo:lo + batch_size].to(device)
            loss = model(t, return_type="loss", loss_per_token=True)[:, 1:]  # [b, seq - 1]
            total += float(loss.sum())
            count += loss.numel()
    return total / count


def generation_nll(model: ModelLike, generation: Generation) -> Tensor:
    """The unsteered model's mean negative log-likelihood [n_samples] of each generated continuation given the
    prompt (NaN for an empty one)."""
    device = next(model.parameters()).device
    out = torch.full((len(generation.lengths),), float("nan"))
    p = generation.prompt_ids.to(device)
    with torch.inference_mode():
        for j, n in enumerate(generation.lengths):
            if n == 0:
                continue
            ids = torch.cat([p, generation.ids[j, :n].to(device)])[None]
            logp = model(ids, return_type="logits")[0, len(p) - 1:-1].float().log_softmax(-1)
            out[j] = -logp.gather(-1, ids[0, len(p):, None]).mean().cpu()
    return out


# ----------------------------------------------------------------------------------------------------------------
# A sweep over methods and strengths
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SweepRow:
    """One (method, strength) over all prompts: concept rate, perplexity costs and the generations."""

    method: str
    strength: float
    concept_rate: float
    neutral_ppl: float        # steered model, held-out text
    neutral_ppl_ratio: float  # / the unsteered model's
    gen_ppl: float            # unsteered model's perplexity of the steered generations (mean NLL over samples)
    distinct: float           # mean fraction of distinct tokens per generation (low: degenerate repetition)
    n: int                    # generations checked
    texts: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "texts"}


def sweep(model: ModelLike, prompts: Sequence[str], methods: dict[str, Callable[[float], Steering]],
          strengths: Sequence[float],
          check: ConceptCheck, config: GenerationConfig | None = None, *, neutral: Tensor | None = None,
          progress: bool = False) -> list[SweepRow]:
    """Generate from every prompt under every method x strength (plus one unsteered row, method ``"none"``,
    strength 0), with the same seeds everywhere, and measure each (see the module docstring).

    ``neutral``: token ids [batch, seq] for the perplexity cost on neutral text (``heldout_tokens``); without it
    ``neutral_ppl`` is NaN.
    """
    if not prompts:
        raise ValueError("no prompts")
    if not methods or not strengths:
        raise ValueError("give at least one method and one strength")
    cfg = config or GenerationConfig()
    with torch_threads(cfg.threads):
        return _sweep(model, prompts, methods, strengths, check, cfg, neutral, progress)


def _sweep(model: ModelLike, prompts, methods, strengths, check, cfg, neutral, progress) -> list[SweepRow]:
    base_loss = steered_loss(model, neutral) if neutral is not None else float("nan")
    jobs = [("none", 0.0, None)] + [(name, float(c), build) for name in methods for (c, build) in
                                    ((c, methods[name]) for c in strengths)]
    rows = []
    for name, c, build in tqdm(jobs, desc="steering sweep", disable=not progress):
        steering = build(c) if build is not None else None
        texts, nll, distinct = [], [], []
        for prompt in prompts:
            gen = steered_generate(model, prompt, steering, cfg)
            texts += gen.texts
            nll.append(generation_nll(model, gen))
            distinct += [len(set(gen.sample_ids(j).tolist())) / n for j, n in enumerate(gen.lengths) if n]
        nll_t = torch.cat(nll)
        gen_ppl = float(torch.exp(nll_t.nanmean())) if not bool(nll_t.isnan().all()) else float("nan")
        loss = steered_loss(model, neutral, steering) if neutral is not None else float("nan")
        rows.append(SweepRow(method=name, strength=c, concept_rate=concept_rate(texts, check),
                             neutral_ppl=math.exp(loss), neutral_ppl_ratio=math.exp(loss - base_loss),
                             gen_ppl=gen_ppl, distinct=sum(distinct) / len(distinct) if distinct else float("nan"),
                             n=len(texts), texts=texts))
    return rows


def best_within_cost(rows: Sequence[SweepRow], max_ppl_ratio: float = 2.0, goal: str = "increase") -> dict[str, SweepRow]:
    """Per method, the row with the highest concept rate (``goal="decrease"``: the lowest) among those whose neutral
    perplexity ratio is at most ``max_ppl_ratio``: the methods compared at a matched perplexity cost. Methods with no
    row within the budget are left out; the unsteered row (method ``"none"``) is always kept, as the reference."""
    if goal not in ("increase", "decrease"):
        raise ValueError(f"goal must be 'increase' or 'decrease', got {goal!r}")
    sign = 1.0 if goal == "increase" else -1.0
    best: dict[str, SweepRow] = {}
    for r in rows:
        if r.method != "none" and not r.neutral_ppl_ratio <= max_ppl_ratio:
            continue
        old = best.get(r.method)
        key = (sign * r.concept_rate, -r.neutral_ppl_ratio)
        if old is None or key > (sign * old.concept_rate, -old.neutral_ppl_ratio):
            best[r.method] = r
    return best


def screen_features(model: ModelLike, sae: SAESource, features: Sequence[int], max_activations: Tensor,
                    prompts: Sequence[str],
                    check: ConceptCheck, strength: float, config: GenerationConfig | None = None, *,
                    hook: str | None = None, goal: str = "increase", max_gen_ppl_ratio: float = 3.0,
                    progress: bool = False) -> list[SweepRow]:
    """Clamp each candidate feature at one ``strength`` on screening ``prompts`` (keep them apart from the prompts
    you evaluate on) and rank them: rows (method ``"F<i>"``) sorted by concept rate (highest first, or lowest for
    ``goal="decrease"``), ties kept in the order of ``features`` (pass them best first, e.g. by contrast).
    Candidates whose generations are much less fluent than the unsteered ones (unsteered model's perplexity above
    ``max_gen_ppl_ratio`` x the unsteered generations', or fewer than half as many distinct tokens) rank last, since
    gibberish also "removes" a concept. The unsteered row is not returned."""
    sae = as_sae(sae, model=model)
    if goal not in ("increase", "decrease"):
        raise ValueError(f"goal must be 'increase' or 'decrease', got {goal!r}")
    mx = torch.as_tensor(max_activations, dtype=torch.float32)
    alive = list(dict.fromkeys(int(i) for i in features if float(mx[int(i)]) > 0))
    if not alive:
        raise ValueError("none of the candidate features ever fired (max activation 0)")
    methods = {f"F{i}": steering_methods(sae, i, float(mx[i]), hook)["clamp"] for i in alive}
    rows = sweep(model, prompts, methods, [strength], check, config, progress=progress)
    base, rows = rows[0], rows[1:]
    sign = -1.0 if goal == "increase" else 1.0

    def fluent(r: SweepRow) -> bool:
        return r.gen_ppl <= max_gen_ppl_ratio * base.gen_ppl and r.distinct >= 0.5 * base.distinct

    return sorted(rows, key=lambda r: (not fluent(r), sign * r.concept_rate))  # stable: ties keep candidate order
