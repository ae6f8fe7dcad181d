"""A training corpus for an SAE that should see the assistant as well as the world: the embedded wiki text with the
chat model's own transcripts spread through it (docs/methods.md §34).

    from workbench.persona.chat_corpus import ChatCorpusConfig, chat_corpus
    spec = chat_corpus(model, ChatCorpusConfig(), n_tokens=262_144 + 16_384)   # a CorpusSpec of one .jsonl file
    study = standard_sae("smollm2-135m-instruct", model=model, corpus=spec, n_tokens=262_144, ...)

The transcripts are the model's sampled replies to the shipped traits' extraction questions, under each trait's
first contrastive pair of system prompts (the trait shown, and its opposite), rendered with the model's chat template
and closed by its end-of-turn token, so the SAE trains on assistant turns both showing and not showing each trait.
The wiki documents come in the standard corpus's order until they hold ``n_tokens`` (counted with the model's
tokenizer, plus a tenth for packing), and the transcripts are spread evenly between them
(:func:`interleave`), so that any prefix of the file, the part a harvest of fewer tokens reads, has its share of chat.

The transcripts are cached (by model, traits' file hashes and sampling settings), and so is the written file: its
fingerprint (path, size, mtime) keys the stores harvested from it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, TypeVar

from tqdm.auto import tqdm

from workbench.core.cache import cached
from workbench.core.home import cache_dir
from workbench.core.persist import atomic_write_text
from workbench.core.protocols import ModelLike
from workbench.data.corpus import CorpusSpec

__all__ = ["ChatCorpusConfig", "chat_corpus", "chat_transcripts", "interleave"]

T = TypeVar("T")


@dataclass(frozen=True)
class ChatCorpusConfig:
    """Which transcripts: ``traits`` (shipped trait names), ``n_questions`` extraction questions of each, under both
    system prompts of its first pair, ``n_samples`` replies of ``max_new_tokens`` each; ``languages`` of the wiki
    part."""

    traits: tuple[str, ...] = ("pirate", "french", "sycophancy", "evil", "human")
    n_questions: int = 8
    n_samples: int = 4
    max_new_tokens: int = 64
    seed: int = 0
    languages: tuple[str, ...] = ("en", "es", "fr")

    def __post_init__(self) -> None:
        for name in ("n_questions", "n_samples", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ChatCorpusConfig.{name}={value!r} must be a whole number >= 1")
        if not self.traits:
            raise ValueError("ChatCorpusConfig.traits is empty: name at least one shipped trait, e.g. ('pirate',)")


def interleave(major: Sequence[T], minor: Sequence[T]) -> list[T]:
    """Every item of both, in order, with ``minor``'s spread evenly through ``major``'s: item j of ``minor`` goes
    after the first round((j + 1) * len(major) / (len(minor) + 1)) items of ``major``."""
    out: list[T] = []
    slots = [round((j + 1) * len(major) / (len(minor) + 1)) for j in range(len(minor))]
    j = 0
    for i in range(len(major) + 1):
        while j < len(minor) and slots[j] <= i:
            out.append(minor[j])
            j += 1
        if i < len(major):
            out.append(major[i])
    return out


def _model_name(model: ModelLike) -> str:
    return str(getattr(model, "workbench_name", None) or getattr(model.cfg, "model_name", "model"))


def _transcripts_key(model: ModelLike, cfg: ChatCorpusConfig) -> dict:
    from workbench.persona.traits import load_trait

    return {"model": _model_name(model), "config": asdict(cfg), "version": 1,
            "traits": {t: load_trait(t).sha256 for t in cfg.traits}}


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def chat_transcripts(model: ModelLike, cfg: ChatCorpusConfig | None = None, *, progress: bool = True) -> list[dict]:
    """The model's replies as ``{"trait", "positive", "question", "text"}`` records, ``text`` the whole rendered
    turn (system, user, assistant, end of turn). Empty replies are dropped. Cached."""
    from workbench.data.chat import chat_prompt
    from workbench.intervene.generation import GenerationConfig, generate
    from workbench.persona.traits import load_trait

    cfg = cfg or ChatCorpusConfig()
    key = _transcripts_key(model, cfg)
    path = cache_dir("persona") / "chat_corpus" / f"transcripts-{_digest(key)}.json"

    def compute() -> list[dict]:
        end = str(model.tokenizer.eos_token or "")
        jobs = []
        for t in cfg.traits:
            trait = load_trait(t)
            pair = trait.pairs[0]
            for q in trait.extract_questions[: cfg.n_questions]:
                jobs += [(t, True, pair.positive, q), (t, False, pair.negative, q)]
        rows = []
        for i, (t, positive, system, q) in enumerate(tqdm(jobs, desc="chat transcripts", disable=not progress)):
            prompt = chat_prompt(model, q, system=system)
            gen = generate(model, prompt, GenerationConfig(max_new_tokens=cfg.max_new_tokens,
                                                           n_samples=cfg.n_samples, seed=cfg.seed + i))
            for reply in gen.texts:
                if reply.strip():
                    rows.append({"trait": t, "positive": positive, "question": q,
                                 "text": prompt + reply.strip() + end})
        return rows

    return cached(path, key, compute, load=lambda p: json.loads(Path(p).read_text(encoding="utf-8")),
                  save=lambda r, p: atomic_write_text(p, json.dumps(r, ensure_ascii=False)))


def chat_corpus(model: ModelLike, cfg: ChatCorpusConfig | None = None, *, n_tokens: int,
                progress: bool = True) -> CorpusSpec:
    """A :class:`CorpusSpec` of one .jsonl file: wiki documents holding about ``n_tokens`` tokens (module
    docstring) with the transcripts of :func:`chat_transcripts` spread through them. Written once per setting."""
    from workbench.data.corpus import iter_documents

    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens={n_tokens!r} must be a whole number >= 1 (the tokens the corpus must hold)")
    cfg = cfg or ChatCorpusConfig()
    chats = chat_transcripts(model, cfg, progress=progress)
    key = {**_transcripts_key(model, cfg), "n_tokens": n_tokens, "n_chats": len(chats), "corpus_version": 1}
    path = cache_dir("persona") / "chat_corpus" / f"corpus-{_digest(key)}.jsonl"

    def compute() -> str:
        tok = model.tokenizer
        budget = int(n_tokens * 1.1) - sum(len(tok(c["text"])["input_ids"]) for c in chats)
        wiki, count = [], 0
        for doc in iter_documents(CorpusSpec(source="wiki", languages=cfg.languages, split="train")):
            if count >= budget:
                break
            wiki.append({"source": f"wiki:{doc.lang}", "text": doc.text})
            count += len(tok(doc.text)["input_ids"]) + 1
        records = interleave(wiki, [{"source": f"chat:{c['trait']}:{'+' if c['positive'] else '-'}",
                                     "text": c["text"]} for c in chats])
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)

    cached(path, key, compute, load=lambda p: Path(p).read_text(encoding="utf-8"),
           save=lambda text, p: atomic_write_text(p, text))
    return CorpusSpec(source=str(path), split="train")
