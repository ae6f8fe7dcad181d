"""The optional LLM judge: :class:`OpenAIJudge` asks any OpenAI-compatible ``/v1/chat/completions`` endpoint for the
trait and coherence scores of a response (the persona-vector paper used a GPT-4.1-mini judge), with the trait file's
rubric sentence. A drop-in replacement for :class:`~workbench.persona.judge.RubricJudge` (docs/methods.md §12, §16).

    judge = OpenAIJudge("pirate", base_url="http://127.0.0.1:8000/v1", model="my-judge")
    judge("How do I make tea?", "Arr, matey...")     # JudgeScore(trait=90.0, coherence=85.0, ...)

Endpoint settings default to ``WORKBENCH_LLM_BASE_URL`` / ``WORKBENCH_LLM_MODEL`` / ``WORKBENCH_LLM_API_KEY`` as for
the LLM explainer (:class:`workbench.analysis.explain_llm.OpenAIExplainer`, whose HTTP client it reuses).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from workbench.persona.judge import JudgeScore
from workbench.persona.traits import Trait, load_trait

__all__ = ["OpenAIJudge", "parse_scores"]

_SYSTEM = ("You grade answers written by an AI assistant. You give two integer scores from 0 to 100: how strongly the "
           "answer shows a given trait, and how coherent it is (100: fluent, relevant, grammatical; 0: gibberish).")
_FORMAT = "Answer in exactly two lines:\nTrait: <0-100>\nCoherence: <0-100>"


def parse_scores(completion: str) -> tuple[float, float]:
    """(trait, coherence) from a reply in the requested format; raises ValueError when a score is missing."""
    out = []
    for key in ("trait", "coherence"):
        m = re.search(rf"{key}\s*[:=]\s*(\d+(?:\.\d+)?)", completion, flags=re.IGNORECASE)
        if not m:
            raise ValueError(f"the judge's reply has no '{key.title()}: <0-100>' line: {completion[:200]!r}")
        out.append(min(100.0, max(0.0, float(m.group(1)))))
    return out[0], out[1]


@dataclass
class OpenAIJudge:
    """Scores from an OpenAI-compatible chat endpoint (module docstring)."""

    trait: Trait | str
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    timeout: float = 60.0
    name: str = "llm"

    def __post_init__(self) -> None:
        from workbench.analysis.explain_llm import OpenAIExplainer

        self.trait = load_trait(self.trait)
        self._client = OpenAIExplainer(base_url=self.base_url, model=self.model, api_key=self.api_key,
                                       timeout=self.timeout, max_tokens=20, name=self.name)
        self.base_url, self.model = self._client.base_url, self._client.model

    def messages(self, question: str, response: str) -> list[dict]:
        trait = load_trait(self.trait)  # already a Trait (__post_init__): returned as it is
        rubric = trait.rubric.get("llm") or f"Score 0-100 how much the answer shows: {trait.description}"
        user = (f"Trait: {trait.name}. {trait.description}\nRubric: {rubric}\n\n"
                f"Question: {question}\nAnswer: {response}\n\n{_FORMAT}")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    def __call__(self, question: str, response: str) -> JudgeScore:
        completion = self._client.complete(self.messages(question, response))
        t, c = parse_scores(completion)
        return JudgeScore(t, c, {"judge": f"{self.name}:{self.model}", "completion": completion})
