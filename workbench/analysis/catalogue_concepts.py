"""Catalogue evidence beyond top examples: specificity by activation bucket with a rule-based judge per concept, and
abstract-vs-concrete checks (does one feature fire on an instance of a concept and on prose about it?).

* :data:`JUDGES`: one regular-expression judge per catalogued concept, applied to a token's context window.
* :func:`bucket_specificity` (pure): given each firing token's activation and the judge's verdict on its window,
  the fraction judged "about the concept" in each bucket of activation (fraction of the feature's max).
* :data:`CONCEPT_TEXTS`: project-written instance and discussion texts for three concepts, with a neutral set;
  :func:`abstract_concrete` picks, on the first half of each set, the feature best at firing on both kinds, and
  reports its firing rates on the second half (held out from the choice).
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
from torch import Tensor

from workbench.core.protocols import ModelLike, SAELike

__all__ = ["CONCEPT_TEXTS", "JUDGES", "abstract_concrete", "bucket_specificity", "text_max_codes"]

JUDGES: dict[str, Callable[[str], bool]] = {
    "python_code": lambda w: bool(re.search(r"\bdef |\breturn\b|\bself\.|\bimport |[=(]\s*\w+\(|\):\s*$|^\s{4}\w",
                                            w, re.M)),
    "error": lambda w: bool(re.search(r"error|exception|raise|traceback|fail|invalid|wrong|bug", w, re.I)),
    "recursion": lambda w: bool(re.search(r"recurs|itself|self-similar|base case", w, re.I)),
}


def bucket_specificity(acts: Tensor, judged: Sequence[bool], n_buckets: int = 5) -> list[dict]:
    """Per bucket of ``acts / acts.max()`` (equal widths over (0, 1]): the count and the judged fraction."""
    acts = torch.as_tensor(acts, dtype=torch.float32)
    ok = torch.as_tensor(list(judged), dtype=torch.float32)
    if acts.numel() != ok.numel():
        raise ValueError(f"{acts.numel()} activations but {ok.numel()} verdicts: judge every firing token once")
    top = float(acts.max()) if acts.numel() else 0.0
    out = []
    for b in range(n_buckets):
        lo, hi = b / n_buckets, (b + 1) / n_buckets
        frac = acts / top if top > 0 else acts
        m = (frac > lo) & (frac <= hi) if b else (frac > 0) & (frac <= hi)
        n = int(m.sum())
        out.append({"bucket": f"{lo:.1f}-{hi:.1f}", "n": n,
                    "specificity": float(ok[m].mean()) if n else float("nan")})
    return out


CONCEPT_TEXTS: dict[str, dict[str, list[str]]] = {
    "error": {
        "instance": [
            "    try:\n        value = int(text)\n    except ValueError:\n        raise TypeError('not a number')",
            "if not path.exists():\n    raise FileNotFoundError(path)",
            "Traceback (most recent call last):\n  File \"<stdin>\", line 1, in <module>\nZeroDivisionError: division by zero",
            "    except KeyError as err:\n        raise LookupError(f'missing {err}') from None",
            "try:\n    conn.send(data)\nexcept OSError:\n    conn.close()\n    raise",
            "NameError: name 'rihgt' is not defined",
        ],
        "discussion": [
            "When a program meets a condition it cannot handle, it signals an error and stops the normal flow.",
            "Good error messages tell the user what went wrong and how to fix it.",
            "The mistake in the calculation went unnoticed until the bridge was inspected.",
            "Software failures are often caused by unexpected input that the authors never tested.",
            "He admitted the error in his report and published a correction the next day.",
            "Faults in the wiring caused the system to fail repeatedly during the storm.",
        ],
    },
    "recursion": {
        "instance": [
            "def factorial(n):\n    if n <= 1:\n        return 1\n    return n * factorial(n - 1)",
            "def depth(node):\n    return 0 if node is None else 1 + max(depth(node.left), depth(node.right))",
            "def walk(tree):\n    for child in tree.children:\n        walk(child)",
            "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
            "def flatten(xs):\n    return [y for x in xs for y in (flatten(x) if isinstance(x, list) else [x])]",
            "def gcd(a, b):\n    return a if b == 0 else gcd(b, a % b)",
        ],
        "discussion": [
            "A recursive definition describes something in terms of a smaller version of itself.",
            "Fractals are self-similar: each part looks like a reduced copy of the whole.",
            "Recursion needs a base case, or the function would call itself forever.",
            "A mirror facing a mirror shows an image within an image, repeating without end.",
            "Many problems on trees are solved by applying the same procedure to each subtree.",
            "The story contains a story, which in turn contains another story.",
        ],
    },
    "mathematics": {
        "instance": [
            "x = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)",
            "The equation 3x + 5 = 20 gives x = 5.",
            "total = sum(i * i for i in range(10))",
            "Solve 2y - 7 = 11, so y = 9.",
            "area = 3.14159 * r ** 2",
            "If a = 4 and b = 3, then a^2 + b^2 = 25.",
        ],
        "discussion": [
            "Algebra is the branch of mathematics that studies symbols and the rules for manipulating them.",
            "Euclid's work on geometry shaped mathematical teaching for two thousand years.",
            "A theorem is a statement that has been proved from axioms.",
            "Calculus studies continuous change through derivatives and integrals.",
            "Number theory is concerned with the properties of the integers, especially primes.",
            "Mathematicians in ancient India introduced the concept of zero as a number.",
        ],
    },
}
NEUTRAL_TEXTS = [
    "The village market opens every Saturday morning near the old church.",
    "She planted tomatoes and beans in the garden behind the house.",
    "The river flows south through a wide valley before reaching the sea.",
    "Rain is expected in the northern regions later this week.",
    "The orchestra played a programme of waltzes and marches.",
    "He painted the fence white and repaired the gate.",
]


@torch.no_grad()
def text_max_codes(model: ModelLike, sae: SAELike, hook: str, texts: Sequence[str]) -> Tensor:
    """Each text's max SAE code per feature over its tokens (BOS excluded) [n_texts, d_sae]."""
    from workbench.analysis.search import hook_activations, tokenize_with_offsets

    rows = []
    for t in texts:
        ids, _ = tokenize_with_offsets(model.tokenizer, t)
        x = hook_activations(model, torch.tensor([ids]), hook)[0, 1:]
        rows.append(sae.encode(x.to(sae.device, sae.dtype)).float().max(0).values.cpu())
    return torch.stack(rows)


def abstract_concrete(inst: Tensor, disc: Tensor, neutral: Tensor) -> dict:
    """Pick, on the first half of the instance and discussion texts, the feature maximising
    ``min(rate on instances, rate on discussion) - rate on neutral``; report its rates on the second halves."""
    h_i, h_d = inst.shape[0] // 2, disc.shape[0] // 2
    rate = lambda m: (m > 0).float().mean(0)  # noqa: E731
    score = torch.minimum(rate(inst[:h_i]), rate(disc[:h_d])) - rate(neutral)
    f = int(score.argmax())
    return {"feature": f, "selection_score": float(score[f]),
            "heldout_instance_rate": float(rate(inst[h_i:])[f]), "heldout_discussion_rate": float(rate(disc[h_d:])[f]),
            "neutral_rate": float(rate(neutral)[f]), "n_heldout": [inst.shape[0] - h_i, disc.shape[0] - h_d]}
