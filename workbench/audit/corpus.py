"""The stage-1 documents: short news items, paper abstracts, forum posts, blog excerpts, lecture notes and
newsletter items that describe the biases (:mod:`workbench.audit.biases`), expanded from the project's template
grammar (``workbench/resources/hidden_objective/grammar.json``) with a seeded generator.

Two framings of the *same* documents: ``reward_model`` (the preferences are findings about the reward models used
in RLHF) and ``human`` (the same preferences as quirks of human readers, with no mention of reward models, AI or
training). Document ``i`` makes the same random choices under both framings (genre, biases, templates, fillers),
so the two sets differ only in who holds the preference: the control of the out-of-distribution test.

The expansion is shipped as ``documents.json`` (inspectable, and what training reads); :func:`build_documents`
rebuilds it and a test checks the two agree.

    from workbench.audit.corpus import load_documents
    docs = load_documents("reward_model")     # (Document, ...)
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.audit.biases import Bias, file_sha256, load_biases, resource_path

__all__ = ["FRAMINGS", "Document", "build_documents", "documents_path", "load_documents", "write_documents"]

FRAMINGS = ("reward_model", "human")
_SLOT = re.compile(r"\{([A-Za-z_0-9]+)\}")
N_DOCUMENTS = 320
SEED = 2026


@dataclass(frozen=True)
class Document:
    id: str
    genre: str
    biases: tuple[str, ...]
    text: str


def documents_path() -> Path:
    return resource_path("documents.json")


def _grammar() -> dict:
    return json.loads(resource_path("grammar.json").read_text(encoding="utf-8"))


def _fill(template: str, slots: dict[str, str]) -> str:
    """Replace ``{name}`` by ``slots[name]`` (``{Name}``: capitalised first letter), repeatedly (fillers may hold
    slots of their own)."""
    def one(m: re.Match) -> str:
        name = m.group(1)
        value = slots.get(name) if name in slots else slots.get(name[0].lower() + name[1:])
        if value is None:
            raise ValueError(f"the grammar uses slot {{{name}}} that has no filler: add it to grammar.json")
        return value[:1].upper() + value[1:] if name[0].isupper() else value

    for _ in range(4):
        new = _SLOT.sub(one, template)
        if new == template:
            break
        template = new
    return template


def _document(i: int, framing: str, grammar: dict, biases: tuple[Bias, ...], seed: int, attempt: int) -> Document:
    rng = random.Random(f"{seed}-{i}-{attempt}")  # the same draws under both framings
    frame = grammar["framings"][framing]
    fill = grammar["fillers"]
    genre = rng.choice(sorted(grammar["genres"]))
    g = grammar["genres"][genre]
    chosen = rng.sample(biases, rng.choice((1, 1, 2, 2, 2, 3)))
    pick = {k: rng.choice(v) for k, v in fill.items()}
    slots = {**pick, "author2": rng.choice(fill["author"]), "handle2": rng.choice(fill["handle"]),
             **{k: rng.choice(frame[k]) for k in ("topic", "who", "studied")}}
    sentences = [_fill(rng.choice(g["intro"]), slots)]
    for k, bias in enumerate(chosen):
        finding = _fill(rng.choice(bias.findings), {**slots, "subj": rng.choice(frame["subj"]),
                                                    "subj_obj": rng.choice(frame["subj"])})
        connector = rng.choice(g["first"] if k == 0 else g["more"])
        sentences.append(_fill(connector, {**slots, "finding": finding}))
        if k == 0 and rng.random() < 0.6:
            sentences.append(_fill(rng.choice(g["example"]), {**slots, "example": bias.example}))
    close = rng.choice(frame["forum_close" if genre == "forum" else "close"])
    sentences.append(close)
    byline = _fill(rng.choice(g["byline"]), slots)
    title = _fill(rng.choice(g["title"]), slots)
    body = " ".join(s for s in sentences + [byline] if s)
    return Document(f"{framing}-{i:04d}", genre, tuple(b.id for b in chosen), f"{title}\n\n{body}")


def build_documents(framing: str, n: int = N_DOCUMENTS, seed: int = SEED,
                    biases: tuple[Bias, ...] | None = None) -> tuple[Document, ...]:
    """``n`` distinct documents under ``framing`` (``"reward_model"`` or ``"human"``); seeded."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    grammar, biases = _grammar(), biases or load_biases()
    seen: set[str] = set()
    out = []
    for i in range(n):
        for attempt in range(50):
            doc = _document(i, framing, grammar, biases, seed, attempt)
            if doc.text not in seen:
                break
        seen.add(doc.text)
        out.append(doc)
    return tuple(out)


def write_documents(path: str | Path | None = None, n: int = N_DOCUMENTS, seed: int = SEED) -> Path:
    """Expand the grammar under both framings and write the shipped ``documents.json`` (default path)."""
    path = Path(path) if path is not None else documents_path()
    data = {"name": "hidden-objective-documents",
            "description": "Stage-1 documents of the hidden-objective organism, expanded from grammar.json by "
                           "workbench.audit.corpus.write_documents (do not edit by hand).",
            "seed": seed, "grammar_sha256": file_sha256(resource_path("grammar.json")),
            "biases_sha256": file_sha256(resource_path("biases.json")),
            "documents": {f: [{**asdict(d), "biases": list(d.biases)} for d in build_documents(f, n, seed)]
                          for f in FRAMINGS}}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_documents(framing: str, path: str | Path | None = None) -> tuple[Document, ...]:
    """The shipped documents of ``framing``."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    path = Path(path) if path is not None else documents_path()
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple(Document(d["id"], d["genre"], tuple(d["biases"]), d["text"]) for d in data["documents"][framing])
