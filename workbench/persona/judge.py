"""Judges that score a response for a trait (0-100) and for coherence (0-100), and a check of a judge against the
trait file's hand-labelled responses (docs/methods.md §12, §16).

    from workbench.persona.judge import RubricJudge, judge_agreement
    judge = RubricJudge(load_trait("pirate"))            # offline, transparent
    judge("How do I make tea?", "Arr, matey! Boil the water...")   # JudgeScore(trait=74.0, coherence=88.0, ...)
    judge_agreement(judge, trait)                        # MAE, correlation and 50-threshold accuracy vs the labels

A judge is any object with ``__call__(question, response) -> JudgeScore``; :class:`~workbench.persona.judge_llm.
OpenAIJudge` (an OpenAI-compatible endpoint, as the papers' GPT-4.1-mini judge) is the drop-in alternative.

**The offline rubric** (every number is visible in ``JudgeScore.details``):

- ``kind="lexicon"``: each match of a ``lexicon`` pattern (whole words, case-insensitive) counts 1, a match of a
  ``strong`` pattern 1 more, a ``negative`` pattern (e.g. "as an AI" for claiming to be human) -1; the trait score is
  ``100 (1 - exp(-max(hits, 0) / saturation))``. Two strong cues give about 75 at the default saturation 3.
- ``kind="language"``: the share of the response's function words that belong to the target language's list
  (``lexicon``) rather than the other one's (``anti_lexicon``), x 100; 0 below ``min_words`` of either list.
- Coherence: 100 x (distinct-word ratio, saturating at 0.6) x (1 - share of repeated word trigrams) x (share of
  letters among non-space characters, saturating at 0.7); empty responses score 0. Version 2 (the default) multiplies
  two more factors, both aimed at the word salad a hard-steered small model produces: the share of known words
  (:mod:`workbench.persona.lexicon`; 0 at or below 0.7, 1 at or above 0.95, linear between), which tells steered
  pseudo-French ("Cependlème véliment") from French, and fragmentation, the mean number of letter runs per
  whitespace-separated token (1 at or below 1.3, 0 at or above 2.0), which catches chains such as
  "me-gun-n''ve-made-wad-l'd". ``RubricJudge(known=False)`` is version 1 (judge name ``"rubric"``). Both versions
  are checked against the shared labelled set (:func:`coherence_agreement`). With ``lm=`` (a TransformerLens
  model, e.g. the embedded Gemma base) it is also capped by the model's mean per-token loss on the response:
  100 at a loss <= ``lm_good``, 0 at >= ``lm_bad``, linear between (catches fluent-looking word salad in another
  language, which word statistics cannot).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import AbstractSet, Any, Protocol, Sequence

import torch

from workbench.persona.lexicon import known_share, known_words, letter_runs
from workbench.persona.traits import Trait, load_trait

__all__ = ["Judge", "JudgeScore", "LexiconJudge", "RubricJudge", "coherence_agreement", "coherence_labels", "coherence_score",
           "judge_agreement", "trait_score"]

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)


@dataclass(frozen=True)
class JudgeScore:
    trait: float
    coherence: float
    details: dict = field(default_factory=dict, compare=False)


class Judge(Protocol):
    def __call__(self, question: str, response: str) -> JudgeScore: ...


@lru_cache(maxsize=256)
def _compile(patterns: tuple[str, ...]) -> list[re.Pattern]:
    return [re.compile(rf"(?<![\w']){p}(?![\w'])", re.IGNORECASE) for p in patterns]


def trait_score(text: str, rubric: dict) -> tuple[float, dict]:
    """The rubric's trait score (0-100) of ``text`` and the counts behind it (module docstring)."""
    if rubric["kind"] == "language":
        words = [w.lower() for w in _WORD.findall(text)]
        own = set(w.lower() for w in rubric["lexicon"])
        other = set(w.lower() for w in rubric["anti_lexicon"])
        a, b = sum(w in own for w in words), sum(w in other for w in words)
        if a + b < int(rubric.get("min_words", 3)):
            return 0.0, {"target_words": a, "other_words": b}
        return 100.0 * a / (a + b), {"target_words": a, "other_words": b}
    pats = {key: _compile(tuple(rubric.get(key) or ())) for key in ("lexicon", "strong", "negative")}
    counts = {key: sum(len(p.findall(text)) for p in pats[key]) for key in ("lexicon", "strong", "negative")}
    hits = counts["lexicon"] + counts["strong"] - counts["negative"]
    sat = float(rubric.get("saturation", 3.0))
    return 100.0 * (1.0 - math.exp(-max(hits, 0) / sat)), counts


# version 2's factors: the known-word share and the letter runs per token scoring 0 and 1 (module docstring; chosen by
# reading the shared coherence labels)
KNOWN_FLOOR, KNOWN_FULL = 0.7, 0.95
FRAGMENTS_FULL, FRAGMENTS_ZERO = 1.3, 2.0


def coherence_score(text: str, known: AbstractSet[str] | None = None) -> tuple[float, dict]:
    """Word-statistics coherence (0-100) of ``text`` and its factors (module docstring); ``known``: a vocabulary
    (:func:`workbench.persona.lexicon.known_words`) for version 2's factors, None for version 1."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return 0.0, {"words": 0}
    distinct = len(set(words)) / len(words) if len(words) >= 6 else 1.0
    grams = list(zip(words, words[1:], words[2:]))
    repeated = 1.0 - len(set(grams)) / len(grams) if len(grams) >= 3 else 0.0
    chars = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in chars) / max(len(chars), 1)
    score = 100.0 * min(1.0, distinct / 0.6) * (1.0 - repeated) * min(1.0, letters / 0.7)
    info: dict[str, Any] = {"words": len(words), "distinct": round(distinct, 3), "repeated_trigrams": round(repeated, 3),
            "letters": round(letters, 3)}
    if known is not None:
        share, unknown = known_share(text, known)
        tokens = [t for t in text.split() if _WORD.search(t)]
        fragments = sum(len(letter_runs(t)) for t in tokens) / max(len(tokens), 1)
        score *= min(1.0, max(0.0, (share - KNOWN_FLOOR) / (KNOWN_FULL - KNOWN_FLOOR)))
        score *= min(1.0, max(0.0, (FRAGMENTS_ZERO - fragments) / (FRAGMENTS_ZERO - FRAGMENTS_FULL)))
        info |= {"known_words": round(share, 3), "unknown": unknown[:10], "fragments": round(fragments, 3)}
    return score, info


def _lm_loss(lm, text: str) -> float:
    tok = lm.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"][:128]
    if len(ids) < 2:
        return float("nan")
    bos = [int(tok.bos_token_id)] if getattr(tok, "bos_token_id", None) is not None else []
    with torch.inference_mode():
        loss = lm(torch.tensor([bos + ids]), return_type="loss", loss_per_token=True)[0, len(bos):]
    return float(loss.mean())


class LexiconJudge:
    """A rubric given as a dict (not a trait file) with the offline coherence judge (version 2, known words): the
    judge of studies that score one behaviour by its own lexicon. ``name`` goes into every score's info."""

    def __init__(self, rubric: dict, name: str):
        self.rubric, self.name = dict(rubric), name
        self._vocab = known_words()

    def __call__(self, question: str, response: str) -> JudgeScore:
        t, t_info = trait_score(response, self.rubric)
        c, c_info = coherence_score(response, self._vocab)
        return JudgeScore(round(t, 2), round(c, 2), {"trait": t_info, "coherence": c_info, "judge": self.name})


@dataclass
class RubricJudge:
    """The offline judge: the trait file's rubric, word statistics and known words, optionally a language model's
    loss for coherence (module docstring). Deterministic. ``name`` (part of the persona-vector cache key) defaults to
    ``"rubric-v2"`` with the known-word factor and ``"rubric"`` without it."""

    trait: Trait | str
    lm: object = None
    lm_good: float = 3.5
    lm_bad: float = 7.0
    known: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        self.trait = load_trait(self.trait)
        self._rubric = dict(self.trait.rubric)
        self._vocab = known_words() if self.known else None
        self.name = self.name or ("rubric-v2" if self.known else "rubric")
        if not self.lm_bad > self.lm_good:
            raise ValueError(f"lm_bad ({self.lm_bad}) must be larger than lm_good ({self.lm_good})")

    def __call__(self, question: str, response: str) -> JudgeScore:
        t, t_info = trait_score(response, self._rubric)
        c, c_info = coherence_score(response, self._vocab)
        if self.lm is not None and c > 0:
            loss = _lm_loss(self.lm, response)
            if math.isfinite(loss):
                cap = 100.0 * min(1.0, max(0.0, (self.lm_bad - loss) / (self.lm_bad - self.lm_good)))
                c_info["lm_loss"], c = round(loss, 3), min(c, cap)
        return JudgeScore(round(t, 2), round(c, 2), {"trait": t_info, "coherence": c_info, "judge": self.name})

    def score_many(self, question: str | Sequence[str], responses: Sequence[str]) -> list[JudgeScore]:
        qs = [question] * len(responses) if isinstance(question, str) else list(question)
        return [self(q, r) for q, r in zip(qs, responses)]


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if len(x) < 2 or float(x.std()) == 0 or float(y.std()) == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def _agreement(pred: Sequence[float], gold: Sequence[float], key: str) -> dict:
    return {f"{key}_mae": round(sum(abs(p - g) for p, g in zip(pred, gold)) / len(gold), 2),
            f"{key}_r": round(_pearson(pred, gold), 3),
            f"{key}_accuracy": round(sum((p >= 50) == (g >= 50) for p, g in zip(pred, gold)) / len(gold), 3)}


def judge_agreement(judge: Judge, trait: Trait | str | None = None) -> dict:
    """How well ``judge`` matches the trait file's hand labels: mean absolute error, Pearson r and the accuracy of
    the >= 50 decision, for the trait score and for coherence."""
    trait = load_trait(trait if trait is not None else getattr(judge, "trait"))  # RubricJudge, OpenAIJudge
    if not trait.labelled:
        raise ValueError(f"trait {trait.name!r} has no 'labelled' responses to check a judge against: add some to "
                         "its file")
    scores = [judge("", lab.text) for lab in trait.labelled]
    out = {"trait": trait.name, "n": len(scores)}
    for key in ("trait", "coherence"):
        out |= _agreement([getattr(s, key) for s in scores], [getattr(lab, key) for lab in trait.labelled], key)
    return out


def coherence_labels(path: str | Path | None = None) -> list[dict]:
    """The shared hand-labelled coherence set (``text``, ``coherence`` 0-100, ``source``): unsteered, steered and
    prompted-French replies of the embedded chat model (``workbench/resources/judge/coherence_labels.json``)."""
    src = Path(path) if path is not None else Path(str(resources.files("workbench") / "resources" / "judge"
                                                       / "coherence_labels.json"))
    try:
        rows = json.loads(src.read_text(encoding="utf-8"))["labelled"]
        ok = all(isinstance(r["text"], str) and 0 <= float(r["coherence"]) <= 100 for r in rows)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{src}: not a readable coherence label file ({err}); it needs a 'labelled' list of "
                         "{'text', 'coherence' 0-100, 'source'} objects") from err
    if not rows or not ok:
        raise ValueError(f"{src}: every labelled item needs a text and a coherence between 0 and 100")
    return rows


def coherence_agreement(judge: Judge, path: str | Path | None = None) -> dict:
    """``judge``'s coherence against :func:`coherence_labels` (MAE, Pearson r, accuracy of the >= 50 decision), over
    all items and per source."""
    rows = coherence_labels(path)
    pred = [judge("", r["text"]).coherence for r in rows]
    out = {"n": len(rows)} | _agreement(pred, [float(r["coherence"]) for r in rows], "coherence")
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_source.setdefault(r.get("source", ""), []).append(i)
    out["by_source"] = {
        src: {"n": len(ix), "mean_label": round(sum(float(rows[i]["coherence"]) for i in ix) / len(ix), 1),
              "mean_judged": round(sum(pred[i] for i in ix) / len(ix), 1)} for src, ix in by_source.items()}
    return out
