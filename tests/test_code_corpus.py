"""The stdlib code corpus: held-out split by file, stable ids, the mixed wiki + stdlib stream."""
import itertools

import pytest

from workbench.data.code_corpus import CODE_ID_BASE, code_files, is_heldout_file
from workbench.data.corpus import CorpusSpec, document, iter_documents


def test_stdlib_split_is_disjoint_by_file_and_covers_every_file():
    train = {d.title for d in iter_documents(CorpusSpec(source="stdlib"))}
    held = {d.title for d in iter_documents(CorpusSpec(source="stdlib", split="heldout"))}
    assert train and held
    assert not train & held
    names = {n for n, _ in code_files("py")}
    assert train | held <= names
    assert all(is_heldout_file("py", n, 0.05) for n in held)
    assert not any("/test/" in f"/{n}" or n.split("/")[-1].startswith("test_") for n in train | held)


def test_heldout_grows_monotonically_with_fraction():
    small = {d.title for d in iter_documents(CorpusSpec(source="stdlib", split="heldout", heldout_fraction=0.05))}
    big = {d.title for d in iter_documents(CorpusSpec(source="stdlib", split="heldout", heldout_fraction=0.2))}
    assert small < big


def test_document_ids_look_back_up():
    doc = next(iter_documents(CorpusSpec(source="stdlib", split="heldout")))
    assert doc.doc_id >= CODE_ID_BASE and doc.lang == "py"
    again = document(CorpusSpec(source="stdlib"), doc.doc_id)
    assert (again.title, again.text) == (doc.title, doc.text)


def test_mixed_stream_holds_wiki_and_code_in_about_equal_characters():
    spec = CorpusSpec(source="wiki+stdlib", languages=("en",))
    docs = list(itertools.islice(iter_documents(spec), 400))
    chars = {"en": 0, "py": 0}
    for d in docs:
        chars[d.lang] += len(d.text)
    assert chars["en"] > 0 and chars["py"] > 0
    assert 0.7 < chars["en"] / chars["py"] < 1.4
    wiki_doc = next(d for d in docs if d.lang == "en")
    assert document(spec, wiki_doc.doc_id).text == wiki_doc.text


def test_fingerprints_differ_by_source_and_split():
    a = CorpusSpec(source="stdlib").fingerprint()
    assert a == CorpusSpec(source="stdlib").fingerprint()
    assert a != CorpusSpec(source="stdlib", split="heldout").fingerprint()
    assert a != CorpusSpec(source="wiki+stdlib").fingerprint()


def test_headers_missing_gives_a_clear_error(monkeypatch):
    import workbench.data.code_files as cc

    monkeypatch.setattr(cc, "header_roots", lambda: [])
    cc.code_files.cache_clear()
    try:
        with pytest.raises(ValueError, match="no C headers"):
            list(iter_documents(CorpusSpec(source="headers")))
    finally:
        cc.code_files.cache_clear()
