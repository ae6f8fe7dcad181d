"""The code-error feature, tested the way Scaling Monosemanticity tests it (docs: /work/notes/catalogue-docs.md).

1. **Sites.** For each planted bug (:class:`workbench.data.code_bugs.Bug`) the SAE codes at the bug (max over the
   tokens overlapping the bug's characters) and at the same place in the clean code: :func:`site_activations`.
2. **Detector** (pure, on tensors): a feature's firing rate at bug sites minus its rate at the clean sites,
   :func:`error_scores`; candidates are picked on one half of the held-out bugs (:func:`split_halves`, by file) and
   their rates reported on the other half, on a second syntax (a REPL transcript, C headers) and on English prose
   with the same typo rule (:func:`rates`), where a code-error feature should stay off.
3. **Clamp.** The paper's prompt (:data:`REPL_PROMPT` with ``right`` or the typo ``rihgt``) and the judge
   :func:`writes_traceback`; the clamp itself is :func:`workbench.intervene.code_clamp.clamp_outcomes`.
"""
from __future__ import annotations

import re
from typing import Hashable, Sequence

import torch
from torch import Tensor

from workbench.core.protocols import ModelLike, SAELike
from workbench.analysis.search import hook_activations, tokenize_with_offsets
from workbench.data.code_bugs import Bug, token_span

__all__ = ["REPL_PROMPT", "error_scores", "paper_prompt", "rates",
           "site_activations", "split_halves", "top_error_features", "writes_traceback"]

REPL_PROMPT = ">>> def add(left, right):\n...     return left + {name}\n...\n>>> add(1, 2)\n"
_TRACEBACK = re.compile(r"Traceback|\b\w*Error\b|\bline \d+\b", re.I)


def paper_prompt(buggy: bool) -> str:
    """The paper-style REPL prompt: ``return left + right`` (correct) or ``left + rihgt`` (a NameError)."""
    return REPL_PROMPT.format(name="rihgt" if buggy else "right")


def writes_traceback(text: str) -> bool:
    """The rule-based judge: does a generation report an error (a ``Traceback``, an ``...Error`` name, a line
    reference)?"""
    return bool(_TRACEBACK.search(text))


# ----------------------------------------------------------------------------------------------------------------
# Site activations
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _codes(model: ModelLike, sae: SAELike, hook: str, text: str, cache: dict) -> tuple[Tensor, list[tuple[int, int]]]:
    if text not in cache:
        ids, offs = tokenize_with_offsets(model.tokenizer, text)
        x = hook_activations(model, torch.tensor([ids]), hook)[0]
        cache[text] = (sae.encode(x.to(sae.device, sae.dtype)).float().cpu(), offs)
    return cache[text]


def site_activations(model: ModelLike, sae: SAELike, hook: str, bugs: Sequence[Bug], *, progress: bool = False
                     ) -> tuple[Tensor, Tensor]:
    """``(at_bug, at_clean)``, each ``[n_bugs, d_sae]``: the max SAE code over the bug's tokens in the corrupted text,
    and over the tokens at the same characters in the clean text (an empty clean span: the token holding it). A
    clean text shared by several bugs runs once."""
    from tqdm.auto import tqdm

    cache: dict = {}
    bug_rows, clean_rows = [], []
    for bug in tqdm(bugs, desc="bug sites", disable=not progress, leave=False):
        f, offs = _codes(model, sae, hook, bug.text, cache)
        a, b = token_span(offs, bug.start, bug.end)
        bug_rows.append(f[a:b].max(0).values)
        f, offs = _codes(model, sae, hook, bug.clean, cache)
        a, b = token_span(offs, bug.clean_start, bug.clean_end)
        clean_rows.append(f[a:b].max(0).values)
        if len(cache) > 64:
            cache.clear()
    d = int(sae.cfg.d_sae)
    stack = lambda rows: torch.stack(rows) if rows else torch.zeros(0, d)  # noqa: E731
    return stack(bug_rows), stack(clean_rows)


# ----------------------------------------------------------------------------------------------------------------
# The detector (pure)
# ----------------------------------------------------------------------------------------------------------------


def split_halves(groups: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    """Indices of a selection half and an evaluation half, split by group (e.g. the file a bug came from), so no
    file is in both: groups in first-seen order alternate between the halves."""
    order: dict[Hashable, int] = {}
    for g in groups:
        order.setdefault(g, len(order))
    sel = [i for i, g in enumerate(groups) if order[g] % 2 == 0]
    ev = [i for i, g in enumerate(groups) if order[g] % 2 == 1]
    return sel, ev


def error_scores(at_bug: Tensor, at_clean: Tensor, threshold: float | Tensor = 0.0) -> Tensor:
    """Per feature: its firing rate (code > ``threshold``) at bug sites minus its rate at the clean sites [d_sae]."""
    if at_bug.shape != at_clean.shape:
        raise ValueError(f"bug and clean sites differ in shape: {tuple(at_bug.shape)} vs {tuple(at_clean.shape)}")
    if at_bug.shape[0] == 0:
        raise ValueError("no bug sites: plant some bugs first (workbench.studies.catalogue.heldout_bugs)")
    return (at_bug > threshold).float().mean(0) - (at_clean > threshold).float().mean(0)


def top_error_features(at_bug: Tensor, at_clean: Tensor, k: int = 5, threshold: float | Tensor = 0.0) -> Tensor:
    """The ``k`` features with the largest :func:`error_scores` (ties broken by the mean code gap)."""
    score = error_scores(at_bug, at_clean, threshold)
    gap = (at_bug - at_clean).mean(0)
    key = score + 1e-6 * gap / (gap.abs().max() + 1e-12)
    return torch.topk(key, min(k, key.numel())).indices


def rates(at_bug: Tensor, at_clean: Tensor, feature: int, threshold: float = 0.0) -> dict:
    """Firing rates of ``feature`` at bug and clean sites, their counts and mean codes."""
    b, c = at_bug[:, feature], at_clean[:, feature]
    n = int(b.numel())
    return {"n": n, "bug_rate": float((b > threshold).float().mean()) if n else float("nan"),
            "clean_rate": float((c > threshold).float().mean()) if n else float("nan"),
            "bug_mean": float(b.mean()) if n else float("nan"), "clean_mean": float(c.mean()) if n else float("nan")}
