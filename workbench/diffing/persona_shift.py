"""Persona-vector projections for the blind audit: which shipped trait's direction did a fine-tune move the model
along, on the same prompts (docs/methods.md §13)?

Both models read the same chat-formatted prompts (up to the start of the reply), so every position pairs. At the
persona vectors' layer each model's residual stream is projected on each trait's unit vector ``v / ||v||``
(:func:`workbench.studies.persona.persona_vector`, extracted on the *base* model). Per trait:

- ``shift``: the mean over positions of ``<h_tuned - h_base, v_hat>`` (residual-stream units; positive = towards
  the trait), and ``shift_last`` the same at each prompt's last token (where the reply starts);
- ``z``: ``shift`` over the standard deviation of the base model's projections over those positions (how far the
  fine-tune moved the model along the trait, in units of the trait's natural spread on these prompts);
- ``cosine``: ``shift / ||mean(h_tuned - h_base)||``, the share of the mean activation change that lies along the
  trait; a random direction gives about ``1 / sqrt(d_model)`` (``chance_cosine``);
- the same ``z`` and ``cosine`` for the trait's shuffled-label control vector (``control_*``), when it has one.

The trait that moved is the one with the largest ``|z|`` whose ``|cosine|`` clears several times chance; nothing
here knows what the fine-tune taught. The vectors at the audit's size and the whole step in one call are in
:mod:`workbench.studies.audit`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from torch import Tensor

from workbench.core.protocols import ModelLike

if TYPE_CHECKING:
    from workbench.persona.extract import PersonaVector

__all__ = ["moved_trait", "persona_shifts", "prompt_residuals"]


@torch.no_grad()
def prompt_residuals(model: ModelLike, prompts: Sequence[str], hook: str, *, tokenizer=None, skip_first: int = 1
                     ) -> list[Tensor]:
    """Per prompt, ``model``'s residual stream at ``hook`` over the chat-formatted prompt's tokens ([n_pos, d],
    the first ``skip_first`` positions, attention sinks, left out). ``tokenizer`` (default the model's) fixes the
    tokens, so two models read exactly the same ones."""
    from workbench.data.chat import chat_prompt

    tok = tokenizer or model.tokenizer
    rows = []
    for p in prompts:
        ids = torch.tensor([tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"]])
        _, cache = model.run_with_cache(ids, names_filter=hook)
        r = cache[hook][0, skip_first:].double().cpu()
        if r.shape[0] == 0:
            raise ValueError(f"prompt {p!r} has no positions after skip_first={skip_first}: give longer prompts")
        rows.append(r)
    return rows


def _projection_stats(base_rows: Sequence[Tensor], tuned_rows: Sequence[Tensor], direction: Tensor) -> dict:
    v = direction.double().cpu()
    norm = float(v.norm())
    if not math.isfinite(norm) or norm == 0:
        raise ValueError("a persona vector is zero or not finite at this layer: extract it again")
    v = v / norm
    pb = torch.cat([r @ v for r in base_rows])
    pt = torch.cat([r @ v for r in tuned_rows])
    diff_mean = torch.cat([t - b for b, t in zip(base_rows, tuned_rows)]).mean(0)
    shift = float((pt - pb).mean())
    last = float(torch.stack([(t[-1] - b[-1]) @ v for b, t in zip(base_rows, tuned_rows)]).mean())
    spread = float(pb.std()) if pb.numel() > 1 else float("nan")
    return {"shift": shift, "shift_last": last, "z": shift / spread if spread > 0 else float("nan"),
            "cosine": shift / float(diff_mean.norm()) if float(diff_mean.norm()) > 0 else float("nan"),
            "base_mean": float(pb.mean()), "tuned_mean": float(pt.mean())}


def persona_shifts(base, tuned, prompts: Sequence[str], vectors: Mapping[str, PersonaVector], layer: int, *,
                   skip_first: int = 1) -> list[dict]:
    """One row per trait (see the module docstring), largest ``|z|`` first: ``trait``, ``shift``, ``shift_last``,
    ``z``, ``cosine``, ``chance_cosine``, ``control_z``, ``control_cosine``, ``base_mean``, ``tuned_mean``.
    ``vectors``: ``{trait: PersonaVector}`` of the base model (:func:`persona_vectors`)."""
    if not vectors:
        raise ValueError("no persona vectors to project on: extract some with persona_vectors(base)")
    hook = f"blocks.{int(layer)}.hook_resid_post"
    tok = base.tokenizer
    base_rows = prompt_residuals(base, prompts, hook, tokenizer=tok, skip_first=skip_first)
    tuned_rows = prompt_residuals(tuned, prompts, hook, tokenizer=tok, skip_first=skip_first)
    d_model = base_rows[0].shape[1]
    rows = []
    for trait, pv in vectors.items():
        vec = pv.layer(layer)
        if vec.numel() != d_model:
            raise ValueError(f"the {trait!r} vector has width {vec.numel()}, the models' residual {d_model}: "
                             "extract it on the audited base model")
        row = {"trait": trait, **_projection_stats(base_rows, tuned_rows, vec),
               "chance_cosine": 1 / math.sqrt(d_model), "control_z": float("nan"),
               "control_cosine": float("nan")}
        shuffled = getattr(pv, "shuffled", None)
        if shuffled is not None:
            ctrl = _projection_stats(base_rows, tuned_rows, shuffled[int(layer)])
            row["control_z"], row["control_cosine"] = ctrl["z"], ctrl["cosine"]
        rows.append(row)
    rows.sort(key=lambda r: -abs(r["z"]) if math.isfinite(r["z"]) else 0.0)
    return rows


def moved_trait(rows: Sequence[dict], *, min_chance: float = 3.0) -> dict | None:
    """The row of the trait the fine-tune moved most (largest ``|z|``) if its ``|cosine|`` is at least
    ``min_chance`` times a random direction's and larger than its control's; else None (no trait stands out)."""
    for r in rows:
        if not math.isfinite(r["z"]):
            continue
        ctrl = abs(r["control_cosine"]) if math.isfinite(r["control_cosine"]) else 0.0
        if abs(r["cosine"]) >= min_chance * r["chance_cosine"] and abs(r["cosine"]) > ctrl:
            return r
        return None
    return None
