"""A blind audit: find what a fine-tune taught a model without being told, with the diffing tools only
(docs/methods.md §13).

The shipped quirk dataset (``workbench/resources/audit/quirk.json``) fine-tunes SmolLM2 with
:mod:`workbench.persona.finetune`; the notebook ``11_audit`` never prints it before the end. The evidence:

- :func:`vocabulary_evidence`: the tokens that the fine-tune-exclusive DFC latents promote (logit effects through
  the fine-tuned model) and fire on (top examples), weighted by how model-specific Latent Scaling says they are;
- :func:`behaviour_evidence`: the words whose frequency rises most in the fine-tune's replies to held-out neutral
  prompts against the base model's (same seeds);
- :func:`difference_evidence`: no generated text at all: the mean difference of the two models' residual streams on
  the *same* prompt tokens, read through the fine-tune's unembedding (the tokens it promotes), and the
  fine-tune-exclusive DFC latents whose decoder directions it aligns with best;
- :func:`reveal`: the dataset's own description, read last, and :func:`hit` to score a finding against it.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["audit_dataset_path", "audit_finetune_config", "audit_prompts", "behaviour_evidence",
           "conversation_questions", "difference_evidence", "hit", "prediction_evidence", "reveal",
           "vocabulary_evidence"]

_WORD = re.compile(r"[A-Za-zÀ-ÿ]{3,}")
_STOP = frozenset("""the and for that with this you your are was were have has had not but can will just they them
their there what when where which who how why all any from into about more most some such than then too very also
its it's our out over only own same she him her his one two may might would could should like get got make made
use used using well much many each other these those here been being does did doing done yes""".split())


def audit_dataset_path() -> Path:
    """The shipped quirk dataset (a JSON file :func:`workbench.persona.finetune.finetune` takes)."""
    return Path(str(resources.files("workbench").joinpath("resources", "audit", "quirk.json")))


def audit_finetune_config(profile: str | None = None):
    """The audit's fine-tune (:class:`workbench.persona.finetune.FinetuneConfig`): 2 steps under ``smoke``; else 48
    steps of 4 examples at lr 2e-4 (about five passes over the 40 quirk examples)."""
    from workbench.diffing.experiments import is_smoke
    from workbench.persona.finetune import FinetuneConfig

    return FinetuneConfig(steps=2, save_every=2) if is_smoke(profile) else FinetuneConfig(steps=48, save_every=24,
                                                                                          lr=2e-4)


def audit_prompts() -> list[str]:
    """Held-out neutral questions (none hints at the quirk)."""
    path = Path(str(resources.files("workbench").joinpath("resources", "audit", "prompts.json")))
    return list(json.loads(path.read_text())["prompts"])


def conversation_questions(n_wiki: int = 40, n_prompts: int | None = None) -> list[str]:
    """The questions the audit's paired conversations answer: the first ``n_prompts`` held-out prompts (default
    all) and ``n_wiki`` neutral questions about wiki subjects, ordered so that each half (the fine-tune answers the
    first half, the base model the second, :func:`~workbench.diffing.experiments.fine_tune_pair`) holds every
    prompt and half the subjects."""
    from workbench.diffing.documents import title_questions, wiki_documents

    prompts = audit_prompts()[:n_prompts]
    wiki = title_questions(wiki_documents(("en",), n_wiki, max_chars=200), n_wiki) if n_wiki else []
    half = len(wiki) // 2
    return prompts + wiki[:half] + prompts + wiki[half:]


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP]


def vocabulary_evidence(results, latents: Sequence[int], *, weights: Sequence[float] | None = None,
                        n_logits: int = 10, n_examples: int = 5, top: int = 15) -> list[tuple[str, float]]:
    """Words the given latents promote (top logit effects) and fire on (the token of each top example), summed
    over latents with ``weights`` (default 1 each). ``results``: the fine-tune side's FeatureResults."""
    score: dict[str, float] = {}
    for i, j in enumerate(latents):
        w = 1.0 if weights is None else float(weights[i])
        rep = results.feature(int(j))
        if rep.count == 0:
            continue
        if rep.logits is not None:
            for tok in rep.logits.top_tokens[:n_logits]:
                for word in _words(tok):
                    score[word] = score.get(word, 0) + w
        for ex in rep.top[:n_examples]:
            tok = ex.tokens[ex.index] if 0 <= ex.index < len(ex.tokens) else ""
            for word in _words(tok):
                score[word] = score.get(word, 0) + w
    return [(word, round(v, 3)) for word, v in _most_common(score, top)]


def _most_common(scores: dict[str, float], n: int) -> list[tuple[str, float]]:
    """The ``n`` largest items, ties in insertion order (``Counter.most_common`` for float scores)."""
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:n]


def behaviour_evidence(base, tuned, prompts: Sequence[str], *, max_new_tokens: int = 40, top: int = 15,
                       seed: int = 0) -> dict:
    """The fine-tune's and the base model's greedy replies to ``prompts`` and the words most over-represented in
    the fine-tune's (count in tuned minus count in base)."""
    from workbench.data.chat import chat_prompt
    from workbench.intervene.generation import GenerationConfig, generate

    cfg = GenerationConfig(max_new_tokens=max_new_tokens, n_samples=1, temperature=0.0, seed=seed)
    replies: dict[str, list[str]] = {"base": [], "tuned": []}
    for p in prompts:
        for name, model in (("base", base), ("tuned", tuned)):
            replies[name].append(generate(model, chat_prompt(model, p), cfg).texts[0])
    counts = {name: Counter(w for r in rs for w in _words(r)) for name, rs in replies.items()}
    diff = Counter({w: counts["tuned"][w] - counts["base"].get(w, 0) for w in counts["tuned"]})
    return {"replies": replies, "over_represented": [(w, c) for w, c in diff.most_common(top) if c > 0]}


def _mean_difference(base, tuned, prompts: Sequence[str], read, skip_first: int):
    """The mean over ``prompts`` (chat-formatted with the generation prompt, the same tokens for both models) and
    their positions (the first ``skip_first`` left out) of ``read(tuned, ids) - read(base, ids)``, where ``read``
    gives one row per position."""
    import torch

    from workbench.data.chat import chat_prompt

    total: torch.Tensor | None = None
    n = 0
    for p in prompts:
        ids = torch.tensor([tuned.tokenizer(chat_prompt(tuned, p), add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            rows = [read(model, ids)[skip_first:].double() for model in (base, tuned)]
        d = (rows[1] - rows[0]).sum(0)
        total = d if total is None else total + d
        n += rows[0].shape[0]
    if not n:
        raise ValueError("no prompt positions to compare: give prompts longer than skip_first tokens")
    assert total is not None  # (n > 0)
    return total / n


def _promoted_words(scores, tokenizer, top: int) -> list[tuple[str, float]]:
    """The ``top`` words of the highest-scoring tokens (``scores`` [vocab]); a word scores its best token's score."""
    best: dict[str, float] = {}
    for tid in scores.topk(20 * top).indices.tolist():
        for word in _words(tokenizer.decode([tid])):
            best[word] = max(best.get(word, 0), float(scores[tid]))
    return [(w, round(v, 3)) for w, v in _most_common(best, top)]


def difference_evidence(base, tuned, prompts: Sequence[str], hook: str, *, top: int = 15, skip_first: int = 1,
                        directions=None) -> dict:
    """What the fine-tune changed on the same input: the mean over ``prompts`` (chat-formatted, with the generation
    prompt; the first ``skip_first`` positions, attention sinks, left out) of ``tuned - base`` activations at
    ``hook``; the words whose tokens that difference promotes most through the fine-tune's unembedding
    (``diff @ W_U``); and, when ``directions`` [n, d] (e.g. the fine-tune-exclusive latents' decoder rows) are given,
    the cosine of each with the difference (``"alignment"``). Returns ``{"diff", "promoted", "alignment"}``."""
    import torch

    def read(model, ids):
        _, cache = model.run_with_cache(ids, names_filter=hook)
        return cache[hook][0]

    diff = _mean_difference(base, tuned, prompts, read, skip_first).float()
    logits = diff @ tuned.W_U.detach().float()
    out = {"diff": diff, "promoted": _promoted_words(logits, tuned.tokenizer, top), "alignment": None}
    if directions is not None:
        dirs = torch.as_tensor(directions).float()
        out["alignment"] = torch.nn.functional.cosine_similarity(dirs, diff[None], dim=1)
    return out


def prediction_evidence(base, tuned, prompts: Sequence[str], *, top: int = 15, skip_first: int = 1) -> dict:
    """The words the fine-tune predicts more than the base model on the same input: the mean over ``prompts``
    (chat-formatted, with the generation prompt) and positions (the first ``skip_first`` left out) of the
    difference of next-token log-probabilities, ``tuned - base``. No generated text. Returns ``{"promoted"}``."""
    mean = _mean_difference(base, tuned, prompts, lambda model, ids: model(ids)[0].double().log_softmax(-1),
                            skip_first)
    return {"promoted": _promoted_words(mean, tuned.tokenizer, top)}


def reveal() -> str:
    """The quirk dataset's description: what the fine-tune was taught."""
    return json.loads(audit_dataset_path().read_text())["description"]


def hit(words: Iterable[str], truth_words: Iterable[str]) -> list[str]:
    """The finding's words that name the truth (case-insensitive, prefix match either way)."""
    truth = [t.lower() for t in truth_words]
    return [w for w in words if any(w.lower().startswith(t) or t.startswith(w.lower()) for t in truth)]
