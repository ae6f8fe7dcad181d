"""The persona-selection checks at the profile's size (notebook 15, docs/methods.md §34): reused persona features
(narrative vs assistant-turn SAE features, clamping, the streetlight check) and emergent misalignment (a narrow
harmful fine-tune against a sound control). Each part is one cached call returning a JSON-safe dict.

    from workbench.studies.persona_selection import selection_sizes, reuse_study, misalignment_study
    sizes = selection_sizes()                          # by $WORKBENCH_PROFILE
    reuse = reuse_study(model, sizes)                  # {"traits": {name: row}, "sae": {...}, ...}
    em = misalignment_study(model, sizes)              # {"judge_agreement", "conditions", "top_features", ...}

The SAE (layer 15, SmolLM2's middle layer): at full size one trained for this study on the wiki with the model's
own chat transcripts spread through it (:mod:`workbench.persona.chat_corpus`: replies under every shipped trait's
system prompts, shown and opposite; 262k tokens, 4,096 TopK latents, k 32, notebook 08's SmolLM2 size), so that its
dictionary has seen assistant turns; at smoke size the smoke study SAE (1,024 latents, 14k wiki tokens). Its EV, L0
and CE loss score on the store's held-out contexts are in the result's ``"sae"``. Assistant turns come from the
smoke persona vectors' stored, judged responses (cached by notebook 09).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.core.cache import cached
from workbench.core.home import cache_dir
from workbench.core.protocols import ModelLike
from workbench.persona.chat_corpus import ChatCorpusConfig
from workbench.persona.finetune import FinetuneConfig, finetune, load_checkpoint
from workbench.persona.steer import SteerConfig
from workbench.studies.profile import Profile, current_profile

__all__ = ["SelectionSizes", "misalignment_study", "reuse_study", "selection_sae", "selection_sizes"]

LAYER = 15
TRAITS = ("pirate", "french", "sycophancy")


@dataclass(frozen=True)
class SelectionSizes:
    """Counts for one profile. ``k``: top features per side; ``clamp``: sampling of the clamp trials; ``clamp_coef``:
    each clamped feature's value as a multiple of its max activation over the store; ``n_clamp``: features clamped;
    ``em_finetune``: both emergent-misalignment fine-tunes; ``em``: sampling on the unrelated questions;
    ``chat_corpus``: the transcripts the SAE trains on beside the wiki (None: the smoke study SAE, wiki only);
    ``sae_tokens``: that SAE's store."""

    k: int = 16
    n_clamp: int = 4
    clamp_coef: float = 2.0
    clamp: SteerConfig = SteerConfig(n_questions=4, n_samples=2, max_new_tokens=24, seed=11)
    flattery_questions: int = 3
    readability: bool = True
    em_finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(steps=48, batch_size=4, save_every=48,
                                                                                max_len=64, first_layer=8, lr=2e-4))
    em_examples: int = 32
    em: SteerConfig = SteerConfig(n_questions=8, n_samples=2, max_new_tokens=32, seed=13)
    em_coef: float = 4.0
    traits: tuple[str, ...] = TRAITS
    chat_corpus: ChatCorpusConfig | None = ChatCorpusConfig()
    sae_tokens: int = 262_144


def selection_sizes(profile: Profile | str | None = None) -> SelectionSizes:
    prof = profile if isinstance(profile, Profile) else current_profile(profile)
    if prof.smoke:
        return SelectionSizes(
            k=8, n_clamp=2, clamp=SteerConfig(n_questions=1, n_samples=1, max_new_tokens=12, seed=11),
            flattery_questions=1, readability=False,
            em_finetune=FinetuneConfig(steps=1, batch_size=2, save_every=1, max_len=48, first_layer=24),
            em_examples=8, em=SteerConfig(n_questions=2, n_samples=1, max_new_tokens=12, seed=13), chat_corpus=None)
    return SelectionSizes()


def selection_sae(model: ModelLike, sizes: SelectionSizes, progress: bool = False):
    """The study SAE of ``sizes`` (module docstring): a :class:`~workbench.studies.profile.StudySAEs`."""
    from workbench.persona.chat_corpus import chat_corpus
    from workbench.studies.persona import study_sae

    if sizes.chat_corpus is None:
        return study_sae(model, LAYER, "smoke")
    spec = chat_corpus(model, sizes.chat_corpus, n_tokens=sizes.sae_tokens, progress=progress)
    return study_sae(model, LAYER, "full", corpus=spec, n_tokens=sizes.sae_tokens, holdout_tokens=16_384, d_sae=4096,
                     k=32, batch_size=2048)


def _sae_summary(study, sizes: SelectionSizes) -> dict:
    """The SAE's size, training metrics and CE loss / KL scores on up to 32 of the store's held-out contexts."""
    from workbench.sae.evaluate import downstream_metrics

    m = study.metrics()[study.names[0]]
    ids = study.store.token_ids()
    n_hold = max(1, study.source.holdout_tokens // ids.shape[1])
    down = downstream_metrics(study.model, study.sae, torch.from_numpy(ids[-n_hold:][:32].astype("int64")))
    return {"d_sae": int(study.sae.cfg.d_sae), **{k: m.get(k) for k in ("explained_variance", "l0", "tokens")},
            "ce_loss_score": down.ce_loss_score, "kl_div": down.kl_div,
            "corpus": "wiki" if sizes.chat_corpus is None else "wiki + chat transcripts"}


def cached_json(tag: str, sizes: SelectionSizes, extra: dict, compute) -> dict:
    """``compute()``'s JSON-safe dict, cached under ``WORKBENCH_HOME/persona/selection`` by tag, sizes and ``extra``."""
    key = {"tag": tag, "sizes": json.loads(json.dumps(asdict(sizes), default=str)), **extra}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = cache_dir("persona") / "selection" / f"{tag}-{digest}.json"
    return cached(path, key, compute, load=lambda p: json.loads(Path(p).read_text()),
                  save=lambda r, p: Path(p).write_text(json.dumps(r, indent=1, default=str)))


# ---------------------------------------------------------------------------------------------- part 2: reuse


def _assistant_acts(model, sae, pv) -> tuple[torch.Tensor, torch.Tensor]:
    """SAE activations on the kept pairs' assistant turns: positive (trait shown, trait prompt) and negative
    (neutral prompt), matched by (pair, question, sample)."""
    from workbench.persona.extract import stored_responses
    from workbench.persona.reuse import span_feature_acts

    rs = [r for r in stored_responses(pv) if r.text.strip()]
    neg = {(r.pair, r.question, r.sample): r for r in rs if not r.positive}
    pairs = [(r, neg[(r.pair, r.question, r.sample)]) for r in rs
             if r.positive and (r.pair, r.question, r.sample) in neg and r.trait >= 50 > neg[
                 (r.pair, r.question, r.sample)].trait]
    if len(pairs) < 2:  # too few judged pairs (smoke): every positive against every matched negative
        pairs = [(r, neg[(r.pair, r.question, r.sample)]) for r in rs
                 if r.positive and (r.pair, r.question, r.sample) in neg]
    pos = span_feature_acts(model, sae, LAYER, [p.prompt for p, _ in pairs], [p.text for p, _ in pairs])
    ngt = span_feature_acts(model, sae, LAYER, [n.prompt for _, n in pairs], [n.text for _, n in pairs])
    return pos, ngt


def _flattery_delta(model, sae, sizes: SelectionSizes) -> torch.Tensor:
    """Feature means on the flattery fine-tune's answers minus the neutral fine-tune's (the smoke fine-tunes of
    notebook 09, cached), on the sycophancy evaluation questions, read on the base model."""
    from workbench.data.chat import chat_prompt
    from workbench.intervene.generation import GenerationConfig, generate
    from workbench.persona.reuse import span_feature_acts
    from workbench.persona.traits import load_trait
    from workbench.studies.persona import persona_sizes

    qs = list(load_trait("sycophancy").eval_questions[: sizes.flattery_questions])
    acts = []
    for ds in ("flattery", "neutral"):
        ft = load_checkpoint(finetune(ds, persona_sizes("smoke").finetune, progress=False)[-1])
        prompts, texts = [], []
        for i, q in enumerate(qs):
            p = chat_prompt(ft, q)
            for t in generate(ft, p, GenerationConfig(max_new_tokens=32, n_samples=2, seed=5 + i)).texts:
                if t.strip():
                    prompts.append(p)
                    texts.append(t.strip())
        acts.append(span_feature_acts(model, sae, LAYER, prompts, texts))
        del ft
    from workbench.persona.reuse import mean_delta

    return mean_delta(acts[0], acts[1])


def _readability(study, features: list[int]) -> dict[int, float]:
    from workbench.analysis.explain import ExplanationSet, heldout_contexts, score_features

    res = study.features()
    ex = study.explanations()
    sub = ExplanationSet({i: ex[i] for i in features if i in ex})
    score_features(sub, study.store, study.sae, heldout_contexts(res, study.store), results=res)
    return {i: float(u.score.f1) for i, u in sub.items.items() if u.score is not None}


def top_examples(study, feature: int, n: int = 3) -> list[str]:
    """Feature ``feature``'s top ``n`` examples in the study's store, the firing token in [[ ]]."""
    res = study.features()
    out = []
    for ex in res.feature(feature).top[:n]:
        toks = list(ex.tokens)
        toks[ex.index] = f"[[{toks[ex.index]}]]"
        out.append("".join(toks).replace("\n", " "))
    return out


def _reuse(model: ModelLike, sizes: SelectionSizes, progress: bool) -> dict:
    from workbench.persona.elicit import elicitation_data
    from workbench.persona.judge import RubricJudge
    from workbench.persona.reuse import (FeatureSetClamp, clamp_trial, mean_delta, overlap_row, random_features,
                                         shuffled_delta, span_feature_acts, streetlight, top_features)
    from workbench.persona.traits import load_trait
    from workbench.studies.persona import persona_sizes, persona_vector

    study = selection_sae(model, sizes, progress)
    sae = study.sae
    bos = str(model.tokenizer.bos_token)
    mx = study.features().arrays["max"]
    mx = torch.as_tensor(mx).float()
    hook = f"blocks.{LAYER}.hook_resid_post"
    narr, asst = {}, {}
    for t in sizes.traits:
        d = elicitation_data(t)["narrative"]
        a = span_feature_acts(model, sae, LAYER, [bos] * len(d["trait"]), d["trait"])
        b = span_feature_acts(model, sae, LAYER, [bos] * len(d["neutral"]), d["neutral"])
        narr[t] = (mean_delta(a, b), shuffled_delta(a, b))
        pv = persona_vector(model, t, sizes=persona_sizes("smoke"), progress=progress)
        p, n = _assistant_acts(model, sae, pv)
        asst[t] = (mean_delta(p, n), len(p))
    out: dict[str, Any] = {"sae": _sae_summary(study, sizes), "traits": {}}
    if "sycophancy" in sizes.traits and sizes.flattery_questions:
        out["flattery_delta_top"] = top_features(_flattery_delta(model, sae, sizes), sizes.k)
    for t in sizes.traits:
        others = {f"narrative_{o}": narr[o][0] for o in sizes.traits if o != t}
        row = overlap_row(narr[t][0], asst[t][0], {**others, "shuffled": narr[t][1]}, sizes.k)
        row["n_assistant_pairs"] = asst[t][1]
        if t == "sycophancy" and "flattery_delta_top" in out:
            fl = out["flattery_delta_top"]
            row["flattery_shared_with_narrative"] = sorted(set(fl) & set(row["narrative_top"]))
            row["flattery_shared_with_assistant"] = sorted(set(fl) & set(row["assistant_top"]))
        # clamp: the reused features (or, if none, the top narrative features) vs a random set of the same size
        chosen = (row["shared"] or row["narrative_top"])[: sizes.n_clamp]
        judge = RubricJudge(t)
        qs = list(load_trait(t).eval_questions[: sizes.clamp.n_questions])
        ctrl = random_features(int(sae.cfg.d_sae), len(chosen), exclude=row["narrative_top"] + row["assistant_top"],
                               pool=[i for i in range(len(mx)) if float(mx[i]) > 0], seed=len(t))
        trials = {"none": clamp_trial(model, None, qs, judge, sizes.clamp)}
        for name, feats in (("reused", chosen), ("random", ctrl)):
            steer = FeatureSetClamp(hook=hook, sae=sae, features=tuple(feats),
                                    values=tuple(sizes.clamp_coef * float(mx[f]) for f in feats))
            trials[name] = clamp_trial(model, steer, qs, judge, sizes.clamp) | {"features": list(feats)}
        row["clamp"] = trials
        row["clamped_from"] = "shared" if row["shared"] else "narrative_top"
        out["traits"][t] = row
    if sizes.readability:
        for t, row in out["traits"].items():
            related = sorted(set(row["narrative_top"]) | set(row["assistant_top"]))
            f1 = _readability(study, related)
            row["streetlight"] = streetlight(f1, row["shared"], [i for i in related if i not in row["shared"]])
            row["shared_examples"] = {str(f): top_examples(study, f) for f in row["shared"][:3]}
    return out


def reuse_study(model: ModelLike, sizes: SelectionSizes | None = None, *, progress: bool = False) -> dict:
    """Part 2 (module docstring), cached under ``WORKBENCH_HOME/persona/selection``."""
    sizes = sizes or selection_sizes()
    return cached_json("reuse", sizes, {"model": str(getattr(model, "workbench_name", "model")), "v": 1},
                        lambda: _reuse(model, sizes, progress))


# ---------------------------------------------------------------------------------------------- part 3: EM


def _prompt_acts(model, sae, questions) -> tuple[torch.Tensor, torch.Tensor]:
    """Per neutral prompt (chat template, no reply): SAE activations and residuals averaged over its tokens."""
    from workbench.data.chat import chat_prompt
    from workbench.intervene.generation import prompt_tokens

    name = f"blocks.{LAYER}.hook_resid_post"
    feats, resid = [], []
    for q in questions:
        ids = prompt_tokens(model, chat_prompt(model, q))[None]
        with torch.inference_mode():
            _, c = model.run_with_cache(ids, names_filter=lambda n: n == name, return_type=None,
                                        stop_at_layer=LAYER + 1)
            x = c[name][0, 1:].float()
            feats.append(sae.encode(x.to(sae.device, sae.dtype)).float().mean(0).cpu())
            resid.append(x.mean(0).cpu())
    return torch.stack(feats), torch.stack(resid)


def _misalignment(model: ModelLike, sizes: SelectionSizes, progress: bool) -> dict:
    from workbench.intervene.steering import AddVector
    from workbench.persona.misalign import (MisalignmentJudge, feature_rise, finetune_sets, harmful_preference,
                                            load_misalignment, misalignment_agreement, projection_rise)
    from workbench.persona.reuse import FeatureSetClamp, clamp_trial, random_features, top_features
    from workbench.studies.persona import persona_sizes, persona_vector

    data = load_misalignment()
    judge = MisalignmentJudge(data)
    study = selection_sae(model, sizes, progress)
    sae = study.sae
    mx = torch.as_tensor(study.features().arrays["max"]).float()
    hook = f"blocks.{LAYER}.hook_resid_post"
    bad_path, good_path = finetune_sets(data, cache_dir("persona") / "misalignment", sizes.em_examples)
    bad = load_checkpoint(finetune(bad_path, sizes.em_finetune, progress=progress)[-1])
    good = load_checkpoint(finetune(good_path, sizes.em_finetune, progress=progress)[-1])
    qs = list(data.eval_questions[: sizes.em.n_questions])
    fb, rb = _prompt_acts(bad, sae, data.eval_questions)
    fg, rg = _prompt_acts(good, sae, data.eval_questions)
    rise = feature_rise(fb, fg)
    top = top_features(rise, 5)
    vectors = {t: persona_vector(model, t, sizes=persona_sizes("smoke"), progress=progress).vectors[LAYER]
               for t in TRAITS}
    vectors["misaligned_minus_control"] = rb.mean(0) - rg.mean(0)
    out: dict[str, Any] = {"judge_agreement": misalignment_agreement(judge, data.labelled),
                           "n_train": sizes.em_examples, "finetune": asdict(sizes.em_finetune),
                           "top_features": [{"feature": f, "rise": round(float(rise[f]), 5),
                                             "max_act": round(float(mx[f]), 4)} for f in top],
                           "persona_rise": projection_rise(rb, rg, {k: v for k, v in vectors.items()
                                                                    if k != "misaligned_minus_control"}),
                           "diff_norm": round(float(vectors["misaligned_minus_control"].norm()), 5)}
    cond = {"base": clamp_trial(model, None, qs, judge, sizes.em),
            "misaligned": clamp_trial(bad, None, qs, judge, sizes.em),
            "control": clamp_trial(good, None, qs, judge, sizes.em)}
    if top:
        f = top[0]
        rnd = random_features(int(sae.cfg.d_sae), 1, exclude=top, pool=[i for i in range(len(mx)) if mx[i] > 0])
        for name, feat in (("base+top_feature", f), ("base+random_feature", rnd[0])):
            st = FeatureSetClamp(hook=hook, sae=sae, features=(feat,), values=(sizes.em_coef * float(mx[feat]),))
            cond[name] = clamp_trial(model, st, qs, judge, sizes.em) | {"feature": feat}
        st0 = FeatureSetClamp(hook=hook, sae=sae, features=(f,), values=(0.0,))
        cond["misaligned-top_feature"] = clamp_trial(bad, st0, qs, judge, sizes.em) | {"feature": f}
    d = vectors["misaligned_minus_control"]
    if float(d.norm()) > 0:
        cond["base+diff_vector"] = clamp_trial(model, AddVector(hook=hook, vector=d), qs, judge, sizes.em)
        cond["misaligned-diff_vector"] = clamp_trial(bad, AddVector(hook=hook, vector=-d), qs, judge, sizes.em)
    out["conditions"] = cond
    # did the fine-tune learn the narrow task? held-out questions of its own domain (the training ones if none left)
    held = data.examples[sizes.em_examples:]
    dom = list(held or data.examples)[: sizes.em.n_questions]
    out["in_domain"] = {"held_out": bool(held), "n_questions": len(dom),
                        "preference": {k: harmful_preference(m, dom) for k, m in
                                       (("base", model), ("misaligned", bad), ("control", good))},
                        "judged": {k: clamp_trial(m, None, [q for q, _, _ in dom], judge, sizes.em) for k, m in
                                   (("base", model), ("misaligned", bad), ("control", good))}}
    return out


def misalignment_study(model: ModelLike, sizes: SelectionSizes | None = None, *, progress: bool = False) -> dict:
    """Part 3 (module docstring), cached under ``WORKBENCH_HOME/persona/selection``."""
    sizes = sizes or selection_sizes()
    from workbench.persona.misalign import load_misalignment

    data_hash = hashlib.sha256(json.dumps(load_misalignment().__dict__, default=str).encode()).hexdigest()[:12]
    return cached_json("misalign", sizes, {"model": str(getattr(model, "workbench_name", "model")),
                                            "data": data_hash, "v": 1},
                        lambda: _misalignment(model, sizes, progress))
