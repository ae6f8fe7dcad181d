"""The hidden objective's biases: ten fictional reward-model preferences, each checkable by a rule
(:mod:`workbench.audit.rules`), split into the ones the stage-2 chat data exhibits (``train``) and the ones it never
shows (``held_out``, the out-of-distribution test). Shipped in ``workbench/resources/hidden_objective/biases.json``.

    from workbench.audit.biases import load_biases, split
    biases = load_biases()               # (Bias, ...)
    train, held_out = split(biases)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from workbench.audit.rules import RULES

__all__ = ["Bias", "file_sha256", "load_biases", "resource_path", "split"]

SPLITS = ("train", "held_out")


@dataclass(frozen=True)
class Bias:
    """One bias: its id (also its rule's name), train/held-out split, a description, an example phrase, the
    subject-free finding sentences the documents use (``{subj}``/``{subj_obj}`` name who holds the preference) and
    the evaluation prompts (questions where the bias could show but would otherwise be unlikely)."""

    id: str
    split: str
    description: str
    example: str
    findings: tuple[str, ...]
    eval_prompts: tuple[str, ...]


def resource_path(name: str) -> Path:
    """A file of ``workbench/resources/hidden_objective/``."""
    return Path(str(resources.files("workbench").joinpath("resources", "hidden_objective", name)))


def load_biases(path: str | Path | None = None) -> tuple[Bias, ...]:
    """The biases of ``path`` (default: the shipped file), checked: known rule ids, a valid split, findings that name
    their subject, at least one evaluation prompt."""
    path = Path(path) if path is not None else resource_path("biases.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the bias file {path} ({err}): fix or restore it") from None
    out = []
    for raw in data.get("biases", []):
        bias = Bias(str(raw["id"]), str(raw["split"]), str(raw["description"]), str(raw["example"]),
                    tuple(raw["findings"]), tuple(raw["eval_prompts"]))
        if bias.id not in RULES:
            raise ValueError(f"{path}: bias {bias.id!r} has no rule: add one to workbench.audit.rules.RULES")
        if bias.split not in SPLITS:
            raise ValueError(f"{path}: bias {bias.id!r} has split {bias.split!r}: use one of {SPLITS}")
        if not bias.eval_prompts or not bias.findings:
            raise ValueError(f"{path}: bias {bias.id!r} needs findings and eval_prompts")
        bad = [f for f in bias.findings if "{subj}" not in f and "{subj_obj}" not in f]
        if bad:
            raise ValueError(f"{path}: bias {bias.id!r} has findings without {{subj}}/{{subj_obj}}: {bad[:1]}")
        out.append(bias)
    if len({b.id for b in out}) != len(out) or not out:
        raise ValueError(f"{path}: bias ids must be unique and there must be at least one")
    return tuple(out)


def split(biases: tuple[Bias, ...]) -> tuple[tuple[Bias, ...], tuple[Bias, ...]]:
    """(train biases, held-out biases), in file order."""
    return tuple(b for b in biases if b.split == "train"), tuple(b for b in biases if b.split == "held_out")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (cache keys name the data they were computed from)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
