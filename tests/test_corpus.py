"""Tests for workbench.data.corpus on the real embedded corpus and the real Gemma tokenizer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from workbench.data.corpus import (
    WIKI_ID_STRIDE,
    CorpusSpec,
    Document,
    PackedBatch,
    corpus_stats,
    document,
    iter_documents,
    pack_contexts,
    packed_contexts,
    wiki_article,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def tok():
    """The Gemma 3 tokenizer as the package loads it (from the model cache's tokenizer folder, written by the first
    model load; a few seconds)."""
    from workbench.data.models import load_tokenizer

    return load_tokenizer("gemma-3-270m")


@pytest.fixture(scope="session")
def wiki_all():
    return list(iter_documents(CorpusSpec(split="all")))


def _key(doc: Document) -> tuple[str | None, str | None]:
    return doc.lang, doc.title


def _first(spec: CorpusSpec, n: int) -> list[Document]:
    out = []
    for doc in iter_documents(spec):
        out.append(doc)
        if len(out) == n:
            break
    return out


# -------------------------------------------------------------------------------------------- spec
def test_spec_roundtrip_and_fingerprint():
    spec = CorpusSpec(languages=("es", "fr"), split="heldout", seed=3)
    d = spec.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert CorpusSpec.from_dict(d) == spec
    assert CorpusSpec.from_dict({}) == CorpusSpec()
    fp = spec.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == CorpusSpec(languages=("fr", "es"), split="heldout", seed=3).fingerprint()  # order-free
    others = {
        CorpusSpec().fingerprint(),
        CorpusSpec(seed=1).fingerprint(),
        CorpusSpec(split="heldout").fingerprint(),
        CorpusSpec(languages=("en",)).fingerprint(),
        CorpusSpec(heldout_fraction=0.1).fingerprint(),
    }
    assert len(others) == 5
    # deterministic across processes
    code = "from workbench.data.corpus import CorpusSpec; print(CorpusSpec(languages=('es','fr'), split='heldout', seed=3).fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == fp, out.stderr


def test_local_fingerprint_tracks_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one\n\ntwo\n")
    spec = CorpusSpec(source=str(f))
    fp = spec.fingerprint()
    assert fp == CorpusSpec(source=str(f)).fingerprint()
    f.write_text("one\n\ntwo\n\nthree\n")
    assert CorpusSpec(source=str(f)).fingerprint() != fp


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"languages": ("en", "de")}, r"Unknown language.*'de'.*en, es, fr"),
        ({"languages": ()}, "languages is empty"),
        ({"split": "test"}, r"split='test' is not one of"),
        ({"heldout_fraction": 1.5}, "between 0 and 1"),
        ({"source": ""}, "source must be 'wiki'"),
        ({"source": "hf:"}, "names no dataset"),
    ],
)
def test_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorpusSpec(**kwargs)


def test_from_dict_unknown_field():
    with pytest.raises(ValueError, match="unknown CorpusSpec field.*known ones are"):
        CorpusSpec.from_dict({"source": "wiki", "langs": ["en"]})


# -------------------------------------------------------------------------------------------- wiki
def test_wiki_deterministic_and_seeded(wiki_all):
    a = _first(CorpusSpec(), 200)
    b = _first(CorpusSpec(), 200)
    assert a == b
    c = _first(CorpusSpec(seed=1), 200)
    assert [_key(d) for d in a] != [_key(d) for d in c]
    # the first documents interleave the languages
    assert {d.lang for d in a[:30]} == {"en", "es", "fr"}
    # a seed changes the order, not the set
    train0 = {_key(d) for d in iter_documents(CorpusSpec())}
    train1 = {_key(d) for d in iter_documents(CorpusSpec(seed=1))}
    assert train0 == train1


def test_wiki_split_disjoint_and_stable(wiki_all):
    train = {_key(d) for d in iter_documents(CorpusSpec(split="train"))}
    held = {_key(d) for d in iter_documents(CorpusSpec(split="heldout"))}
    assert not train & held
    assert train | held == {_key(d) for d in wiki_all}
    assert 0.03 < len(held) / len(wiki_all) < 0.07
    # stable when the languages or the seed change
    held_es = {_key(d) for d in iter_documents(CorpusSpec(languages=("es",), split="heldout", seed=7))}
    assert held_es == {k for k in held if k[0] == "es"}
    held_enfr = {_key(d) for d in iter_documents(CorpusSpec(languages=("fr", "en"), split="heldout"))}
    assert held_enfr == {k for k in held if k[0] in ("en", "fr")}
    # a larger fraction only adds held-out articles
    held10 = {_key(d) for d in iter_documents(CorpusSpec(split="heldout", heldout_fraction=0.1))}
    assert held < held10


def test_wiki_languages_and_golden_gate(wiki_all):
    es = list(iter_documents(CorpusSpec(languages=("es",), split="all")))
    assert es and all(d.lang == "es" for d in es)
    assert len(es) == sum(d.lang == "es" for d in wiki_all)
    titles = {_key(d) for d in wiki_all}
    for lang, title in [("en", "Golden Gate Bridge"), ("es", "Puente Golden Gate"), ("fr", "Pont du Golden Gate")]:
        assert (lang, title) in titles
        doc = wiki_article(lang, title)
        assert doc is not None and doc.lang == lang and doc.title == title
        assert "Golden Gate" in doc.text
        assert document(CorpusSpec(), doc.doc_id) == doc
    assert wiki_article("en", "No Such Article Anywhere") is None
    with pytest.raises(ValueError, match="Unknown language"):
        wiki_article("de", "Golden Gate Bridge")


def test_wiki_doc_ids(wiki_all):
    ids = [d.doc_id for d in wiki_all]
    assert len(set(ids)) == len(ids)
    for d in wiki_all:
        lang_index, rank = divmod(d.doc_id, WIKI_ID_STRIDE)
        assert ("en", "es", "fr")[lang_index] == d.lang
    # rank = position in sorted key order
    en = sorted((d for d in wiki_all if d.lang == "en"), key=lambda d: d.doc_id)
    assert [d.title for d in en] == sorted(d.title for d in en)
    assert document(CorpusSpec(languages=("en",)), en[5].doc_id) == en[5]
    with pytest.raises(KeyError):
        document(CorpusSpec(), 9 * WIKI_ID_STRIDE)
    with pytest.raises(KeyError):
        document(CorpusSpec(), 999_999)


def test_wiki_empty_split():
    with pytest.raises(ValueError, match="has no documents"):
        iter_documents(CorpusSpec(split="heldout", heldout_fraction=0.0))


# ----------------------------------------------------------------------------------------- packing
def _check_packing(batches: list[PackedBatch], tok, context_size: int, prepend_bos: bool) -> None:
    tokens = np.concatenate([b.tokens for b in batches])
    doc_ids = np.concatenate([b.doc_ids for b in batches])
    pos = np.concatenate([b.positions for b in batches])
    assert tokens.dtype == np.int32 and doc_ids.dtype == np.int64 and pos.dtype == np.int32
    assert tokens.shape[1] == context_size and tokens.shape == doc_ids.shape == pos.shape
    if prepend_bos:
        assert (tokens[:, 0] == tok.bos_token_id).all()
        assert (pos[:, 0] == -1).all()
        assert (doc_ids[:, 0] == doc_ids[:, 1]).all()
        tokens, doc_ids, pos = tokens[:, 1:], doc_ids[:, 1:], pos[:, 1:]
    assert (tokens != tok.bos_token_id).all()
    # the stream continues across context boundaries: flatten and check doc/position continuity
    t, d, p = tokens.ravel(), doc_ids.ravel(), pos.ravel()
    same = d[1:] == d[:-1]
    assert (p[1:][same] == p[:-1][same] + 1).all()
    new = ~same
    assert (p[1:][new] == 0).all()
    assert (t[:-1][new] == tok.eos_token_id).all()  # each document ends with EOS
    assert (p >= 0).all()


def test_pack_contexts_layout_and_content(tok):
    spec = CorpusSpec(languages=("es", "fr"))
    n_tokens = 128 * 40 + 1  # rounds up to 41 contexts
    batches = list(packed_contexts(spec, tok, n_tokens, context_size=128, batch_contexts=16))
    assert [len(b) for b in batches] == [16, 16, 9]
    _check_packing(batches, tok, 128, prepend_bos=True)
    # the tokens are the documents' own tokens, at their positions
    docs = {d.doc_id: d for d in _first(spec, 200)}
    body_t = np.concatenate([b.tokens[:, 1:] for b in batches]).ravel()
    body_d = np.concatenate([b.doc_ids[:, 1:] for b in batches]).ravel()
    body_p = np.concatenate([b.positions[:, 1:] for b in batches]).ravel()
    second = list(dict.fromkeys(body_d.tolist()))[1]  # a document that starts inside the stream
    ids = tok(docs[second].text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    mask = body_d == second
    assert body_p[mask][0] == 0
    assert body_t[mask].tolist() == ids[: mask.sum()]
    assert {docs[i].lang for i in body_d.tolist()} <= {"es", "fr"}


def test_pack_contexts_deterministic_and_seeded(tok):
    run = lambda seed: np.concatenate(  # noqa: E731
        [b.tokens for b in packed_contexts(CorpusSpec(seed=seed), tok, 64 * 20, context_size=64)]
    )
    a, b, c = run(0), run(0), run(1)
    assert a.shape == (20, 64)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pack_without_bos_and_streaming(tok):
    def endless():  # an unbounded source: packing must stay lazy
        i = 0
        while True:
            yield Document(doc_id=i, text=f"Document number {i}. " * 5)
            i += 1

    gen = pack_contexts(tok, endless(), context_size=32, prepend_bos=False, batch_contexts=8)
    first = next(gen)
    gen.close()
    assert first.tokens.shape == (8, 32)
    _check_packing([first], tok, 32, prepend_bos=False)
    assert first.doc_ids[0, 0] == 0 and first.positions[0, 0] == 0


def test_pack_drops_partial_context(tok):
    docs = [Document(0, "Hello world, this is a tiny document."), Document(1, "And a second one.")]
    n = len(tok([d.text for d in docs], add_special_tokens=False)["input_ids"][0]) + 1
    n += len(tok(docs[1].text, add_special_tokens=False)["input_ids"]) + 1
    batches = list(pack_contexts(tok, docs, context_size=4, batch_contexts=2))
    total = sum(len(b) for b in batches)
    assert total == n // 3  # 3 stream tokens per context after the BOS
    assert all(len(b) <= 2 for b in batches)
    with pytest.raises(ValueError, match="context_size"):
        pack_contexts(tok, docs, context_size=1)


def test_heldout_packing_has_no_train_docs(tok):
    held_ids = {d.doc_id for d in iter_documents(CorpusSpec(split="heldout"))}
    batches = list(packed_contexts(CorpusSpec(split="heldout"), tok, 128 * 32))
    assert set(np.concatenate([b.doc_ids for b in batches]).ravel().tolist()) <= held_ids


def test_packed_contexts_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="n_tokens=0 must be > 0"):
        packed_contexts(CorpusSpec(), tok, 0)
    f = tmp_path / "small.txt"
    f.write_text("A short paragraph.\n\nAnother short paragraph.\n")
    gen = packed_contexts(CorpusSpec(source=str(f), split="all"), tok, 10_000, context_size=4)
    with pytest.raises(ValueError, match=r"ran out after \d+ contexts .*tokens in 2 documents.*n_tokens=10000"):
        list(gen)


# ------------------------------------------------------------------------------------------- local
def test_local_txt_file_and_dir(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("First paragraph\nstill first.\n\nSecond paragraph.\n\n\n\nThird.\n")
    docs = list(iter_documents(CorpusSpec(source=str(f), split="all")))
    assert [d.text for d in docs] == ["First paragraph\nstill first.", "Second paragraph.", "Third."]
    assert [d.doc_id for d in docs] == [0, 1, 3]  # the empty record between the blank lines keeps its id
    assert docs[0].lang is None and docs[0].title == "one.txt#0"
    assert document(CorpusSpec(source=str(f)), 3).text == "Third."

    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("bee\n\nstill bee")
    (d / "a.txt").write_text("ay")
    (d / "sub" / "c.txt").write_text("sea")
    (d / "notes.md").write_text("ignored")
    docs = list(iter_documents(CorpusSpec(source=str(d), split="all")))
    assert [(x.doc_id, x.title, x.text) for x in docs] == [
        (0, "a.txt", "ay"), (1, "b.txt", "bee\n\nstill bee"), (2, "sub/c.txt", "sea")
    ]


def test_local_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"Record {i} says hello." for i in range(200)]
    jl = tmp_path / "data.jsonl"
    jl.write_text("\n".join(json.dumps({"body": t, "n": i}) for i, t in enumerate(texts)) + "\n")
    pqf = tmp_path / "data.parquet"
    pq.write_table(pa.table({"body": texts, "n": list(range(200))}), pqf, row_group_size=64)
    for path in (jl, pqf):
        spec = CorpusSpec(source=str(path), text_field="body", split="all")
        docs = list(iter_documents(spec))
        assert [d.text for d in docs] == texts and [d.doc_id for d in docs] == list(range(200))
        train = {d.doc_id for d in iter_documents(CorpusSpec(source=str(path), text_field="body"))}
        held = {d.doc_id for d in iter_documents(CorpusSpec(source=str(path), text_field="body", split="heldout"))}
        assert held and not train & held and train | held == set(range(200))
        with pytest.raises(ValueError, match="'text'.*text_field"):
            list(iter_documents(CorpusSpec(source=str(path), split="all")))
    # a directory mixing the formats: files in sorted order, ids running on
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps({"text": "from jsonl"}) + "\n")
    pq.write_table(pa.table({"text": ["from parquet"]}), d / "b.parquet")
    (d / "c.txt").write_text("from txt")
    docs = list(iter_documents(CorpusSpec(source=str(d), split="all")))
    assert [(x.doc_id, x.text) for x in docs] == [(0, "from jsonl"), (1, "from parquet"), (2, "from txt")]


def test_local_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or directory.*source must be 'wiki'"):
        iter_documents(CorpusSpec(source=str(tmp_path / "missing.txt")))
    bad = tmp_path / "data.csv"
    bad.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported extension '\.csv'.*\.txt, \.jsonl, \.parquet"):
        iter_documents(CorpusSpec(source=str(bad)))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.txt.*has no documents.*expected at least one non-empty"):
        list(iter_documents(CorpusSpec(source=str(empty))))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="directory with no .*files"):
        iter_documents(CorpusSpec(source=str(tmp_path / "emptydir")))
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"text": "  "}) + "\n" + json.dumps({"text": ""}) + "\n")
    with pytest.raises(ValueError, match="found 2 record"):
        list(iter_documents(CorpusSpec(source=str(blank), split="all")))
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "broken\n')
    with pytest.raises(ValueError, match=r"corrupt\.jsonl, line 2: invalid JSON"):
        list(iter_documents(CorpusSpec(source=str(corrupt), split="all")))
    with pytest.raises(ValueError, match="no such file"):
        CorpusSpec(source=str(tmp_path / "nope")).fingerprint()


def test_hf_hub_unreachable():
    """Offline (HF_HUB_OFFLINE=1) an hf: source fails fast with a ValueError pointing at the fixes.
    Run in a subprocess: huggingface_hub reads HF_HUB_OFFLINE once, at import time."""
    code = textwrap.dedent(
        """
        from workbench.data.corpus import CorpusSpec, iter_documents
        try:
            iter_documents(CorpusSpec(source="hf:no-such-user/no-such-dataset"))
        except ValueError as err:
            print("VALUEERROR", err)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert "VALUEERROR" in out.stdout, out.stderr[-2000:]
    msg = out.stdout
    assert "unreachable" in msg and "source='wiki'" in msg and "to_parquet" in msg and "HF_HUB_OFFLINE" in msg


# ------------------------------------------------------------------------------------------- stats
def test_corpus_stats(tok, tmp_path):
    stats = corpus_stats(CorpusSpec(split="all"))
    assert json.loads(json.dumps(stats)) == stats
    langs = stats["languages"]
    assert langs["en"]["documents"] > 9000 and langs["fr"]["documents"] > 9000
    assert 6000 < langs["es"]["documents"] <= 6239
    assert all(row["characters"] > 100 * row["documents"] for row in langs.values())
    assert stats["total"]["documents"] == sum(r["documents"] for r in langs.values())
    assert "tokens" not in langs["en"]

    held = corpus_stats(CorpusSpec(split="heldout"), tok)
    assert set(held["languages"]) == {"en", "es", "fr"}
    for row in held["languages"].values():
        assert 0 < row["documents"] < 600 and row["characters"] / 8 < row["tokens"] < row["characters"]

    f = tmp_path / "c.jsonl"
    texts = ["Hello world.", "Bonjour le monde."]
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    local = corpus_stats(CorpusSpec(source=str(f), split="all"), tok)
    expected = sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
    assert local["languages"] == {"unknown": {"documents": 2, "characters": 29, "tokens": expected}}
