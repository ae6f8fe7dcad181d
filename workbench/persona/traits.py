"""A persona trait as a versioned data file (docs/methods.md §12, §16).

    from workbench.persona.traits import load_trait, shipped_traits
    trait = load_trait("pirate")          # or load_trait("path/to/my_trait.json")
    trait.pairs[0].positive, trait.extract_questions[:3], trait.sha256

A trait file is a JSON object tagged ``{"format": "workbench-persona-trait", "format_version": 1}`` with:

- ``name``, ``version`` (an integer the author bumps on every change), ``description``;
- ``system_prompts``: exactly 5 ``{"positive": ..., "negative": ...}`` pairs (the trait's system prompt and its
  opposite);
- ``questions``: ``{"extract": [20 questions], "eval": [20 questions]}``, disjoint: the vector is extracted on one
  half and evaluated on the other, never mixed;
- ``rubric``: how the offline judge scores it (``kind``: ``"lexicon"`` or ``"language"``; ``lexicon`` regular
  expressions, optional ``strong`` and ``negative`` ones, ``saturation``; ``anti_lexicon`` for ``"language"``) and
  ``llm``, the sentence an LLM judge is given;
- ``labelled``: hand-labelled responses ``{"text", "trait", "coherence"}`` (0-100) on which judges are checked.

Shipped traits live in ``workbench/resources/traits/``; add one by writing a file of the same form anywhere and
passing its path.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from workbench.core.errors import InputError

__all__ = ["LabelledResponse", "PromptPair", "Trait", "TraitFileError", "load_trait", "shipped_traits",
           "trait_from_dict"]

TRAIT_FORMAT = "workbench-persona-trait"
TRAIT_FORMAT_VERSION = 1
N_PAIRS = 5
N_QUESTIONS = 20  # per split


class TraitFileError(InputError):
    """A trait file that does not follow the format (the message names the file, the problem and the fix)."""


@dataclass(frozen=True)
class PromptPair:
    positive: str
    negative: str


@dataclass(frozen=True)
class LabelledResponse:
    text: str
    trait: float
    coherence: float


@dataclass(frozen=True)
class Trait:
    name: str
    version: int
    description: str
    pairs: tuple[PromptPair, ...]
    extract_questions: tuple[str, ...]
    eval_questions: tuple[str, ...]
    rubric: dict
    labelled: tuple[LabelledResponse, ...]
    sha256: str  # of the file's bytes (or of the canonical JSON for a trait built from a dict)
    source: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "source": self.source}


def _traits_folder() -> Path:
    return Path(str(resources.files("workbench").joinpath("resources", "traits")))


def shipped_traits() -> list[str]:
    """Names of the traits shipped with the workbench."""
    return sorted(p.stem for p in _traits_folder().glob("*.json"))


def _strings(value, what: str, where: str, n: int | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise TraitFileError(f"{where}: {what} must be a list of non-empty strings")
    if n is not None and len(value) != n:
        raise TraitFileError(f"{where}: {what} must hold exactly {n} entries, found {len(value)}")
    return tuple(value)


def trait_from_dict(data: dict, where: str = "trait", sha256: str | None = None) -> Trait:
    """Validate a trait's JSON object and build the :class:`Trait` (errors name ``where`` and the field)."""
    if not isinstance(data, dict):
        raise TraitFileError(f"{where}: a trait file holds a JSON object, found {type(data).__name__}")
    if data.get("format") != TRAIT_FORMAT:
        raise TraitFileError(f"{where}: 'format' must be {TRAIT_FORMAT!r}, found {data.get('format')!r}: start from "
                             "a shipped trait file (workbench/resources/traits/)")
    if int(data.get("format_version", 0)) > TRAIT_FORMAT_VERSION:
        raise TraitFileError(f"{where}: format_version {data.get('format_version')} is newer than this workbench "
                             f"reads ({TRAIT_FORMAT_VERSION}): upgrade workbench")
    missing = [k for k in ("name", "version", "description", "system_prompts", "questions", "rubric") if k not in data]
    if missing:
        raise TraitFileError(f"{where}: missing field(s) {missing}")
    name = data["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_\-]+", name):
        raise TraitFileError(f"{where}: 'name' must be lower-case letters, digits, '-' or '_', found {name!r}")
    if not isinstance(data["version"], int) or data["version"] < 1:
        raise TraitFileError(f"{where}: 'version' must be an integer >= 1, found {data['version']!r}")
    sp = data["system_prompts"]
    if not isinstance(sp, list) or len(sp) != N_PAIRS:
        raise TraitFileError(f"{where}: 'system_prompts' must hold exactly {N_PAIRS} positive/negative pairs, found "
                             f"{len(sp) if isinstance(sp, list) else type(sp).__name__}")
    pairs = []
    for i, p in enumerate(sp):
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) and p[k].strip() for k in ("positive", "negative")):
            raise TraitFileError(f"{where}: system_prompts[{i}] must be {{'positive': str, 'negative': str}}")
        pairs.append(PromptPair(p["positive"], p["negative"]))
    q = data["questions"]
    if not isinstance(q, dict):
        raise TraitFileError(f"{where}: 'questions' must be {{'extract': [...], 'eval': [...]}}")
    ext = _strings(q.get("extract"), "questions.extract", where, N_QUESTIONS)
    ev = _strings(q.get("eval"), "questions.eval", where, N_QUESTIONS)
    both = set(ext) & set(ev)
    if both:
        raise TraitFileError(f"{where}: {len(both)} question(s) appear in both extract and eval (e.g. "
                             f"{sorted(both)[0]!r}): the two splits must be disjoint")
    rubric = data["rubric"]
    if not isinstance(rubric, dict) or rubric.get("kind") not in ("lexicon", "language"):
        raise TraitFileError(f"{where}: rubric.kind must be 'lexicon' or 'language'")
    for key in ("lexicon", "strong", "negative", "anti_lexicon"):
        for pat in rubric.get(key, []) or []:
            try:
                re.compile(pat)
            except re.error as err:
                raise TraitFileError(f"{where}: rubric.{key} has a bad regular expression {pat!r}: {err}") from None
    if not rubric.get("lexicon"):
        raise TraitFileError(f"{where}: rubric.lexicon must list at least one pattern")
    if rubric["kind"] == "language" and not rubric.get("anti_lexicon"):
        raise TraitFileError(f"{where}: a 'language' rubric needs anti_lexicon (the other language's function words)")
    labelled = []
    for i, item in enumerate(data.get("labelled", []) or []):
        try:
            lab = LabelledResponse(str(item["text"]), float(item["trait"]), float(item["coherence"]))
        except (KeyError, TypeError, ValueError):
            raise TraitFileError(f"{where}: labelled[{i}] must be {{'text': str, 'trait': 0-100, 'coherence': 0-100}}"
                                 ) from None
        if not (0 <= lab.trait <= 100 and 0 <= lab.coherence <= 100):
            raise TraitFileError(f"{where}: labelled[{i}] scores must lie in 0-100")
        labelled.append(lab)
    digest = sha256 or hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return Trait(name, int(data["version"]), str(data["description"]), tuple(pairs), ext, ev, dict(rubric),
                 tuple(labelled), digest, where)


def load_trait(name_or_path: Trait | str | Path) -> Trait:
    """A shipped trait by name (``shipped_traits()``) or a trait file by path."""
    if isinstance(name_or_path, Trait):
        return name_or_path
    path = Path(str(name_or_path)).expanduser()
    if not path.is_file():
        if str(name_or_path) not in shipped_traits():
            raise TraitFileError(f"no trait {str(name_or_path)!r}: give the path of a trait file or one of the "
                                 f"shipped traits {shipped_traits()}")
        path = _traits_folder() / f"{name_or_path}.json"
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise TraitFileError(f"{path}: not valid JSON ({err}): fix the file") from None
    return trait_from_dict(data, str(path), hashlib.sha256(raw).hexdigest())
