"""The paired store on the two embedded tokenizers (tiny random models stand in for the networks, so this runs in
seconds): alignment on crafted strings (numbers, accents, words split differently), rows paired token for token,
BOS and chat-template tokens left out, checksums, an exact resume after an interruption, and the trainer's source."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.models import load_tokenizer
from workbench.data.store_reader import ActivationStore
from workbench.diffing import paired_store as ps
from workbench.diffing.alignment import align_offsets, tokenize_with_offsets
from workbench.diffing.documents import PairedDocument, chat_document
from workbench.diffing.paired_store import PairConfig, PairedStore, harvest_pair, plan_alignment


@pytest.fixture(scope="module")
def tokenizers():
    return load_tokenizer("gemma-3-270m"), load_tokenizer("smollm2-135m-instruct")


def _tiny(tokenizer, d_model, seed):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=d_model, d_head=4, n_heads=2, n_ctx=256, d_vocab=len(tokenizer),
                                  act_fn="gelu", normalization_type="LN", seed=seed)
    model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side="right")
    model.eval()
    return model


@pytest.fixture(scope="module")
def tiny_models(tokenizers):
    torch.set_num_threads(1)
    return _tiny(tokenizers[0], 16, 0), _tiny(tokenizers[1], 12, 1)


CRAFTED = ["In 1987 there were 12,345 people.", "Él comió una piña en São Paulo; ¿qué más?",
           "L'été dernier, naïvement, j'ai mangé des crêpes.", "unbelievably antidisestablishmentarianism"]


@pytest.mark.parametrize("text", CRAFTED)
def test_real_tokenizers_pair_positions_that_have_read_the_same_text(tokenizers, text):
    ids_a, off_a = tokenize_with_offsets(tokenizers[0], text)
    ids_b, off_b = tokenize_with_offsets(tokenizers[1], text)
    ia, ib = align_offsets(off_a, off_b)
    assert ia and len(ia) == len(ib)
    assert ia == sorted(ia) and ib == sorted(ib)
    for i, j in zip(ia, ib):
        end = off_a[i][1]
        assert off_b[j][1] == end
        # both decoded prefixes are the text up to that character
        assert tokenizers[0].decode(ids_a[: i + 1]) == text[:end]
        assert tokenizers[1].decode(ids_b[: j + 1]) == text[:end]
    assert off_a[ia[-1]][1] == len(text)  # the end of the text is always shared


def test_english_keeps_more_of_smollm2_than_spanish_and_french(tokenizers):
    docs = [PairedDocument(0, "The cat sat on the mat and looked at the birds in the garden.", "en"),
            PairedDocument(1, "El gato se sentó en la alfombra y miró los pájaros del jardín.", "es"),
            PairedDocument(2, "Le chat s'est assis sur le tapis et a regardé les oiseaux du jardin.", "fr")]
    _, stats = plan_alignment(*tokenizers, docs)
    f = stats.fractions()
    assert f["b"]["en"] > f["b"]["es"] and f["b"]["en"] > f["b"]["fr"]
    assert all(0 < v <= 1 for side in f.values() for v in side.values())


def test_chat_documents_pair_only_message_contents(tokenizers):
    doc = chat_document(tokenizers[1], [("user", "What is 2+2?"), ("assistant", "It is 4.")], 7)
    plans, _ = plan_alignment(*tokenizers, [doc])
    _, off_a = tokenize_with_offsets(tokenizers[0], doc.text)
    ends = [off_a[i][1] for i in plans[0].idx_a]
    assert ends and all(any(lo < e <= hi for lo, hi in doc.keep_spans) for e in ends)
    special = set(tokenizers[1].all_special_ids)
    assert not any(plans[0].ids_b[j] in special for j in plans[0].idx_b)


DOCS = [PairedDocument(i, t, lang) for i, (t, lang) in enumerate([
    ("The river flows through 3 cities and 12 villages before reaching the sea.", "en"),
    ("La ciudad más poblada del país está situada junto al océano Atlántico.", "es"),
    ("Le château fut construit au XIIe siècle par des moines bénédictins.", "fr"),
    ("Mathematics is the study of numbers, shapes, quantities and their relations.", "en"),
] * 3)]


def test_paired_store_rows_are_aligned_token_for_token(tiny_models, tmp_path):
    a, b = tiny_models
    cfg = PairConfig(max_tokens=32, context_size=8, shard_contexts=2, batch_docs=3)
    paired = harvest_pair(a, b, DOCS, tmp_path / "p", hook_a="blocks.1.hook_resid_post",
                          hook_b="blocks.0.hook_resid_post", config=cfg, progress=False)
    assert paired.n_tokens == paired.b.n_tokens and paired.n_tokens % 8 == 0 and paired.n_tokens > 0
    np.testing.assert_array_equal(paired.a.doc_ids(), paired.b.doc_ids())
    ActivationStore.open(tmp_path / "p" / "a", verify="full")  # every shard's sha256
    # each row is each model's activation at its own token of the same text position
    plans, _ = plan_alignment(a.tokenizer, b.tokenizer, DOCS, 32)
    doc = DOCS[1]
    rows = np.nonzero(paired.doc_ids() == doc.doc_id)[0]
    pos_a = paired.a.positions().reshape(-1)[rows]
    pos_b = paired.b.positions().reshape(-1)[rows]
    assert list(pos_a) == plans[1].idx_a[: len(rows)] and list(pos_b) == plans[1].idx_b[: len(rows)]
    ids_a = [a.tokenizer.bos_token_id] + plans[1].ids_a
    with torch.no_grad():
        _, cache = a.run_with_cache(torch.tensor([ids_a]), names_filter="blocks.1.hook_resid_post")
    want = cache["blocks.1.hook_resid_post"][0, torch.as_tensor(pos_a) + 1]  # +1: BOS is run but never stored
    got = paired.load(scaled=False)[torch.as_tensor(rows), :16]
    torch.testing.assert_close(got, want.to(torch.bfloat16).float(), rtol=0, atol=0)
    assert set(paired.languages()) == {"en", "es", "fr"}
    assert set(paired.alignment_fractions()["a"]) == {"en", "es", "fr", "all"}
    # the trainer's source: scaled so each model's mean norm is sqrt(d_model)
    x = paired.source().data
    assert x.shape[1] == 28
    assert float(x[:, :16].norm(dim=1).mean()) == pytest.approx(16 ** 0.5, rel=1e-3)
    assert float(x[:, 16:].norm(dim=1).mean()) == pytest.approx(12 ** 0.5, rel=1e-3)
    assert paired.source().metadata.extra["crosscoder"]["d_models"] == [16, 12]
    # variance balance: each model's centred activations have mean squared norm d_model
    paired.balance("variance")
    x = paired.load()
    for part, d in ((x[:, :16], 16), (x[:, 16:], 12)):
        assert float((part - part.mean(0)).pow(2).sum(1).mean()) == pytest.approx(d, rel=1e-3)
    assert paired.source().metadata.extra["crosscoder"]["balance"] == "variance"
    with pytest.raises(ValueError, match="use 'norm' or 'variance'"):
        paired.balance("other")


def test_interrupted_paired_harvest_resumes_to_the_same_store(tiny_models, tmp_path, monkeypatch):
    a, b = tiny_models
    cfg = PairConfig(max_tokens=32, context_size=8, shard_contexts=2, batch_docs=2)
    kw = dict(hook_a="blocks.1.hook_resid_post", hook_b="blocks.0.hook_resid_post", config=cfg, progress=False)
    whole = harvest_pair(a, b, DOCS, tmp_path / "whole", **kw)
    real, calls = ps._forward, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ps, "_forward", dying)
    with pytest.raises(KeyboardInterrupt):
        harvest_pair(a, b, DOCS, tmp_path / "cut", **kw)
    assert not (tmp_path / "cut" / "pair.json").exists()
    monkeypatch.setattr(ps, "_forward", real)
    resumed = harvest_pair(a, b, DOCS, tmp_path / "cut", **kw)
    torch.testing.assert_close(resumed.load(), whole.load(), rtol=0, atol=0)
    np.testing.assert_array_equal(resumed.doc_ids(), whole.doc_ids())
    assert PairedStore.open(tmp_path / "cut").n_tokens == whole.n_tokens
