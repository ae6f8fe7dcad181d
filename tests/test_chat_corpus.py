"""The wiki + chat-transcript corpus (workbench.persona.chat_corpus): spreading, rendering, caching."""
import json
from pathlib import Path

import pytest

from workbench.persona.chat_corpus import ChatCorpusConfig, chat_corpus, chat_transcripts, interleave


def test_interleave_keeps_every_item_in_order_and_spreads_the_minor_ones():
    major, minor = list(range(100)), ["a", "b", "c", "d"]
    out = interleave(major, minor)
    assert [x for x in out if isinstance(x, int)] == major and [x for x in out if isinstance(x, str)] == minor
    positions = [out.index(m) for m in minor]
    gaps = [b - a for a, b in zip([0, *positions], [*positions, len(out)])]
    assert max(gaps) - min(gaps) <= 2  # even spacing: every prefix of the list carries its share
    assert interleave([], ["x"]) == ["x"] and interleave([1, 2], []) == [1, 2]


def test_config_rejects_bad_counts():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_samples"):
            ChatCorpusConfig(n_samples=bad)
    with pytest.raises(ValueError, match="traits is empty"):
        ChatCorpusConfig(traits=())


@pytest.fixture(scope="module")
def smollm():
    from workbench.data.models import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.mark.slow
def test_chat_corpus_mixes_rendered_turns_into_the_wiki_and_is_written_once(smollm, tmp_path, monkeypatch):
    from workbench.data.corpus import iter_documents
    from workbench.persona.traits import load_trait

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    cfg = ChatCorpusConfig(traits=("pirate",), n_questions=2, n_samples=2, max_new_tokens=6, languages=("en",))
    rows = chat_transcripts(smollm, cfg, progress=False)
    pair = load_trait("pirate").pairs[0]
    assert {r["positive"] for r in rows} == {True, False} and len(rows) <= 2 * 2 * 2
    for r in rows:
        system = pair.positive if r["positive"] else pair.negative
        assert system in r["text"] and r["question"] in r["text"]
        assert r["text"].endswith(smollm.tokenizer.eos_token)  # the turn is closed, as the model ends its turns
        assert r["text"].count("<|im_start|>assistant") == 1

    spec = chat_corpus(smollm, cfg, n_tokens=3000, progress=False)
    path = Path(spec.source)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    chats = [i for i, r in enumerate(records) if r["source"].startswith("chat:pirate:")]
    wiki = [r for r in records if r["source"] == "wiki:en"]
    assert len(chats) == len(rows) and wiki
    assert 0 < chats[0] and chats[-1] < len(records) - 1  # spread between wiki documents, not piled at one end
    n_wiki_tokens = sum(len(smollm.tokenizer(r["text"])["input_ids"]) for r in wiki)
    assert 3000 * 0.5 < n_wiki_tokens < 3000 * 1.1 + 2000  # about the tokens asked for, not the whole wiki
    assert any(d.text.startswith("<|im_start|>system") for d in iter_documents(spec))

    mtime = path.stat().st_mtime_ns  # the file's mtime is in the corpus fingerprint: a second call must not rewrite
    assert chat_corpus(smollm, cfg, n_tokens=3000, progress=False) == spec and path.stat().st_mtime_ns == mtime
    assert chat_corpus(smollm, cfg, n_tokens=5000, progress=False).source != spec.source
