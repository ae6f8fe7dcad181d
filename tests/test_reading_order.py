"""Detector kinds and the reading order on hand-built feature results whose answer is known.

The results are built directly (the arrays ``compute_features`` writes), from a token grid of contexts whose
documents carry the embedded wiki's language-coded ids: a feature planted on ``" "``, one at position 1 on
whatever token is there, one at the first token of documents that start inside a context, one on ``"("``, one on
" the"/"The"/"the", one on digits, one on EOS, one on 20 distinct words in three languages, one on 8 distinct
English words, a dense one, and a dead one.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis.detectors import (DetectorConfig, classify_detectors, example_tokens, normalise_token,
                                          token_category)
from workbench.analysis.feature_results import FeatureConfig, FeatureResults
from workbench.analysis.reading_order import (ReadingOrderConfig, concept_evidence, lead_order, random_sample,
                                              reading_order)
from workbench.data.corpus import WIKI_ID_STRIDE

CTX, N_CTX = 64, 60
EOS, BOS, SPACE, PAREN, THE, THE_CAP, THE_BARE, ONE, YEAR = 1, 2, 3, 4, 5, 6, 7, 8, 9
BASE = {0: "<pad>", EOS: "<eos>", BOS: "<bos>", SPACE: " ", PAREN: "(", THE: " the", THE_CAP: "The", THE_BARE: "the",
        ONE: " 1", YEAR: "2024"}
WORDS = {100 + j: f" {w}" for j, w in enumerate(
    "river mountain city music painter novel election football church castle island village bridge poet"
    " singer temple forest desert harbor valley".split())}
WORDS.update({200 + j: f" {w}" for j, w in enumerate("río montaña ciudad música pintor novela elección".split())})
WORDS.update({300 + j: f" {w}" for j, w in enumerate("rivière montagne ville musique peintre roman".split())})
FILLER = list(range(400, 440))  # the tokens everything else is made of
VOCAB = {**BASE, **WORDS, **{t: f" w{t}" for t in FILLER}}

# the features: what each is, in the order of their indices
WHITESPACE, POSITION, DOC_START, BRACKET, TOKEN, NUMBER, SPECIAL, CONCEPT, ENGLISH, DENSE, DEAD = range(11)
D_SAE = 11
MULTI_WORDS = [100, 101, 102, 103, 104, 105, 106, 200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 305]
EN_WORDS = [107, 108, 109, 110, 111, 112, 113, 114]


def _language(c: int) -> int:
    return c % 3  # context c's documents are in WIKI_LANGUAGES[c % 3]


def _grid():
    """Tokens and document ids [N_CTX, CTX]: BOS first; contexts >= 40 hold a second document from position 30."""
    rng = np.random.default_rng(0)
    tokens = rng.choice(FILLER, size=(N_CTX, CTX))
    tokens[:, 0] = BOS
    docs = np.array([[_language(c) * WIKI_ID_STRIDE + 2 * c] * CTX for c in range(N_CTX)], dtype=np.int64)
    docs[40:, 30:] += 1
    tokens[40:, 29] = EOS
    return tokens, docs


def _plant(tokens):
    """Feature -> [(context, position)] where it fires; the tokens there are set to what the feature reads."""
    at: dict[int, list[tuple[int, int]]] = {}
    at[WHITESPACE] = [(c, 20) for c in range(20)]
    at[POSITION] = [(c, 1) for c in range(20)]  # whatever filler token follows BOS
    at[DOC_START] = [(c, 30) for c in range(40, 60)]
    at[BRACKET] = [(c, 23) for c in range(20)]
    at[TOKEN] = [(c, 26) for c in range(20)]
    at[NUMBER] = [(c, 32) for c in range(20)]
    at[SPECIAL] = [(c, 29) for c in range(40, 60)]  # the EOS ending the first document
    at[CONCEPT] = [(c, 35) for c in range(20)]  # 20 words, 3 languages (context c's language matches its word)
    at[ENGLISH] = [(3 * j, 38) for j in range(8)]  # contexts 0, 3, ...: English
    at[DENSE] = [(c, p) for c in range(20) for p in range(40, 44)]
    for c, p in at[WHITESPACE]:
        tokens[c, p] = SPACE
    for c, p in at[BRACKET]:
        tokens[c, p] = PAREN
    for j, (c, p) in enumerate(at[TOKEN]):
        tokens[c, p] = (THE, THE_CAP, THE_BARE)[j % 3]
    for j, (c, p) in enumerate(at[NUMBER]):
        tokens[c, p] = (ONE, YEAR)[j % 2]
    # CONCEPT's contexts: 0..19; pick for each a word of that context's language
    by_lang = {0: [w for w in MULTI_WORDS if w < 200], 1: [w for w in MULTI_WORDS if 200 <= w < 300],
               2: [w for w in MULTI_WORDS if w >= 300]}
    used = {0: 0, 1: 0, 2: 0}
    for c, p in at[CONCEPT]:
        lang = _language(c)
        tokens[c, p] = by_lang[lang][used[lang] % len(by_lang[lang])]
        used[lang] += 1
    for j, (c, p) in enumerate(at[ENGLISH]):
        tokens[c, p] = EN_WORDS[j]
    return at


class FakeStore:
    """What feature_languages / top_example_documents read: a wiki manifest and the document ids."""

    def __init__(self, docs):
        self.manifest = {"corpus": {"source": "wiki"}}
        self._docs = docs

    def doc_ids(self):
        return self._docs


def build_results(logits: dict[int, list[int]] | None = None):
    """(FeatureResults, store): the planted features' arrays as compute_features lays them out."""
    tokens, docs = _grid()
    at = _plant(tokens)
    cfg = FeatureConfig(progress=False)
    K, B, m, W, before = cfg.top_k, cfg.n_buckets, cfg.per_bucket, cfg.window, cfg.context_before

    def window(c, p):
        ids = np.full(W, -1, dtype=np.int64)
        for j in range(W):
            q = p - before + j
            if 0 <= q < CTX and docs[c, q] == docs[c, p]:
                ids[j] = tokens[c, q]
        return ids

    a = {"count": torch.zeros(D_SAE, dtype=torch.int64), "sum": torch.zeros(D_SAE, dtype=torch.float64),
         "max": torch.zeros(D_SAE), "top_val": torch.zeros(D_SAE, K), "top_tok": torch.full((D_SAE, K), -1),
         "top_win_ids": torch.full((D_SAE, K, W), -1), "top_win_acts": torch.zeros(D_SAE, K, W),
         "bucket_val": torch.zeros(D_SAE, B, m), "bucket_tok": torch.full((D_SAE, B, m), -1),
         "bucket_win_ids": torch.full((D_SAE, B, m, W), -1), "bucket_win_acts": torch.zeros(D_SAE, B, m, W),
         "bucket_count": torch.zeros(D_SAE, B, dtype=torch.int64), "hist": torch.zeros(D_SAE, cfg.n_hist_bins)}
    for f, where in at.items():
        vals = [3.0 - 0.05 * j for j in range(len(where))]
        a["count"][f] = len(where) * (40 if f == DENSE else 1)  # DENSE: density 0.85
        a["sum"][f] = float(sum(vals))
        a["max"][f] = vals[0]
        a["hist"][f, -1] = len(where)
        for j, ((c, p), v) in enumerate(zip(where[:K], vals)):
            a["top_val"][f, j] = v
            a["top_tok"][f, j] = c * CTX + p
            a["top_win_ids"][f, j] = torch.from_numpy(window(c, p))
            a["top_win_acts"][f, j, before] = v
        a["bucket_count"][f, -1] = len(where)
        for j, ((c, p), v) in enumerate(zip(where[:m], vals)):  # the top bucket's sample: the same tokens
            a["bucket_val"][f, -1, j] = v
            a["bucket_tok"][f, -1, j] = c * CTX + p
            a["bucket_win_ids"][f, -1, j] = torch.from_numpy(window(c, p))
    if logits is not None:
        n = max(len(v) for v in logits.values())
        ids = torch.full((D_SAE, n), FILLER[0], dtype=torch.int64)
        for f, toks in logits.items():
            ids[f, : len(toks)] = torch.tensor(toks)
        a.update(logit_top_ids=ids, logit_top_vals=torch.ones(D_SAE, n), logit_bottom_ids=ids.clone(),
                 logit_bottom_vals=-torch.ones(D_SAE, n))
    meta = {"n_tokens": N_CTX * (CTX - 1), "n_contexts": N_CTX, "context_size": CTX, "config": cfg.to_dict(),
            "hook": "blocks.0.hook_resid_post"}
    return FeatureResults(a, meta, VOCAB), FakeStore(docs)


EXPECTED_KINDS = {WHITESPACE: "whitespace", POSITION: "position", DOC_START: "position", BRACKET: "punctuation",
                  TOKEN: "token", NUMBER: "number", SPECIAL: "special", CONCEPT: "", ENGLISH: "", DENSE: "",
                  DEAD: ""}


@pytest.fixture(scope="module")
def planted():
    return build_results(logits={CONCEPT: [100, 200, 999], ENGLISH: [998, 997]})


def test_token_strings_fall_into_classes():
    assert [token_category(s) for s in (" ", "\n", "(", " -", "»", ",", " 1", "2024", "1,5", " the", "x2", "<eos>",
                                         "\ufffd")] == ["whitespace", "whitespace", "punctuation", "punctuation",
                                                        "punctuation", "punctuation", "number", "number", "number",
                                                        "word", "word", "special", "word"]
    assert token_category(" w", special=True) == "special"
    assert normalise_token(" The") == normalise_token("the") == normalise_token("\u2581THE") == "the"


def test_examples_know_their_context_and_document_positions(planted):
    res, _ = planted
    ids, ctx_pos, doc_pos = example_tokens(res, "top")
    assert ctx_pos[POSITION, :20].tolist() == [1] * 20 and doc_pos[POSITION, :20].tolist() == [1] * 20
    assert ctx_pos[DOC_START, :20].tolist() == [30] * 20 and doc_pos[DOC_START, :20].tolist() == [0] * 20
    assert doc_pos[CONCEPT, :20].tolist() == [12] * 20  # the document started before the window: capped
    assert ids[WHITESPACE, :20].tolist() == [SPACE] * 20 and (ids[DEAD] == -1).all()


def test_single_token_type_detectors_are_classified(planted):
    res, _ = planted
    det = classify_detectors(res)
    assert {i: det.kind(i) for i in range(D_SAE)} == EXPECTED_KINDS
    assert det.counts == {"special": 1, "position": 2, "whitespace": 1, "punctuation": 1, "number": 1, "token": 1}
    assert det.n_alive == 10 and det.mask.nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert det.dominant[WHITESPACE] == " " and det.dominant[BRACKET] == "(" and det.dominant[DEAD] == ""
    assert det.n_types[TOKEN] == 1 and det.n_types[CONCEPT] == 20 and det.n_types[ENGLISH] == 8
    assert float(det.share[TOKEN]) == pytest.approx(1.0)
    assert det.features("position") == [POSITION, DOC_START]
    # thresholds are config: demand more than everything and nothing is a detector of a share-1.0 kind
    strict = classify_detectors(res, DetectorConfig(majority=1.0, token_majority=1.0))
    assert not any(strict.kinds)
    # position_max=0: no position is early (context position 1 and document position 0 are the first token)
    none = classify_detectors(res, DetectorConfig(position_max=0))
    assert none.kind(POSITION) == none.kind(DOC_START) == "" and none.kind(WHITESPACE) == "whitespace"
    with pytest.raises(ValueError, match="majority"):
        DetectorConfig(majority=1.5)


def test_concept_evidence_components(planted):
    res, store = planted
    ev = concept_evidence(res, store=store)
    assert ev.n_languages[CONCEPT] == 3 and ev.n_languages[ENGLISH] == 1
    assert float(ev.components["languages"][CONCEPT]) == 1.0 and float(ev.components["languages"][ENGLISH]) == 0.0
    assert ev.n_types[CONCEPT] == 20 and float(ev.components["types"][CONCEPT]) == pytest.approx(1.0)
    assert float(ev.components["types"][ENGLISH]) == pytest.approx(np.log(8) / np.log(20))
    assert ev.n_documents[CONCEPT] == 20 and ev.documents_from == "store"
    # CONCEPT writes 2 of the words it reads (of 3 distinct writes): 2 / min(20, 3); ENGLISH writes none of its own
    assert float(ev.components["agreement"][CONCEPT]) == pytest.approx(2 / 3)
    assert float(ev.components["agreement"][ENGLISH]) == 0.0
    assert ev.components["concept"] is None
    # no store: languages drop out and contexts stand in for documents
    plain = concept_evidence(res)
    assert plain.components["languages"] is None and plain.documents_from == "contexts"
    assert plain.n_documents[CONCEPT] == 20


def test_the_lead_excludes_detectors_and_ranks_concepts_first(planted):
    res, store = planted
    order = reading_order(res, store=store, config=ReadingOrderConfig(max_density=0.5))
    assert order.lead == [CONCEPT, ENGLISH]  # DENSE is dense (density > 0.5), the rest detectors, DEAD dead
    assert order.n_dense == 1 and order.n_alive == 10
    assert not set(order.lead) & set(order.detectors.features())
    assert lead_order(res, store=store, config=ReadingOrderConfig(max_density=0.5)) == [CONCEPT, ENGLISH]
    everything = lead_order(res, store=store, config=ReadingOrderConfig(max_density=0.5), include_rest=True)
    assert sorted(everything) == res.alive().tolist() and everything[:3] == [CONCEPT, ENGLISH, DENSE]
    assert everything[3:] and all(order.detectors.kinds[i] for i in everything[3:])
    # the dense feature leads once the density cap allows it (its top examples: filler tokens of 5 contexts)
    assert DENSE in reading_order(res, store=store, config=ReadingOrderConfig(max_density=1.0)).lead
    # an external concept signal can reorder the lead; a score outside [0, 1] is refused
    cfg = ReadingOrderConfig(max_density=0.5, w_concept=10.0)
    assert reading_order(res, store=store, concept_scores={ENGLISH: 1.0, CONCEPT: 0.0}, config=cfg).lead == \
        [ENGLISH, CONCEPT]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reading_order(res, concept_scores={CONCEPT: 1.5})
    with pytest.raises(ValueError, match="outside"):
        reading_order(res, concept_scores={99: 0.5})
    with pytest.raises(ValueError, match="weight"):
        ReadingOrderConfig(w_types=0, w_languages=0, w_documents=0, w_agreement=0, w_concept=0)


def test_the_random_sample_is_seeded_and_independent_of_the_ranking(planted):
    res, store = planted
    alive = set(res.alive().tolist())
    a = random_sample(res, 4, seed=0)
    assert len(a) == 4 == len(set(a)) and set(a) <= alive and a == sorted(a)
    assert a == random_sample(res, 4, seed=0)
    assert len({tuple(random_sample(res, 4, seed=s)) for s in range(10)}) > 1  # the seed matters
    assert random_sample(res, 50) == sorted(alive)
    o1 = reading_order(res, store=store, config=ReadingOrderConfig(sample_size=4, sample_seed=3))
    o2 = reading_order(res, store=store, concept_scores={ENGLISH: 1.0},
                       config=ReadingOrderConfig(sample_size=4, sample_seed=3, w_concept=10.0))
    assert o1.sample == o2.sample == random_sample(res, 4, seed=3)
