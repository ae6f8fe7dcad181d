"""The curated concept categories of the completeness analysis, read from ``resources/completeness_concepts.json``.

Categories are small curated tables (chemical elements, countries, capital cities, planets, months), each concept
with its English, Spanish and French names (the embedded corpus is en/es/fr). :func:`check_against_corpus` checks
them against the embedded Wikipedia: a concept is kept when one of its names is an article title (months have no
articles; they are checked by occurrence instead). A concept's *forms* are its names as they occur in running text
(elements and months also in lower case). A form claimed by two concepts is resolved by category order (an earlier
category keeps it: "Mercury" the planet, "mercury" the element, "Luxembourg" the country) and dropped from both
within one category; a few forms that are common words in one of the languages (French "or", Spanish "radio"...)
are never used (:data:`AMBIGUOUS_FORMS`). Surface forms are not disambiguated otherwise (Georgia the country and
the US state count together).

To extend a category, edit the JSON file: each concept maps a language to its names there, and is named by its
first English name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

from workbench.core.resources import load_resource
from workbench.data.corpus import CorpusSpec, iter_documents, wiki_article

__all__ = [
    "AMBIGUOUS_FORMS",
    "CATEGORY_NAMES",
    "LANGUAGES",
    "Category",
    "Concept",
    "builtin_categories",
    "check_against_corpus",
    "corpus_categories",
]

RESOURCE = "completeness_concepts.json"
_DATA = load_resource(RESOURCE)
_TABLES: dict[str, dict] = {cat["name"]: cat for cat in _DATA["categories"]}

# Forms that are mainly something else in one of the three languages; never matched (form -> why).
AMBIGUOUS_FORMS: dict[str, str] = dict(_DATA["ambiguous_forms"])
CATEGORY_NAMES: tuple[str, ...] = tuple(_TABLES)  # also the priority order for shared forms
LANGUAGES: tuple[str, ...] = tuple(_DATA["languages"])
# the categories whose concepts must have an embedded article (the others are checked by occurrence)
_ARTICLE_CATEGORIES = tuple(name for name, cat in _TABLES.items() if cat["checked_by"] == "articles")


@dataclass(frozen=True)
class Concept:
    """One concept: its (English) name, its category, its names per language and the text forms matched."""

    name: str
    category: str
    names: dict = field(default_factory=dict, hash=False, compare=False)  # lang -> tuple of names
    forms: tuple[str, ...] = ()


@dataclass
class Category:
    name: str
    concepts: list[Concept]
    dropped: dict[str, str] = field(default_factory=dict)  # concept or form -> why


def _variants(name: str, case: str) -> list[str]:
    if case == "exact":
        return [name]
    lower = name[:1].lower() + name[1:]
    upper = name[:1].upper() + name[1:]
    return list(dict.fromkeys([name, lower, upper]))


def _raw_concepts(category: str) -> list[tuple[str, dict[str, tuple[str, ...]], list[str]]]:
    """(name, names per language, forms before resolution) of every concept of ``category`` in the table."""
    table = _TABLES[category]
    rows = []
    for entry in table["concepts"]:
        per_lang = {lang: tuple(entry[lang]) for lang in LANGUAGES if entry.get(lang)}
        forms = [v for names in per_lang.values() for n in names for v in _variants(n, table["case"])]
        rows.append((entry[LANGUAGES[0]][0], per_lang, list(dict.fromkeys(forms))))
    return rows


def builtin_categories(names: Sequence[str] | None = None) -> list[Category]:
    """The curated categories (all, or ``names`` in :data:`CATEGORY_NAMES`), with shared forms resolved: an earlier
    category in :data:`CATEGORY_NAMES` keeps a form also claimed by a later one; two concepts of one category that
    share a form both lose it; :data:`AMBIGUOUS_FORMS` are removed; concepts left without forms are dropped."""
    wanted = list(CATEGORY_NAMES if names is None else names)
    unknown = [n for n in wanted if n not in _TABLES]
    if unknown:
        raise ValueError(f"unknown concept categor{'y' if len(unknown) == 1 else 'ies'} {unknown}: choose from "
                         f"{', '.join(CATEGORY_NAMES)}")
    # build every category, so priorities do not depend on the selection
    raw = {cat: _raw_concepts(cat) for cat in CATEGORY_NAMES}
    owner: dict[str, tuple[str, bool]] = {}  # form -> (first category that has it, whether it keeps it)
    for cat in CATEGORY_NAMES:
        counts: dict[str, int] = {}
        for _, _, forms in raw[cat]:
            for f in forms:
                counts[f] = counts.get(f, 0) + 1
        for f, n in counts.items():
            owner.setdefault(f, (cat, n == 1))
    out = []
    for cat in wanted:
        concepts, dropped = [], {}
        for name, per_lang, forms in raw[cat]:
            keep = []
            for f in forms:
                first, kept = owner[f]
                if f in AMBIGUOUS_FORMS:
                    dropped[f"{name}: {f}"] = AMBIGUOUS_FORMS[f]
                elif first != cat:
                    dropped[f"{name}: {f}"] = f"also a form of a concept in {first}"
                elif not kept:
                    dropped[f"{name}: {f}"] = f"shared by two concepts of {cat}"
                else:
                    keep.append(f)
            if keep:
                concepts.append(Concept(name, cat, dict(per_lang), tuple(keep)))
            else:
                dropped[name] = "no form left after removing shared or ambiguous forms"
        out.append(Category(cat, concepts, dropped))
    return out


@lru_cache(maxsize=None)
def _article_names(lang: str) -> frozenset[str]:
    """Titles of the embedded articles of ``lang``, also without a trailing parenthetical ("Mercury (planet)")."""
    names: set[str] = set()
    for doc in iter_documents(CorpusSpec(source="wiki", languages=(lang,), split="all")):
        if doc.title is None:  # wiki documents always have a title
            continue
        names.add(doc.title)
        names.add(re.sub(r"\s*\([^)]*\)$", "", doc.title))
    return frozenset(names)


def check_against_corpus(categories: Sequence[Category], languages: Sequence[str] = LANGUAGES) -> dict[str, dict]:
    """For every concept, which of its names are titles of embedded Wikipedia articles (ignoring a trailing
    parenthetical, capitalised), per language: ``{concept name: {"category", "titles": {lang: [names]},
    "has_article"}}``. ``has_article`` is None for months, which are checked by occurrence instead."""
    out = {}
    for cat in categories:
        for c in cat.concepts:
            found = {}
            for lang in languages:
                titles = _article_names(lang)
                hits = [n for n in c.names.get(lang, ()) if (n[:1].upper() + n[1:]) in titles
                        or wiki_article(lang, n[:1].upper() + n[1:]) is not None]
                if hits:
                    found[lang] = hits
            out[c.name] = {"category": cat.name, "titles": found,
                           "has_article": bool(found) if cat.name in _ARTICLE_CATEGORIES else None}
    return out


def corpus_categories(names: Sequence[str] | None = None) -> list[Category]:
    """:func:`builtin_categories` restricted to the concepts with an embedded article in some language (months are
    kept: they are checked by occurrence)."""
    cats = builtin_categories(names)
    check = check_against_corpus(cats)
    out = []
    for cat in cats:
        keep = [c for c in cat.concepts if check[c.name]["has_article"] is not False]
        dropped = dict(cat.dropped)
        dropped.update({c.name: "no embedded article" for c in cat.concepts if check[c.name]["has_article"] is False})
        out.append(Category(cat.name, keep, dropped))
    return out
