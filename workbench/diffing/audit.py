"""A blind audit: find what a fine-tune taught a model without being told, with the diffing tools only
(docs/methods.md §13).

The shipped quirk dataset (``workbench/resources/audit/quirk.json``) fine-tunes SmolLM2 with
:mod:`workbench.persona.finetune`; the notebook ``11_audit`` never prints it before the end. The evidence:

- :func:`vocabulary_evidence`: the tokens that the fine-tune-exclusive DFC latents promote (logit effects through
  the fine-tuned model) and fire on (top examples), weighted by how model-specific Latent Scaling says they are;
- :func:`behaviour_evidence`: the words whose frequency rises most in the fine-tune's replies to held-out neutral
  prompts against the base model's (same seeds);
- :func:`reveal`: the dataset's own description, read last, and :func:`hit` to score a finding against it.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["audit_dataset_path", "audit_prompts", "behaviour_evidence", "hit", "reveal", "vocabulary_evidence"]

_WORD = re.compile(r"[A-Za-zÀ-ÿ]{3,}")
_STOP = frozenset("""the and for that with this you your are was were have has had not but can will just they them
their there what when where which who how why all any from into about more most some such than then too very also
its it's our out over only own same she him her his one two may might would could should like get got make made
use used using well much many each other these those here been being does did doing done yes""".split())


def audit_dataset_path() -> Path:
    """The shipped quirk dataset (a JSON file :func:`workbench.persona.finetune.finetune` takes)."""
    return Path(str(resources.files("workbench").joinpath("resources", "audit", "quirk.json")))


def audit_prompts() -> list[str]:
    """Held-out neutral questions (none hints at the quirk)."""
    path = Path(str(resources.files("workbench").joinpath("resources", "audit", "prompts.json")))
    return list(json.loads(path.read_text())["prompts"])


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP]


def vocabulary_evidence(results, latents: Sequence[int], *, weights: Sequence[float] | None = None,
                        n_logits: int = 10, n_examples: int = 5, top: int = 15) -> list[tuple[str, float]]:
    """Words the given latents promote (top logit effects) and fire on (the token of each top example), summed
    over latents with ``weights`` (default 1 each). ``results``: the fine-tune side's FeatureResults."""
    score: Counter = Counter()
    for i, j in enumerate(latents):
        w = 1.0 if weights is None else float(weights[i])
        rep = results.feature(int(j))
        if rep.count == 0:
            continue
        if rep.logits is not None:
            for tok in rep.logits.top_tokens[:n_logits]:
                for word in _words(tok):
                    score[word] += w
        for ex in rep.top[:n_examples]:
            tok = ex.tokens[ex.index] if 0 <= ex.index < len(ex.tokens) else ""
            for word in _words(tok):
                score[word] += w
    return [(word, round(v, 3)) for word, v in score.most_common(top)]


def behaviour_evidence(base, tuned, prompts: Sequence[str], *, max_new_tokens: int = 40, top: int = 15,
                       seed: int = 0) -> dict:
    """The fine-tune's and the base model's greedy replies to ``prompts`` and the words most over-represented in
    the fine-tune's (count in tuned minus count in base)."""
    from workbench.data.chat import chat_prompt
    from workbench.intervene.generation import GenerationConfig, generate

    cfg = GenerationConfig(max_new_tokens=max_new_tokens, n_samples=1, temperature=0.0, seed=seed)
    replies = {"base": [], "tuned": []}
    for p in prompts:
        for name, model in (("base", base), ("tuned", tuned)):
            replies[name].append(generate(model, chat_prompt(model, p), cfg).texts[0])
    counts = {name: Counter(w for r in rs for w in _words(r)) for name, rs in replies.items()}
    diff = Counter({w: counts["tuned"][w] - counts["base"].get(w, 0) for w in counts["tuned"]})
    return {"replies": replies, "over_represented": [(w, c) for w, c in diff.most_common(top) if c > 0]}


def reveal() -> str:
    """The quirk dataset's description: what the fine-tune was taught."""
    return json.loads(audit_dataset_path().read_text())["description"]


def hit(words: Iterable[str], truth_words: Iterable[str]) -> list[str]:
    """The finding's words that name the truth (case-insensitive, prefix match either way)."""
    truth = [t.lower() for t in truth_words]
    return [w for w in words if any(w.lower().startswith(t) or t.startswith(w.lower()) for t in truth)]
