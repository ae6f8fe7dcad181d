"""SAEBench's datasets, built offline from the embedded corpus (docs/methods.md §21).

SAEBench reads Hugging Face datasets (openwebtext for ``core``, bias-in-bios, Amazon reviews, AG News, GitHub code
and Europarl for ``sparse_probing`` and ``tpp``) and the tokenizer's whole alphabetic vocabulary for
``absorption``. Offline, the same evals run on:

- **held-out token contexts** (:func:`heldout_tokens`): the corpus' held-out split, packed as the SAE's training
  contexts were (BOS first, documents joined by EOS);
- **probe datasets** (:func:`probe_dataset`), each ``(train, test)`` dicts of class name -> texts, SAEBench's own
  format (what ``dataset_utils.get_multi_label_train_test_data`` returns): ``wiki_topics_en`` / ``_es`` / ``_fr``
  (the 7 topics every language shares, :mod:`workbench.data.wiki_topics`), ``wiki_topics_crosslingual`` (probes
  trained on English articles, tested on Spanish and French articles of the same topics) and ``wiki_language_id``
  (en / es / fr, every topic mixed);
- **a first-letter vocabulary** (:func:`first_letter_vocab`): a seeded sample of the tokenizer's whole-word tokens
  (a leading space, then letters only), the same number per first letter where the vocabulary has them.

:func:`local_datasets` is the injection point SAEBench lacks: inside it, SAEBench's dataset loader and class table
answer for these names (``unittest.mock.patch`` on ``sae_bench.sae_bench_utils.dataset_utils`` /
``dataset_info`` and TPP's column lookup), and every other name raises a ValueError instead of reaching the hub.
"""
from __future__ import annotations

import random
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

__all__ = ["PROBE_DATASETS", "first_letter_vocab", "heldout_tokens", "local_datasets", "probe_dataset"]

PROBE_DATASETS = ("wiki_topics_en", "wiki_topics_es", "wiki_topics_fr", "wiki_topics_crosslingual",
                  "wiki_language_id")
_LANGS = ("en", "es", "fr")

Split = dict[str, list[str]]


def _topic_texts(lang: str, n: int, seed: int) -> dict[str, list[str]]:
    from workbench.data.wiki_topics import topic_articles

    out: dict[str, list[str]] = {}
    for art in topic_articles(lang, "all", topics="shared", max_per_topic=n, seed=seed):
        out.setdefault(art.topic, []).append(art.doc.text)
    short = {t: len(v) for t, v in out.items() if len(v) < n}
    if short:
        raise ValueError(f"the embedded {lang} wiki has too few articles for {n} per topic ({short}): ask for fewer "
                         f"(n_train + n_test)")
    return {t: out[t] for t in sorted(out)}


def probe_dataset(name: str, n_train: int, n_test: int, seed: int = 0) -> tuple[Split, Split]:
    """``(train, test)`` for the probe dataset ``name`` (one of :data:`PROBE_DATASETS`): class name -> texts,
    ``n_train`` / ``n_test`` texts per class, disjoint articles."""
    if n_train < 2 or n_test < 1:
        raise ValueError(f"n_train={n_train} / n_test={n_test}: need at least 2 training and 1 test text per class")
    if name.startswith("wiki_topics_") and name[len("wiki_topics_"):] in _LANGS:
        texts = _topic_texts(name[-2:], n_train + n_test, seed)
        return ({t: v[:n_train] for t, v in texts.items()}, {t: v[n_train:] for t, v in texts.items()})
    if name == "wiki_topics_crosslingual":
        train = {t: v[:n_train] for t, v in _topic_texts("en", n_train, seed).items()}
        half = (n_test + 1) // 2
        es, fr = _topic_texts("es", half, seed), _topic_texts("fr", n_test - half or 1, seed)
        test = {t: (es[t] + fr[t])[:n_test] for t in train}
        return train, test
    if name == "wiki_language_id":
        from workbench.data.wiki_topics import topic_articles

        by_lang_train: Split = {}
        by_lang_test: Split = {}
        for lang in _LANGS:
            arts = topic_articles(lang, "all", topics="shared", seed=seed)  # a seeded hash order: topics mixed
            lang_texts = [a.doc.text for a in arts[: n_train + n_test]]
            by_lang_train[lang], by_lang_test[lang] = lang_texts[:n_train], lang_texts[n_train:]
        return by_lang_train, by_lang_test
    raise ValueError(f"unknown probe dataset {name!r}: the offline ones are {', '.join(PROBE_DATASETS)}")


def heldout_tokens(tokenizer: Any, n_contexts: int, context_size: int = 128) -> Any:
    """``[n_contexts, context_size]`` int64 token ids of the embedded corpus' held-out split (every language),
    BOS first, packed like a harvest: text no SAE trained on the default corpus has seen."""
    import numpy as np
    import torch

    from workbench.data.corpus import CorpusSpec, packed_contexts

    batches = packed_contexts(CorpusSpec(split="heldout"), tokenizer, n_contexts * context_size,
                              context_size=context_size, prepend_bos=True)
    return torch.from_numpy(np.concatenate([b.tokens for b in batches]).astype("int64"))


def first_letter_vocab(tokenizer: Any, per_letter: int = 20, seed: int = 0, min_len: int = 3) -> list[str]:
    """A seeded sample of whole-word vocabulary entries for SAEBench's first-letter task: strings ``" word"``
    whose token is one vocabulary entry (a leading space, then ``min_len`` or more ASCII lower-case letters), at
    most ``per_letter`` for each first letter (letters with fewer words give all they have), sorted."""
    from sae_bench.evals.absorption.vocab import LETTERS, convert_tokens_to_string

    by_letter: dict[str, list[str]] = {c: [] for c in LETTERS}
    for token in tokenizer.get_vocab():
        if not token.startswith(("\u2581", "\u0120")):  # sentencepiece / byte-level BPE word start
            continue
        body = token[1:]
        if len(body) >= min_len and body.isascii() and body.isalpha() and body.islower():
            by_letter[body[0]].append(convert_tokens_to_string(token, tokenizer))
    rng = random.Random(seed)
    out: list[str] = []
    for letter in LETTERS:
        words = sorted(set(w for w in by_letter[letter] if w.startswith(" ") and w[1:].isalpha()))
        rng.shuffle(words)
        out.extend(words[:per_letter])
    if len({w[1].lower() for w in out}) < 2:
        raise ValueError("the tokenizer has too few whole-word alphabetic tokens for the first-letter task")
    return sorted(out)


@contextmanager
def local_datasets(datasets: dict[str, tuple[Split, Split]]) -> Iterator[None]:
    """Inside this block SAEBench's probe-dataset loader returns ``datasets[name]`` (class -> texts, train and
    test) for the names given, and raises a ValueError for any other name (nothing is downloaded).

    SAEBench has no argument for its datasets, so this patches, for the block's duration only:
    ``dataset_utils.get_multi_label_train_test_data`` (what ``sparse_probing`` and ``tpp`` load through),
    ``dataset_info.chosen_classes_per_dataset`` (their class list) and ``scr_and_tpp.main.COLUMN2_VALS_LOOKUP``
    (read by TPP, used only by SCR)."""
    from unittest import mock

    import sae_bench.evals.scr_and_tpp.main as tpp_main
    import sae_bench.sae_bench_utils.dataset_info as dataset_info
    import sae_bench.sae_bench_utils.dataset_utils as dataset_utils

    def load(dataset_name: str, train_set_size: int, test_set_size: int, random_seed: int):
        if dataset_name not in datasets:
            raise ValueError(f"SAEBench asked for dataset {dataset_name!r}, which is not built offline: use one of "
                             f"{', '.join(sorted(datasets))}")
        train, test = datasets[dataset_name]
        return {k: list(v) for k, v in train.items()}, {k: list(v) for k, v in test.items()}

    classes = {name: list(train) for name, (train, _) in datasets.items()}
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(dataset_utils, "get_multi_label_train_test_data", load))
        stack.enter_context(mock.patch.dict(dataset_info.chosen_classes_per_dataset, classes))
        stack.enter_context(mock.patch.dict(tpp_main.COLUMN2_VALS_LOOKUP, {name: None for name in datasets}))
        yield
