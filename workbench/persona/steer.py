"""Steering with a persona vector: a layer x coefficient sweep on the trait's evaluation questions, with the controls
in the same run (docs/methods.md §12, §16).

    from workbench.persona.steer import SteerConfig, steering_sweep, choose
    rows = steering_sweep(model, pv, trait, judge, SteerConfig(layers=(9, 12), coefs=(0.5, 1, 1.5)))
    best = choose(rows, max_ppl_ratio=2.0)       # the persona row with the best lower bound within the cost

Each condition adds ``coef x v[L]`` (the raw diff-of-means vector, not normalised, as in the paper's code) to
``blocks.L.hook_resid_post`` at every position after the first (prompt and generated tokens), through
:class:`workbench.intervene.steering.AddVector`, and samples ``n_samples`` answers per evaluation question with the
chat template and no system prompt, with the same seeds in every condition. Each row reports the mean judged trait
score and coherence, and the perplexity ratio on held-out Wikipedia (``exp(steered loss - unsteered loss)``, the
vector added at every position; :func:`workbench.intervene.steering.steered_loss`).

Methods per (layer, coefficient): ``persona`` (the vector), ``random`` (a seeded Gaussian direction rescaled to the
vector's norm at that layer) and ``shuffled`` (the vector extracted with the labels of exactly half of the kept pairs
swapped, :func:`workbench.persona.extract.shuffled_control`, rescaled to the same norm), plus one unsteered row
(``none``).

A full grid with controls is costly on CPU, so the sweep can be cheaper without changing what is compared:
``max_ppl_ratio`` measures every condition's perplexity ratio (a forward pass) but samples answers only where it is
within the budget (the others could not be chosen; their trait and coherence are NaN), and ``controls=()`` sweeps the
vector alone. :func:`compare_at` then scores the unsteered model, the vector and both controls at one (layer,
coefficient), e.g. the chosen one on fresh seeds, so the reported gain is not the maximum of a noisy sweep.

Choosing a setting (docs/methods.md §32). Each row keeps its per-answer trait scores (``scores``) and their standard
deviation (``trait_sd``), so :func:`choose` can rank by a lower confidence bound, ``trait - z x s.e.m.`` with
``s.e.m. = trait_sd / sqrt(n)`` (``by="lcb"``, the default, ``z = 1.645``: a one-sided 95% bound) instead of the
plain mean (``by="mean"``, the earlier behaviour). The largest of many noisy means is biased upwards, and most so
where the answers disagree most: the bound prefers a setting whose gain is both high and consistent. Rows saved
before these fields existed (:meth:`SteerRow.from_dict` of an old ``to_dict``) have no s.e.m.; under ``"lcb"`` they
rank below every row that has one and by their mean among themselves (with a warning). The s.e.m. treats the
answers as independent although ``n_samples`` of them share each question, so it is somewhat optimistic.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike
from workbench.core.hardware import torch_threads
from workbench.intervene.generation import GenerationConfig
from workbench.intervene.steering import AddVector, heldout_tokens, steered_generate, steered_loss
from workbench.persona.traits import Trait, load_trait

__all__ = ["CHOOSE_BY", "SteerConfig", "SteerRow", "choose", "compare_at", "control_vector", "persona_steering", "ppl_ratios",
           "random_like", "score_answers", "score_condition", "steering_sweep"]


@dataclass(frozen=True)
class SteerConfig:
    layers: tuple[int, ...] = (6, 9, 12, 15)
    coefs: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    n_questions: int = 20
    n_samples: int = 2
    max_new_tokens: int = 48
    temperature: float = 0.7
    seed: int = 1
    controls: tuple[str, ...] = ("random", "shuffled")
    ppl_contexts: int = 8
    ppl_context_size: int = 64
    system: str | None = None
    threads: int | None = 1
    max_ppl_ratio: float | None = None  # sample answers only for conditions within this perplexity ratio

    def __post_init__(self) -> None:
        if not self.layers or not self.coefs:
            raise ValueError("give at least one layer and one coefficient")
        if self.max_ppl_ratio is not None and self.max_ppl_ratio < 1:
            raise ValueError(f"max_ppl_ratio must be >= 1 (or None), got {self.max_ppl_ratio}")
        bad = set(self.controls) - {"random", "shuffled"}
        if bad:
            raise ValueError(f"unknown control(s) {sorted(bad)}: use 'random' and/or 'shuffled'")


CHOOSE_BY = ("lcb", "mean")  # how choose() ranks the rows within the budget


@dataclass
class SteerRow:
    """One condition of a sweep: mean judged trait and coherence over ``n`` answers, the perplexity ratio, the
    answers (``texts``), their trait scores (``scores``) and the scores' standard deviation (``trait_sd``, NaN with
    fewer than 2 answers or for a row saved before it was recorded)."""

    method: str
    layer: int
    coef: float
    trait: float
    coherence: float
    ppl_ratio: float
    n: int
    texts: list[str] = field(default_factory=list, repr=False)
    trait_sd: float = float("nan")
    scores: list[float] = field(default_factory=list, repr=False)

    @property
    def sem(self) -> float:
        """Standard error of the mean trait score, ``trait_sd / sqrt(n)`` (NaN when unknown)."""
        if self.n < 2 or not math.isfinite(self.trait_sd):
            return float("nan")
        return self.trait_sd / math.sqrt(self.n)

    def lower_bound(self, z: float = 1.645) -> float:
        """``trait - z x sem``: the lower confidence bound :func:`choose` ranks by (NaN when the s.e.m. is unknown)."""
        return self.trait - float(z) * self.sem

    def to_dict(self) -> dict:
        """The row without its answers and per-answer scores (a table row; JSON-safe)."""
        return {k: v for k, v in asdict(self).items() if k not in ("texts", "scores")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SteerRow":
        """A row from :meth:`to_dict` (or ``asdict``): fields it lacks (``trait_sd`` in rows saved before it existed,
        ``texts``, ``scores``) take their defaults; unknown keys are ignored."""
        missing = [k for k in ("method", "layer", "coef", "trait", "coherence", "ppl_ratio", "n") if k not in data]
        if missing:
            raise ValueError(f"a steering row needs {missing}: give a dict written by SteerRow.to_dict()")
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        if kw.get("trait_sd") is None:  # JSON null
            kw.pop("trait_sd", None)
        return cls(**kw)


def _sd(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1), NaN under 2 values."""
    if len(xs) < 2:
        return float("nan")
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def random_like(v: Tensor, seed: int = 0) -> Tensor:
    """A Gaussian random direction with ``v``'s norm (seeded)."""
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randn(v.shape, generator=g)
    return r * (v.norm() / r.norm())


def persona_steering(vector: Tensor, layer: int, coef: float, label: str = "") -> AddVector:
    """``coef x vector`` added at ``blocks.{layer}.hook_resid_post`` (every position after the first)."""
    return AddVector(hook=f"blocks.{int(layer)}.hook_resid_post", vector=float(coef) * vector.to(torch.float32),
                     label=label or f"L{layer} x{coef:g}")


def control_vector(pv, method: str, layer: int) -> Tensor:
    """The vector steered with at ``layer`` for ``method``: ``persona`` (the vector itself), ``random`` or
    ``shuffled`` (both with the vector's norm at that layer)."""
    v = pv.vectors[int(layer)]
    if method == "persona":
        return v
    if method == "random":
        return random_like(v, seed=1000 + int(layer))
    if method == "shuffled":
        if pv.shuffled is None:
            raise ValueError("the persona vector has no shuffled-label control (fewer than 2 kept pairs?): extract "
                             "it again with more samples, or drop 'shuffled' from the controls")
        s = pv.shuffled[int(layer)]
        return s * (v.norm() / s.norm().clamp_min(1e-12))
    raise ValueError(f"unknown method {method!r}: use 'persona', 'random' or 'shuffled'")


def score_condition(model: ModelLike, questions: Sequence[str], steering, judge, config: SteerConfig) -> tuple[float,
                    float,
                                                                                                       list[str]]:
    """Mean trait and coherence of the answers to ``questions`` under ``steering`` (None: unsteered)."""
    traits, cohs, texts = score_answers(model, questions, steering, judge, config)
    return sum(traits) / len(traits), sum(cohs) / len(cohs), texts


def score_answers(model: ModelLike, questions: Sequence[str], steering, judge, config: SteerConfig) -> tuple[
        list[float], list[float], list[str]]:
    """Per answer to ``questions`` under ``steering`` (None: unsteered): trait scores, coherences and texts."""
    from workbench.data.chat import chat_prompt

    traits, cohs, texts = [], [], []
    for k, q in enumerate(questions):
        gcfg = GenerationConfig(max_new_tokens=config.max_new_tokens, n_samples=config.n_samples,
                                temperature=config.temperature, seed=config.seed * 100003 + k)
        gen = steered_generate(model, chat_prompt(model, q, system=config.system), steering, gcfg)
        for t in gen.texts:
            s = judge(q, t.strip())
            traits.append(s.trait)
            cohs.append(s.coherence)
            texts.append(t.strip())
    return traits, cohs, texts


def _row(method: str, layer: int, coef: float, ratio: float, traits: list[float], cohs: list[float],
         texts: list[str]) -> SteerRow:
    return SteerRow(method, layer, coef, sum(traits) / len(traits), sum(cohs) / len(cohs), ratio, len(texts), texts,
                    _sd(traits), list(traits))


def steering_sweep(model: ModelLike, pv, trait: Trait | str, judge, config: SteerConfig | None = None, *,
                   grid: Sequence[tuple[int, float]] | None = None, progress: bool = True) -> list[SteerRow]:
    """Rows for the unsteered model and every (method, layer, coefficient) (module docstring). ``grid``: explicit
    (layer, coefficient) settings instead of ``config.layers x config.coefs``."""
    cfg = config or SteerConfig()
    with torch_threads(cfg.threads):
        return _sweep(model, pv, trait, judge, cfg, progress, grid)


def ppl_ratios(model: ModelLike, pv, layers: Sequence[int], coefs: Sequence[float], method: str = "persona",
               contexts: int = 8, context_size: int = 64) -> dict[tuple[int, float], float]:
    """The perplexity ratio on held-out Wikipedia of every (layer, coefficient): forward passes only, to find the
    coefficients worth sampling."""
    neutral = heldout_tokens(model.tokenizer, contexts, context_size)
    base = steered_loss(model, neutral, None)
    return {(int(L), float(a)): math.exp(steered_loss(model, neutral, persona_steering(
        control_vector(pv, method, L), L, a)) - base) for L in layers for a in coefs}


def _sweep(model: ModelLike, pv, trait, judge, cfg: SteerConfig, progress: bool, grid=None,
           methods=None) -> list[SteerRow]:
    trait = load_trait(trait)
    methods = tuple(methods) if methods else ("persona", *cfg.controls)
    n_layers = int(pv.vectors.shape[0])
    grid = [(int(L), float(a)) for L, a in grid] if grid else [(L, a) for L in cfg.layers for a in cfg.coefs]
    bad = sorted({L for L, _ in grid if not 0 <= L < n_layers})
    if bad:
        raise ValueError(f"layers {bad} do not exist: the vector has layers 0..{n_layers - 1}")
    if "shuffled" in methods and pv.shuffled is None:
        raise ValueError("the persona vector has no shuffled-label control: extract it again, or drop 'shuffled' "
                         "from SteerConfig.controls")
    questions = trait.eval_questions[: cfg.n_questions]
    neutral = heldout_tokens(model.tokenizer, cfg.ppl_contexts, cfg.ppl_context_size)
    base_loss = steered_loss(model, neutral, None)
    rows = [_row("none", -1, 0.0, 1.0, *score_answers(model, questions, None, judge, cfg))]
    jobs = [(m, L, a) for L, a in grid for m in methods]
    skipped: set[tuple[int, float]] = set()
    for method, L, a in tqdm(jobs, desc=f"steering {trait.name}", disable=not progress):
        steering = persona_steering(control_vector(pv, method, L), L, a, f"{method} L{L} x{a:g}")
        ratio = math.exp(steered_loss(model, neutral, steering) - base_loss)
        if method == "persona" and cfg.max_ppl_ratio is not None and ratio > cfg.max_ppl_ratio:
            skipped.add((L, a))
        if (L, a) in skipped:  # over the budget: not sampled (controls at the same setting neither)
            rows.append(SteerRow(method, L, float(a), float("nan"), float("nan"), ratio, 0))
            continue
        rows.append(_row(method, L, float(a), ratio, *score_answers(model, questions, steering, judge, cfg)))
    return rows


def compare_at(model: ModelLike, pv, trait: Trait | str, judge, layer: int, coef: float,
               config: SteerConfig | None = None, *,
               methods: Sequence[str] = ("persona", "random", "shuffled"), progress: bool = True) -> list[SteerRow]:
    """The unsteered row and one row per ``method`` at a single (``layer``, ``coef``), same questions and seeds
    (``config``'s counts; its layers/coefs and perplexity budget are ignored): the chosen setting against its
    controls."""
    cfg = replace(config or SteerConfig(), max_ppl_ratio=None)
    with torch_threads(cfg.threads):
        return _sweep(model, pv, trait, judge, cfg, progress, [(layer, coef)], methods)


def choose(rows: Sequence[SteerRow], max_ppl_ratio: float = 2.0, min_coherence: float = 0.0,
           method: str = "persona", *, by: str = "lcb", z: float = 1.645) -> SteerRow:
    """The ``method`` row ranked first among those within the perplexity (and coherence) budget: by the lower
    confidence bound ``trait - z x sem`` (``by="lcb"``, default) or by the mean trait score (``by="mean"``, the
    earlier rule, which favours the luckiest noisy row). Rows without a s.e.m. (fewer than 2 answers, or saved
    before it was recorded) rank below the others under ``"lcb"``, by their mean (module docstring)."""
    if by not in CHOOSE_BY:
        raise ValueError(f"unknown ranking by={by!r}: use one of {list(CHOOSE_BY)}")
    if not (math.isfinite(z) and z >= 0):
        raise ValueError(f"z must be a finite number >= 0, got {z}")
    ok = [r for r in rows if r.method == method and r.n > 0 and r.ppl_ratio <= max_ppl_ratio
          and r.coherence >= min_coherence]
    if not ok:
        raise ValueError(f"no {method!r} row has a perplexity ratio <= {max_ppl_ratio} and coherence >= "
                         f"{min_coherence}: try smaller coefficients")
    if by == "mean":
        return max(ok, key=lambda r: r.trait)
    unknown = [r for r in ok if not math.isfinite(r.sem)]
    if unknown:
        warnings.warn(f"{len(unknown)} of {len(ok)} eligible rows have no s.e.m. (under 2 answers, or saved before "
                      "trait_sd was recorded): they rank below the rows that have one, by their mean. Re-run the "
                      "sweep with more answers, or pass by='mean'", stacklevel=2)
    return max(ok, key=lambda r: (math.isfinite(r.sem), r.lower_bound(z) if math.isfinite(r.sem) else r.trait))
