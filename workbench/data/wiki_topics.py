"""Ground-truth concept labels: the embedded Wikipedia articles' own ``topic`` field (docs/methods.md §20).

Every embedded summary carries the category of the vital-articles list it comes from (12 in English, 8 in Spanish,
11 in French). Seven of them exist in all three languages under their own names; :data:`SHARED_TOPICS` gives them
one English name (the table is ``resources/wiki_topics.json``). These labels are what concept probing and
SAEBench's sparse-probing datasets are built from: a label a person gave the whole article, not a token pattern.

    from workbench.data.wiki_topics import topic_articles, SHARED_TOPICS
    train = topic_articles("en", split="train")        # [TopicArticle(doc, topic), ...] on the 7 shared topics
    test = topic_articles("fr", split="heldout")       # held-out French articles, same topic names

The split is the corpus' own (:func:`~workbench.data.corpus_spec.is_heldout` on the article key), so held-out
articles are ones no SAE trained on the default ``CorpusSpec`` has seen.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from workbench.core.resources import load_resource
from workbench.data.corpus_sources import wiki_document, wiki_language
from workbench.data.corpus_spec import WIKI_LANGUAGES, CorpusSpec, Document, in_split

__all__ = ["SHARED_TOPICS", "TopicArticle", "language_topics", "topic_articles", "topic_counts"]

_DATA = load_resource("wiki_topics.json")
# canonical (English) name -> {lang: that language's label}
SHARED_TOPICS: dict[str, dict[str, str]] = {name: dict(labels) for name, labels in _DATA["shared"].items()}
_EXCLUDED: dict[str, tuple[str, ...]] = {lang: tuple(v) for lang, v in _DATA["excluded"].items()}


@dataclass(frozen=True)
class TopicArticle:
    doc: Document
    topic: str  # the canonical name for a shared topic, else the article's own label


def _canonical(lang: str) -> dict[str, str]:
    return {labels[lang]: name for name, labels in SHARED_TOPICS.items() if lang in labels}


def language_topics(lang: str) -> list[str]:
    """Every topic label of ``lang``'s articles (own names, catch-alls excluded), most frequent first."""
    counts = Counter(t for t in wiki_language(lang).topics if t and t not in _EXCLUDED.get(lang, ()))
    return [t for t, _ in counts.most_common()]


def topic_articles(lang: str, split: str = "train", *, topics: str | list[str] = "shared",
                   max_per_topic: int | None = None, heldout_fraction: float = CorpusSpec.heldout_fraction,
                   seed: int = 0) -> list[TopicArticle]:
    """The non-empty articles of ``lang`` in ``split`` whose topic is in ``topics``.

    ``topics``: ``"shared"`` (the 7 topics of every language, named in English), ``"all"`` (every label of the
    language except its catch-all, shared ones under their English name), or a list of names. ``max_per_topic``
    keeps a seeded sample of that many per topic. The order is a seeded hash order, so slices are balanced samples.
    """
    if lang not in WIKI_LANGUAGES:
        raise ValueError(f"unknown language {lang!r}: the embedded wiki has {', '.join(WIKI_LANGUAGES)}")
    canon = _canonical(lang)
    if topics == "shared":
        wanted = set(canon.values())
    elif topics == "all":
        wanted = {canon.get(t, t) for t in language_topics(lang)}
    else:
        wanted = {topics} if isinstance(topics, str) else set(topics)
        known = {canon.get(t, t) for t in language_topics(lang)}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(f"unknown topic(s) {unknown} for {lang!r}: known ones are {sorted(known)}")
    w = wiki_language(lang)
    held = w.heldout_score < heldout_fraction
    keyed = []
    for rank, label in enumerate(w.topics):
        topic = canon.get(label, label)
        if topic not in wanted or not w.extracts[rank].strip() or not in_split(bool(held[rank]), split):
            continue
        order = hashlib.blake2b(f"{seed}\x1ftopic\x1f{lang}\x1f{w.keys[rank]}".encode(), digest_size=8).digest()
        keyed.append((order, rank, topic))
    keyed.sort()
    out: list[TopicArticle] = []
    taken: Counter = Counter()
    for _, rank, topic in keyed:
        if max_per_topic is not None and taken[topic] >= max_per_topic:
            continue
        taken[topic] += 1
        out.append(TopicArticle(wiki_document(lang, rank), topic))
    return out


def topic_counts(lang: str, split: str = "all", topics: str | list[str] = "shared") -> dict[str, int]:
    """How many articles of each topic ``topic_articles`` would return."""
    return dict(Counter(a.topic for a in topic_articles(lang, split, topics=topics)))
