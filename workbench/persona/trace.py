"""Tracing a persona vector across ordered checkpoints of one architecture (docs/methods.md §12, §16), as "Tracing Persona
Vectors Through LLM Pretraining" does across pretraining checkpoints.

    from workbench.persona.trace import CheckpointRef, trace_checkpoints
    refs = [CheckpointRef(p) for p in finetune("flattery", cfg)]            # offline: our fine-tuning checkpoints
    refs = [CheckpointRef("pythia-70m", step=s) for s in (1000, 8000, 143000)]  # online: hub checkpoints
    table = trace_checkpoints(refs, "sycophancy", judge, layer=15, reference=pv)

A checkpoint is a :class:`CheckpointRef`: a folder written by :func:`workbench.persona.finetune.finetune`, a local HF
model folder (``config.json``) or ``.gguf`` file, a hub model name with a ``step`` (Pythia-style checkpoints through
TransformerLens) or a ``revision`` (forwarded to ``from_pretrained``), or an already loaded model. Hub references fail
early with a clear error when the hub cannot be reached.

Per checkpoint (the last one is the *final* checkpoint):

- the vector at every layer, extracted either from the checkpoint's own responses (``responses="generate"``: the
  full pipeline of :mod:`workbench.persona.extract`, as the paper does) or from a fixed set of judged responses
  (``responses="fixed"``, the kept pairs of ``reference``, teacher-forced through each checkpoint: cheaper, and it
  isolates the change of representation from the change of behaviour);
- ``cos_final``: cosine with the final checkpoint's vector at ``layer``; ``cos_prev``: with the previous
  checkpoint's; ``norm_ratio``: the vector's norm over the mean residual norm of the responses at that layer;
- ``steer_gain``: the judged trait score of the *final* model steered with this checkpoint's vector (``coef`` x the
  vector at ``layer``) minus the unsteered final model's score, on the evaluation questions.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.nn.functional import cosine_similarity

from workbench.core.hardware import torch_threads
from workbench.persona.extract import ExtractConfig, Response, extract_persona_vector, vector_from_responses
from workbench.persona.steer import SteerConfig, persona_steering, score_condition
from workbench.persona.traits import Trait, load_trait

__all__ = ["CheckpointRef", "TraceRow", "load_ref", "projection_shift", "trace_checkpoints"]


@dataclass(frozen=True)
class CheckpointRef:
    """Where a checkpoint lives (module docstring). ``model``: an already loaded model (then ``source`` is a label)."""

    source: str | Path
    revision: str | None = None
    step: int | None = None
    label: str = ""
    model: Any = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        extra = f"@{self.revision}" if self.revision else (f"@step{self.step}" if self.step is not None else "")
        return f"{Path(str(self.source)).name}{extra}"


def _as_ref(x) -> CheckpointRef:
    if isinstance(x, CheckpointRef):
        return x
    if isinstance(x, (str, Path)):
        return CheckpointRef(x)
    if hasattr(x, "cfg") and hasattr(x, "run_with_cache"):
        return CheckpointRef(getattr(x, "workbench_name", "model"), model=x)
    raise ValueError(f"cannot read a checkpoint from {type(x).__name__}: give a CheckpointRef, a path or a model")


def load_ref(ref: CheckpointRef | str | Path, device: str | None = None):
    """The TransformerLens model of a checkpoint reference."""
    from workbench.data.models import load_model
    from workbench.persona.finetune import load_checkpoint

    ref = _as_ref(ref)
    if ref.model is not None:
        return ref.model
    path = Path(str(ref.source)).expanduser()
    if (path / "checkpoint.json").is_file():
        return load_checkpoint(path, device=device)
    if path.exists():
        if not ((path / "config.json").is_file() or path.suffix == ".gguf"):
            raise ValueError(f"{path} is neither a fine-tuning checkpoint (checkpoint.json), an HF model folder "
                             "(config.json) nor a .gguf file")
        return load_model(str(path), device=device)
    from workbench.data.models import EMBEDDED_MODELS

    if str(ref.source) in EMBEDDED_MODELS and ref.step is None and ref.revision is None:
        return load_model(str(ref.source), device=device)
    from workbench.sae.io import hub_reachable

    if not hub_reachable():
        raise ValueError(f"checkpoint {ref.name!r} is a hub model but the HF hub cannot be reached from this "
                         "machine: download the checkpoints elsewhere and pass their local folders, or use "
                         "fine-tuning checkpoints (workbench.persona.finetune)")
    kwargs: dict[str, Any] = {}
    if ref.step is not None:
        kwargs["checkpoint_value"] = int(ref.step)
    if ref.revision is not None:
        kwargs["revision"] = ref.revision
    return load_model(str(ref.source), device=device, **kwargs)


@dataclass
class TraceRow:
    checkpoint: str
    cos_final: float
    cos_prev: float
    norm_ratio: float
    steer_trait: float = float("nan")
    steer_gain: float = float("nan")
    pairs_kept: int = 0
    cos_final_by_layer: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["cos_final_by_layer"] = [round(c, 4) for c in self.cos_final_by_layer]
        return d


def _reference_responses(reference) -> list[Response]:
    rows = reference.meta.get("responses") if reference is not None else None
    if not rows:
        raise ValueError("responses='fixed' needs reference=<a PersonaVector from extract_persona_vector> (its "
                         "judged responses are replayed through every checkpoint)")
    keys = set(Response.__dataclass_fields__)
    return [Response(**{k: v for k, v in r.items() if k in keys}) for r in rows]


def trace_checkpoints(checkpoints: Sequence, trait: Trait | str, judge=None, *, layer: int,
                      responses: str = "fixed", reference=None, extract: ExtractConfig | None = None,
                      steer: SteerConfig | None = None, coef: float = 1.5, steer_eval: bool = True,
                      progress: bool = True) -> list[TraceRow]:
    """One :class:`TraceRow` per checkpoint, in order (module docstring)."""
    if len(checkpoints) < 1:
        raise ValueError("give at least one checkpoint")
    if responses not in ("fixed", "generate"):
        raise ValueError(f"responses must be 'fixed' or 'generate', got {responses!r}")
    if (responses == "generate" or steer_eval) and judge is None:
        raise ValueError("a judge is needed to generate responses or to score steering: pass judge=RubricJudge(...)"
                         " or steer_eval=False with responses='fixed'")
    trait = load_trait(trait)
    ecfg = extract or (ExtractConfig(**reference.meta["config"]) if reference is not None and
                       "config" in reference.meta else ExtractConfig())
    fixed = _reference_responses(reference) if responses == "fixed" else None
    refs = [_as_ref(c) for c in checkpoints]
    vectors: list[Tensor] = []
    norms: list[Tensor] = []
    kept: list[int] = []
    model = None
    for i, ref in enumerate(refs):
        model = load_ref(ref)
        if fixed is not None:
            with torch_threads(ecfg.threads):
                pv = vector_from_responses(model, trait, fixed, ecfg)
        else:
            pv = extract_persona_vector(model, trait, judge, ecfg, progress=progress)
        n_layers = int(pv.vectors.shape[0])
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} does not exist: the checkpoints have layers 0..{n_layers - 1}")
        if vectors and pv.vectors.shape != vectors[0].shape:
            raise ValueError(f"checkpoint {ref.name!r} has vectors of shape {tuple(pv.vectors.shape)}, the first one "
                             f"{tuple(vectors[0].shape)}: all checkpoints must share one architecture")
        vectors.append(pv.vectors)
        assert pv.resid_norm is not None  # extraction records the residual norm at every layer
        norms.append(pv.resid_norm)
        kept.append(int(pv.meta.get("pairs_kept", 0)))
        if i < len(refs) - 1 and ref.model is None:
            del model
            model = None
            gc.collect()
    final = vectors[-1]
    rows = []
    for i, (ref, v) in enumerate(zip(refs, vectors)):
        by_layer = cosine_similarity(v, final, dim=-1).tolist()
        prev = float(cosine_similarity(v[layer], vectors[i - 1][layer], dim=0)) if i else float("nan")
        rows.append(TraceRow(ref.name, by_layer[layer], prev, float(v[layer].norm() / norms[i][layer]),
                             pairs_kept=kept[i], cos_final_by_layer=by_layer))
    if steer_eval:
        scfg = steer or SteerConfig(n_questions=5, n_samples=2)
        questions = trait.eval_questions[: scfg.n_questions]
        assert model is not None  # the last checkpoint's model stays loaded
        base, _, _ = score_condition(model, questions, None, judge, scfg)
        for row, v in zip(rows, vectors):
            t, _, _ = score_condition(model, questions, persona_steering(v[layer], layer, coef), judge, scfg)
            row.steer_trait, row.steer_gain = t, t - base
    return rows


def projection_shift(checkpoints: Sequence, pv, trait: Trait | str, judge, *, layer: int, n_questions: int = 10,
                     n_samples: int = 2, max_new_tokens: int = 40, seed: int = 3, progress: bool = True) -> list[dict]:
    """Per checkpoint: the mean projection of the last prompt token on ``pv`` at ``layer`` (the trait's evaluation
    questions, chat template, no system prompt) and the mean judged trait of the checkpoint's own answers; with the
    shift of both from the first checkpoint. The persona-vector paper's finding is that the projection shift
    predicts the behaviour shift: a fine-tune that teaches the trait moves both, a control moves neither."""
    from workbench.data.chat import chat_prompt
    from workbench.intervene.generation import GenerationConfig, generate
    from workbench.persona.monitor import prompt_projection

    trait = load_trait(trait)
    vector = pv.vectors[int(layer)] if hasattr(pv, "vectors") else torch.as_tensor(pv)
    questions = trait.eval_questions[:n_questions]
    rows = []
    for ref in [_as_ref(c) for c in checkpoints]:
        model = load_ref(ref)
        projs, scores, texts = [], [], []
        for k, q in enumerate(questions):
            prompt = chat_prompt(model, q)
            with torch_threads(1):
                projs.append(prompt_projection(model, prompt, vector, layer))
            gen = generate(model, prompt, GenerationConfig(max_new_tokens=max_new_tokens, n_samples=n_samples,
                                                           seed=seed * 100003 + k))
            for t in gen.texts:
                scores.append(judge(q, t.strip()).trait)
                texts.append(t.strip())
        rows.append({"checkpoint": ref.name, "projection": sum(projs) / len(projs),
                     "trait": sum(scores) / len(scores), "examples": texts[:3]})
        if ref.model is None:
            del model
            gc.collect()
    for r in rows:
        r["projection_shift"] = r["projection"] - rows[0]["projection"]
        r["trait_shift"] = r["trait"] - rows[0]["trait"]
    return rows
