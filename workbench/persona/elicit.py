"""Elicitation strategies for a trait direction, compared on the same trait (docs/methods.md §32).

    from workbench.persona.elicit import compare_strategies, elicit
    pvs = {s: elicit(model, s, "pirate", judge=judge, sae=sae, sae_layer=15)
           for s in ("system_prompt", "narrative", "few_shot", "instructed", "feature")}
    compare_strategies(pvs, layers=[15])   # [{"a", "b", "layer", "cosine"}, ...] per pair of strategies

Every strategy returns a :class:`~workbench.persona.extract.PersonaVector` (``vectors`` [n_layers, d_model] at
``blocks.L.hook_resid_post``, as extraction writes them), so steering (:func:`workbench.persona.steer.compare_at`),
monitoring and decomposition take any of them. All but ``system_prompt`` are teacher-forced on project-written text
(``workbench/resources/persona_elicitation.json``): no sampling and no judge.

- ``system_prompt``: the contrastive system prompts of :mod:`workbench.persona.extract` (sampled, judged, filtered).
- ``narrative``: mean residual over the tokens of third-person stories in which a person shows the trait, minus the
  same over matched stories of the same scenes without it. The text follows the BOS token alone: no chat template,
  no assistant turn.
- ``few_shot``: in a chat whose earlier turns are ``n_demos`` demonstrations (question, reply) in the trait's style,
  the mean residual over the tokens of a last reply in that style; minus the same with neutral demonstrations and a
  neutral last reply. Each demonstration is the last turn once, the next ``n_demos`` ones (cyclically) before it.
- ``instructed``: the same base text (the neutral narratives) after an instruction to continue in the trait's voice
  versus after a plain one, averaged over the base text's tokens only: what the instruction alone changes.
- ``feature``: at the SAE's layer only, the features whose mean activation (per text, averaged over its tokens, then
  over texts) rises most from the neutral to the trait narratives, ranked by ``delta_i x ||W_dec[i]||``; the
  direction is ``sum over the top k of delta_i W_dec[i]``: the part of the SAE's reconstruction of the mean
  difference that these k features carry. The other layers are NaN.

The matched strategies (``narrative``, ``few_shot``, ``instructed``) also carry the shuffled-label control of
extraction (:func:`workbench.persona.extract.shuffled_control` over their matched pairs), so steering can compare
each with a random and a shuffled direction. :func:`evaluate_strategies` runs steering, monitoring and decomposition
for each direction at one layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from workbench.core.hardware import torch_threads
from workbench.core.protocols import ModelLike, SAELike
from workbench.core.resources import load_resource
from workbench.intervene.generation import prompt_tokens
from workbench.persona.steer import SteerConfig
from workbench.persona.extract import (ExtractConfig, PersonaVector, Response, extract_persona_vector,
                                       mean_difference, response_means, shuffled_control, vector_from_responses)
from workbench.persona.traits import Trait, load_trait

__all__ = ["STRATEGIES", "Demo", "ElicitConfig", "compare_strategies", "elicit", "elicitation_data",
           "evaluate_strategies", "feature", "feature_scores", "few_shot", "instructed", "narrative",
           "system_prompt"]

STRATEGIES = ("system_prompt", "narrative", "few_shot", "instructed", "feature")
RESOURCE = "persona_elicitation.json"


@dataclass(frozen=True)
class ElicitConfig:
    """Settings of the teacher-forced strategies. ``n_demos``: demonstrations before the scored reply (few_shot);
    ``top_k``: features summed (feature); ``seed``: the shuffled-label control's label swaps."""

    n_demos: int = 3
    top_k: int = 8
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.n_demos < 1 or self.top_k < 1:
            raise ValueError(f"n_demos and top_k must be >= 1, got {self.n_demos} and {self.top_k}")


@dataclass(frozen=True)
class Demo:
    """One few-shot demonstration: a question and a reply in the trait's style and a neutral one."""

    question: str
    trait: str
    neutral: str


def elicitation_data(trait: Trait | str) -> dict:
    """The shipped texts for ``trait``: ``{"narrative": {"trait", "neutral"}, "demos": [Demo...], "instruction",
    "plain"}``."""
    name = trait.name if isinstance(trait, Trait) else str(trait)
    traits = load_resource(RESOURCE)["traits"]
    if name not in traits:
        raise ValueError(f"no elicitation texts for trait {name!r}: shipped for {sorted(traits)}; pass your own texts "
                         "to narrative(), few_shot(), instructed() or feature()")
    d = traits[name]
    return {"narrative": {"trait": list(d["narrative"]["trait"]), "neutral": list(d["narrative"]["neutral"])},
            "demos": [Demo(x["question"], x["trait"], x["neutral"]) for x in d["demos"]],
            "instruction": d["instruction"], "plain": d["plain"]}


# ---------------------------------------------------------------------------------------------- shared pieces


def _texts(texts: Sequence[str], what: str) -> list[str]:
    out = [t for t in texts if isinstance(t, str) and t.strip()]
    if not out or len(out) != len(texts):
        raise ValueError(f"{what} must be a non-empty list of non-empty strings (got {len(texts)} item(s), "
                         f"{len(texts) - len(out)} empty): give at least one text")
    return out


def _bos(model: ModelLike) -> str:
    bos = getattr(model.tokenizer, "bos_token", None)
    if not bos:
        raise ValueError("the tokenizer has no BOS token to start a bare text with: this strategy needs one")
    return str(bos)


def _name(model: ModelLike) -> str:
    return str(getattr(model, "workbench_name", getattr(model.cfg, "model_name", "model")))


def _contrast(model: ModelLike, pos: Sequence[tuple[str, str]], neg: Sequence[tuple[str, str]], strategy: str,
              trait: str, config: ElicitConfig, meta: dict | None = None) -> PersonaVector:
    """Mean over ``pos`` of the (prefix, span) span-averaged residuals minus the same over ``neg``, at every layer;
    the shuffled-label control when the two lists are matched pairs."""
    with torch_threads(config.threads):
        means = response_means(model, [p for p, _ in [*pos, *neg]], [s for _, s in [*pos, *neg]])
    labels = torch.tensor([True] * len(pos) + [False] * len(neg))
    vec = mean_difference(means, labels)
    matched = len(pos) == len(neg) and len(pos) >= 2
    shuffled = shuffled_control(means[:len(pos)], means[len(pos):], config.seed) if matched else None
    info = {"strategy": strategy, "n_positive": len(pos), "n_negative": len(neg),
            "hook": "blocks.{layer}.hook_resid_post", **(meta or {})}
    return PersonaVector(trait, _name(model), vec, shuffled, means.norm(dim=-1).mean(0), info)


# ---------------------------------------------------------------------------------------------- the strategies


def system_prompt(model: ModelLike, trait: Trait | str, judge=None, config: ExtractConfig | None = None, *,
                  responses: Sequence[Response] | None = None, progress: bool = False) -> PersonaVector:
    """The contrastive system-prompt vector of :mod:`workbench.persona.extract`: from already judged ``responses``
    (no sampling) or sampled and judged now (needs ``judge``)."""
    trait = load_trait(trait)
    cfg = config or ExtractConfig()
    if responses is not None:
        pv = vector_from_responses(model, trait, responses, cfg, progress=progress)
    elif judge is None:
        raise ValueError("the system_prompt strategy samples and judges replies: pass judge=RubricJudge(trait), or "
                         "responses= already judged")
    else:
        pv = extract_persona_vector(model, trait, judge, cfg, progress=progress)
    pv.meta["strategy"] = "system_prompt"
    return pv


def narrative(model: ModelLike, trait_texts: Sequence[str], neutral_texts: Sequence[str], *, trait: str = "",
              config: ElicitConfig | None = None) -> PersonaVector:
    """Trait minus neutral narratives, each averaged over its own tokens after BOS (module docstring)."""
    pos, neg = _texts(trait_texts, "trait_texts"), _texts(neutral_texts, "neutral_texts")
    bos = _bos(model)
    return _contrast(model, [(bos, t) for t in pos], [(bos, t) for t in neg], "narrative", trait,
                     config or ElicitConfig())


def few_shot(model: ModelLike, demos: Sequence[Demo], *, trait: str = "",
             config: ElicitConfig | None = None) -> PersonaVector:
    """Replies after trait demonstrations minus replies after neutral ones, in the chat template (module
    docstring). Needs at least ``n_demos + 1`` demonstrations."""
    from workbench.data.chat import chat_messages, chat_prompt

    cfg = config or ElicitConfig()
    demos = list(demos)
    if len(demos) < cfg.n_demos + 1:
        raise ValueError(f"few_shot needs at least n_demos + 1 = {cfg.n_demos + 1} demonstrations, got {len(demos)}: "
                         "give more, or lower ElicitConfig.n_demos")
    for d in demos:
        _texts([d.question, d.trait, d.neutral], "a demonstration's question and replies")
    sides: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for i, last in enumerate(demos):
        shown = [demos[(i + 1 + j) % len(demos)] for j in range(cfg.n_demos)]
        for positive in (True, False):
            history = [(d.question, d.trait if positive else d.neutral) for d in shown]
            prompt = chat_prompt(model, chat_messages(last.question, history=history))
            sides[positive].append((prompt, last.trait if positive else last.neutral))
    return _contrast(model, sides[True], sides[False], "few_shot", trait, cfg, {"n_demos": cfg.n_demos})


def instructed(model: ModelLike, texts: Sequence[str], instruction: str, plain: str = "", *, trait: str = "",
               config: ElicitConfig | None = None) -> PersonaVector:
    """The same ``texts`` after ``instruction`` minus after ``plain`` (empty: the bare text), averaged over the
    texts' tokens only (module docstring)."""
    base = _texts(texts, "texts")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("instruction must be a non-empty string, e.g. 'Continue in the voice of a pirate:'")
    bos = _bos(model)

    def head(s: str) -> str:
        return f"{bos}{s.strip()}\n\n" if s.strip() else bos

    return _contrast(model, [(head(instruction), t) for t in base], [(head(plain), t) for t in base], "instructed",
                     trait, config or ElicitConfig(), {"instruction": instruction, "plain": plain})


def _check_layer(model: ModelLike, layer: int) -> int:
    n = int(model.cfg.n_layers)
    if not 0 <= int(layer) < n:
        raise ValueError(f"layer {layer} does not exist: the model has layers 0..{n - 1}")
    return int(layer)


def _token_acts(model: ModelLike, text: str, layer: int) -> Tensor:
    """The residual ``blocks.layer.hook_resid_post`` at every token of ``text`` after BOS: [n_tokens, d_model]."""
    ids = prompt_tokens(model, _bos(model) + text)
    name = f"blocks.{layer}.hook_resid_post"
    device = next(model.parameters()).device
    with torch.inference_mode():
        _, cache = model.run_with_cache(ids[None].to(device), names_filter=lambda n: n == name, return_type=None,
                                        stop_at_layer=layer + 1)
    return cache[name][0, 1:].float().cpu()


def feature_scores(model: ModelLike, sae: SAELike, layer: int, trait_texts: Sequence[str],
                   neutral_texts: Sequence[str]) -> Tensor:
    """Per SAE feature, its mean activation on the trait texts minus on the neutral ones [d_sae] (each text's
    activation averaged over its tokens first)."""
    layer = _check_layer(model, layer)
    pos, neg = _texts(trait_texts, "trait_texts"), _texts(neutral_texts, "neutral_texts")
    W = sae.W_dec
    if W.ndim != 2 or int(W.shape[1]) != int(model.cfg.d_model):
        raise ValueError(f"d_model mismatch: the SAE's decoder is {tuple(W.shape)}, the model's d_model is "
                         f"{model.cfg.d_model}: use an SAE trained on this model's blocks.{layer}.hook_resid_post")

    def mean_acts(texts: list[str]) -> Tensor:
        rows = []
        for t in texts:
            x = _token_acts(model, t, layer).to(sae.device, sae.dtype)
            with torch.inference_mode():
                rows.append(sae.encode(x).float().mean(0).cpu())
        return torch.stack(rows).mean(0)

    return mean_acts(pos) - mean_acts(neg)


def feature(model: ModelLike, sae: SAELike, layer: int, trait_texts: Sequence[str], neutral_texts: Sequence[str], *,
            trait: str = "", config: ElicitConfig | None = None) -> PersonaVector:
    """The decoder-weighted sum of the ``top_k`` features that rise most on the trait texts, at ``layer`` only
    (module docstring; the other layers are NaN). ``meta["features"]``: ``[{"feature", "delta"}]`` best first."""
    cfg = config or ElicitConfig()
    with torch_threads(cfg.threads):
        delta = feature_scores(model, sae, layer, trait_texts, neutral_texts)
    W = sae.W_dec.detach().float().cpu()
    score = delta * W.norm(dim=1)
    order = [int(i) for i in torch.argsort(score, descending=True)[: cfg.top_k] if float(score[i]) > 0]
    if not order:
        raise ValueError("no SAE feature is more active on the trait texts than on the neutral ones: check that the "
                         "SAE belongs to this layer, or give texts that differ in the trait")
    vec = (delta[order, None] * W[order]).sum(0)
    vectors = torch.full((int(model.cfg.n_layers), int(model.cfg.d_model)), float("nan"))
    vectors[layer] = vec
    meta = {"strategy": "feature", "layer": layer, "top_k": cfg.top_k, "hook": "blocks.{layer}.hook_resid_post",
            "features": [{"feature": i, "delta": round(float(delta[i]), 6)} for i in order]}
    return PersonaVector(trait, _name(model), vectors, None, None, meta)


def elicit(model: ModelLike, strategy: str, trait: Trait | str, *, judge=None, sae: SAELike | None = None,
           sae_layer: int | None = None, config: ElicitConfig | None = None,
           extract_config: ExtractConfig | None = None, responses: Sequence[Response] | None = None) -> PersonaVector:
    """``strategy``'s vector for ``trait`` from the shipped texts (:func:`elicitation_data`); ``system_prompt`` takes
    ``judge`` (or ``responses``) and ``extract_config``, ``feature`` takes ``sae`` and ``sae_layer``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown elicitation strategy {strategy!r}: use one of {list(STRATEGIES)}")
    if strategy == "system_prompt":
        return system_prompt(model, trait, judge, extract_config, responses=responses)
    name = trait.name if isinstance(trait, Trait) else str(trait)
    data = elicitation_data(name)
    nar = data["narrative"]
    if strategy == "narrative":
        return narrative(model, nar["trait"], nar["neutral"], trait=name, config=config)
    if strategy == "few_shot":
        return few_shot(model, data["demos"], trait=name, config=config)
    if strategy == "instructed":
        return instructed(model, nar["neutral"], data["instruction"], data["plain"], trait=name, config=config)
    if sae is None or sae_layer is None:
        raise ValueError("the feature strategy needs sae= (an SAE on blocks.L.hook_resid_post) and sae_layer=L")
    return feature(model, sae, sae_layer, nar["trait"], nar["neutral"], trait=name, config=config)


# ---------------------------------------------------------------------------------------------- comparisons


def _vectors(v: PersonaVector | Tensor) -> Tensor:
    t = v.vectors if isinstance(v, PersonaVector) else torch.as_tensor(v)
    if t.ndim != 2:
        raise ValueError(f"a direction must be [n_layers, d_model], got shape {tuple(t.shape)}")
    return t.detach().float().cpu()


def compare_strategies(vectors: Mapping[str, PersonaVector | Tensor],
                       layers: Sequence[int] | None = None) -> list[dict]:
    """Per unordered pair of strategies and per layer, the cosine of their directions: ``[{"a", "b", "layer",
    "cosine"}]`` (NaN where either is undefined, e.g. the feature direction away from its SAE's layer)."""
    if len(vectors) < 2:
        raise ValueError(f"compare at least two directions, got {len(vectors)}")
    vs = {k: _vectors(v) for k, v in vectors.items()}
    shapes = {tuple(v.shape) for v in vs.values()}
    if len(shapes) != 1:
        raise ValueError(f"the directions' shapes differ ({sorted(shapes)}): extract them on the same model")
    n = next(iter(shapes))[0]
    layers = list(range(n)) if layers is None else [int(L) for L in layers]
    bad = [L for L in layers if not 0 <= L < n]
    if bad:
        raise ValueError(f"layers {bad} do not exist: the directions have layers 0..{n - 1}")
    out = []
    for a, b in combinations(vs, 2):
        for L in layers:
            x, y = vs[a][L], vs[b][L]
            ok = bool(torch.isfinite(x).all() and torch.isfinite(y).all()) and float(x.norm()) > 0 and float(
                y.norm()) > 0
            cos = float(torch.nn.functional.cosine_similarity(x, y, dim=0)) if ok else float("nan")
            out.append({"a": a, "b": b, "layer": L, "cosine": cos})
    return out


def evaluate_strategies(model: ModelLike, vectors: Mapping[str, PersonaVector], trait: Trait | str, judge,
                        layer: int, coef: float, steer: SteerConfig | None = None, *, sae: SAELike | None = None,
                        norm: float | None = None, monitor_questions: int = 0, monitor_samples: int = 2,
                        top_n: int = 5, progress: bool = False) -> list[dict]:
    """For each strategy's direction at ``layer``: the steering gain at ``coef`` (:func:`~workbench.persona.steer.
    compare_at` with ``steer``'s counts) against a random direction of the same norm and, where the strategy has
    one, its shuffled-label control; the monitoring r (last prompt token's projection vs judged trait over the
    prompts of :func:`~workbench.persona.monitor.monitor_trait`, sampled once and shared by every strategy, with a
    random direction's r beside it) when ``monitor_questions`` > 0; its top SAE features when ``sae`` is given.
    ``norm``: rescale every direction to this norm at ``layer`` first, so that one ``coef`` means the same for all.
    Costly (sampling per strategy and control): size ``steer`` small."""
    from workbench.data.chat import chat_prompt
    from workbench.persona.decompose import decompose
    from workbench.persona.monitor import monitor_trait, pearson, prompt_projection
    from workbench.persona.steer import compare_at, random_like

    layer = _check_layer(model, layer)
    prepared: dict[str, PersonaVector] = {}
    for name, pv in vectors.items():
        v = _vectors(pv)
        if not bool(torch.isfinite(v[layer]).all()) or float(v[layer].norm()) == 0:
            raise ValueError(f"strategy {name!r} has no direction at layer {layer}: evaluate at its own layer")
        scale = 1.0 if norm is None else float(norm) / float(v[layer].norm())
        shuffled = pv.shuffled if isinstance(pv, PersonaVector) else None
        prepared[name] = PersonaVector(getattr(pv, "trait", ""), _name(model), v * scale,
                                       None if shuffled is None else shuffled * scale)
    points = None
    if monitor_questions > 0:
        first = next(iter(prepared.values()))
        points = monitor_trait(model, first, trait, judge, layer, n_questions=monitor_questions,
                               n_samples=monitor_samples, progress=progress)["points"]
    out = []
    for name, pv in prepared.items():
        v = pv.vectors[layer]
        methods = ("persona", "random") + (("shuffled",) if pv.shuffled is not None else ())
        rows = {r.method: r for r in compare_at(model, pv, trait, judge, layer, coef, steer, methods=methods,
                                                progress=progress)}
        base = rows["none"].trait
        res: dict[str, Any] = {"strategy": name, "layer": layer, "coef": float(coef), "norm": float(v.norm()),
                               "unsteered": base}
        for m, r in rows.items():
            if m != "none":
                res[m] = {"trait": r.trait, "gain": r.trait - base, "sem": r.sem, "coherence": r.coherence,
                          "ppl_ratio": r.ppl_ratio, "n": r.n}
        if points is not None:
            prompts = [chat_prompt(model, p["question"], system=p["system"]) for p in points]
            traits = [p["trait"] for p in points]
            res["monitor_r"] = pearson([prompt_projection(model, q, v, layer) for q in prompts], traits)
            rnd = random_like(v, seed=1000 + layer)
            res["monitor_r_random"] = pearson([prompt_projection(model, q, rnd, layer) for q in prompts], traits)
        if sae is not None:
            d = decompose(v, sae, top_n=top_n)
            res["top_features"] = [{"feature": i, "cosine": round(c, 4)} for i, c in d.top]
            res["reconstruction"] = d.reconstruction
        out.append(res)
    return out
