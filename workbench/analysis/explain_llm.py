"""The optional LLM explainer: :class:`OpenAIExplainer` sends a unit's examples to any OpenAI-compatible
``/v1/chat/completions`` endpoint and turns the reply's key tokens into the same kind of n-gram predictor the offline
:class:`~workbench.analysis.explain.TokenExplainer` produces, so both are scored alike (see
:mod:`workbench.analysis.explain`). Nothing else in the workbench needs it.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from workbench.analysis.explain import Explanation, UnitExamples, _window_strings

__all__ = ["OpenAIExplainer", "key_token_patterns", "parse_key_tokens"]


_SYSTEM = ("You explain features of a language model's internal activations. You see text excerpts; tokens where "
           "the feature is active are marked like [[token]](activation). Say in one short sentence what the feature "
           "responds to, then list the few literal tokens or short phrases it fires on.")
_FORMAT = ("Answer in exactly two lines:\nExplanation: <one sentence>\nKey tokens: \"<token>\", \"<token>\", ...")


def _quoted(text: str) -> list[str]:
    return [a or b for a, b in re.findall(r'"([^"\n]+)"|“([^”\n]+)”', text)]


def parse_key_tokens(completion: str) -> tuple[str, list[str]]:
    """(explanation sentence, key token strings) from a completion in the requested two-line format; falls back to
    the whole text and every quoted string in it."""
    expl, keys = completion.strip(), []
    m = re.search(r"explanation\s*:\s*(.+)", completion, flags=re.IGNORECASE)
    if m:
        expl = m.group(1).strip()
    k = re.search(r"key\s*tokens?\s*:\s*(.+)", completion, flags=re.IGNORECASE)
    if k:
        keys = _quoted(k.group(1)) or [s.strip() for s in k.group(1).split(",") if s.strip()]
    if not keys:
        keys = _quoted(completion)
    seen, out = set(), []
    for s in keys:
        if s and s not in seen:
            seen.add(s)
            out.append(s)
    return expl, out


def key_token_patterns(keys: Sequence[str], tokenizer=None, vocab: Mapping[int, str] | None = None,
                       max_len: int = 4) -> list[tuple[int, ...]]:
    """Token-id n-grams for key strings: their tokenisations (as is, with a leading space, lower-cased and
    capitalised; at most ``max_len`` tokens) and any ``vocab`` token whose stripped string equals a key
    (case-insensitive)."""
    pats: list[tuple[int, ...]] = []
    for key in keys:
        variants = {key, " " + key.lstrip(), key.lower(), " " + key.lower().lstrip(), key[:1].upper() + key[1:],
                    " " + (key.lstrip()[:1].upper() + key.lstrip()[1:])}
        if tokenizer is not None:
            for v in sorted(variants):
                ids = tokenizer.encode(v, add_special_tokens=False)
                if 0 < len(ids) <= max_len:
                    pats.append(tuple(int(i) for i in ids))
        if vocab:
            k = key.strip().lower()
            pats.extend((int(t),) for t, s in vocab.items() if s.strip().lower() == k and k)
    return list(dict.fromkeys(pats))


@dataclass
class OpenAIExplainer:
    """Explanations from any OpenAI-compatible chat endpoint (optional; nothing else needs it).

    ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``), ``model`` and ``api_key`` default to the environment variables
    ``WORKBENCH_LLM_BASE_URL`` (or ``OPENAI_BASE_URL``), ``WORKBENCH_LLM_MODEL`` and ``WORKBENCH_LLM_API_KEY`` (or
    ``OPENAI_API_KEY``). ``tokenizer`` (the model's) turns the reply's key tokens into the predictor's n-grams; without
    it only tokens seen in the examples can match.
    """

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    tokenizer: Any = None
    timeout: float = 60.0
    max_examples: int = 15
    temperature: float = 0.0
    max_tokens: int = 200
    name: str = "llm"

    def __post_init__(self) -> None:
        self.base_url = self.base_url or os.environ.get("WORKBENCH_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        self.model = self.model or os.environ.get("WORKBENCH_LLM_MODEL") or "default"
        self.api_key = self.api_key or os.environ.get("WORKBENCH_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not self.base_url:
            raise ValueError("OpenAIExplainer needs an endpoint: pass base_url='http://HOST:PORT/v1' or set "
                             "WORKBENCH_LLM_BASE_URL (the offline TokenExplainer needs none)")

    def prompt(self, examples: UnitExamples) -> list[dict]:
        lines = []
        for n, ex in enumerate(examples.examples[: self.max_examples], 1):
            parts = []
            for s, a in zip(ex.tokens, ex.acts):
                parts.append(f"[[{s}]]({a:.2f})" if a > 0 else s)
            lines.append(f"{n}. {''.join(parts)}")
        user = (f"Examples for {examples.kind} {examples.label or examples.unit} (max activation "
                f"{examples.max_activation:.3g}):\n" + "\n".join(lines) + "\n\n" + _FORMAT)
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    def complete(self, messages: list[dict]) -> str:
        assert self.base_url is not None  # __post_init__ resolved it or raised
        url = self.base_url.rstrip("/") + "/chat/completions"
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            raise ValueError(f"the LLM endpoint {url} answered HTTP {err.code} ({err.reason}): check the model name "
                             f"({self.model!r}) and the API key (WORKBENCH_LLM_API_KEY)") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise ValueError(f"cannot reach the LLM endpoint {url} ({err}): start the server or fix "
                             f"WORKBENCH_LLM_BASE_URL; the offline TokenExplainer needs no endpoint") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"the LLM endpoint {url} did not return JSON ({err})") from None
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"the LLM endpoint {url} returned no choices[0].message.content: "
                             f"{json.dumps(data)[:300]}") from None

    def explain(self, examples: UnitExamples) -> Explanation:
        completion = self.complete(self.prompt(examples))
        text, keys = parse_key_tokens(completion)
        patterns = key_token_patterns(keys, self.tokenizer, _window_strings(examples))
        return Explanation(text, patterns, f"{self.name}:{self.model}",
                           {"key_tokens": keys, "completion": completion, "simulator": "key-token matcher"})
