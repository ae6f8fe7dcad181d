"""The texts two models are compared on: wiki documents and chat-formatted conversations (docs/methods.md §13).

A :class:`PairedDocument` is a text plus the character spans whose tokens may be paired (``None``: all of it). Chat
documents are rendered with the chat model's own template; only the message contents are kept, so the role
headers and template markers are never paired (a base model reads them as plain text, the chat model as special
tokens: comparing them would measure the template, not the models).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

__all__ = ["CHAT_DOC_OFFSET", "PairedDocument", "chat_document", "chat_documents", "wiki_documents"]

CHAT_DOC_OFFSET = 10 ** 12  # chat documents get ids from here on, far from the corpus's own ids


@dataclass(frozen=True)
class PairedDocument:
    doc_id: int
    text: str
    language: str | None = None
    kind: str = "wiki"  # "wiki", "chat" or anything a caller chooses
    keep_spans: tuple[tuple[int, int], ...] | None = None  # (lo, hi]: tokens ending there may be paired

    def to_dict(self) -> dict:
        return {"doc_id": self.doc_id, "language": self.language, "kind": self.kind}


def wiki_documents(languages: Sequence[str] = ("en", "es", "fr"), per_language: int | Sequence[int] = 100, *,
                   max_chars: int = 1200, split: str = "train") -> list[PairedDocument]:
    """The first ``per_language`` embedded wiki summaries of each language (one count for all, or one count per
    language in the order of ``languages``), cut to ``max_chars`` characters."""
    from workbench.data.corpus import iter_documents
    from workbench.data.corpus_spec import CorpusSpec

    counts = [int(per_language)] * len(languages) if isinstance(per_language, int) else [int(c) for c in per_language]
    if len(counts) != len(languages):
        raise ValueError(f"per_language has {len(counts)} counts for {len(languages)} languages {tuple(languages)}: "
                         "give one count, or one per language")
    out = []
    for lang, count in zip(languages, counts):
        docs: Iterator = iter_documents(CorpusSpec(languages=(lang,), split=split))
        for _, doc in zip(range(count), docs):
            out.append(PairedDocument(int(doc.doc_id), doc.text[:max_chars], doc.lang or lang, "wiki"))
    return out


def chat_document(tokenizer, messages: Sequence[tuple[str, str]], doc_id: int, language: str | None = "en"
                  ) -> PairedDocument:
    """A conversation ``[(role, content), ...]`` in the tokenizer's chat template; only contents are kept."""
    from workbench.data.chat import chat_prompt

    msgs = [{"role": role, "content": content} for role, content in messages]
    text = chat_prompt(tokenizer, msgs, add_generation_prompt=False)
    spans, cursor = [], 0
    for _, content in messages:
        at = text.find(content, cursor)
        if at < 0 or not content:
            continue
        spans.append((at, at + len(content)))
        cursor = at + len(content)
    if not spans:
        raise ValueError("none of the message contents appear in the rendered chat template: is this the chat "
                         "model's tokenizer?")
    return PairedDocument(int(doc_id), text, language, "chat", tuple(spans))


def chat_documents(chat_model, questions: Sequence[str], *, max_new_tokens: int = 64, seed: int = 0,
                   temperature: float = 0.7, progress: bool = True, first_id: int = CHAT_DOC_OFFSET,
                   tokenizer=None) -> list[PairedDocument]:
    """One conversation per question: the question, and the chat model's own sampled reply (seeded, offline),
    rendered with ``tokenizer``'s chat template (default: the chat model's); ids count up from ``first_id``."""
    from tqdm.auto import tqdm

    from workbench.data.chat import chat_prompt
    from workbench.intervene.generation import GenerationConfig, generate

    cfg = GenerationConfig(max_new_tokens=max_new_tokens, n_samples=1, temperature=temperature, seed=seed)
    out = []
    for i, q in enumerate(tqdm(list(questions), desc="chat replies", disable=not progress, dynamic_ncols=True)):
        reply = generate(chat_model, chat_prompt(chat_model, q), cfg).texts[0].strip() or "..."
        out.append(chat_document(tokenizer or chat_model.tokenizer, [("user", q), ("assistant", reply)], first_id + i))
    return out


def title_questions(documents: Sequence[PairedDocument], n: int, template: str = "What can you tell me about {}?"
                    ) -> list[str]:
    """Questions about the first words of ``n`` documents (their subjects), for chat documents that need no
    shipped prompt list."""
    out = []
    for doc in documents[:n]:
        subject = " ".join(doc.text.split()[:3]).rstrip(".,;:")
        out.append(template.format(subject))
    return out
