"""Clamping the code-error feature on the paper's REPL prompt: ``+3x`` its max on the correct code (does the model
now write a traceback?) and ``-5x`` on the buggy code (does the traceback go away?), the SAE error term kept
(:class:`workbench.intervene.steering.FeatureClamp`), each beside no clamp and a random alive feature clamped the
same, judged by :func:`workbench.analysis.code_errors.writes_traceback`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import Tensor

from workbench.core.protocols import ModelLike, SAELike
from workbench.analysis.code_errors import paper_prompt, writes_traceback
from workbench.intervene.generation import GenerationConfig
from workbench.intervene.steering import FeatureClamp, steered_generate

__all__ = ["ClampOutcome", "clamp_outcomes"]


# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ClampOutcome:
    """One condition of the clamp experiment: how many of the samples wrote a traceback, and the texts."""

    prompt: str
    feature: int | None
    multiple: float
    label: str
    tracebacks: int
    n: int
    texts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def clamp_outcomes(model: ModelLike, sae: SAELike, hook: str, feature: int, max_act: Tensor, *, control: int,
                   n_samples: int = 8, max_new_tokens: int = 24, seed: int = 0) -> list[ClampOutcome]:
    """The paper's two tests, each with no clamp, the feature and the random ``control`` feature: ``+3x`` max on
    the correct prompt (does a traceback appear?) and ``-5x`` max on the buggy prompt (does it go away?)."""
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, n_samples=n_samples, temperature=0.7, seed=seed)
    out = []
    for buggy, mult in ((False, 3.0), (True, -5.0)):
        prompt = paper_prompt(buggy)
        for label, feat in (("none", None), ("feature", feature), ("control", control)):
            steer = None if feat is None else FeatureClamp(hook=hook, sae=sae, feature=int(feat),
                                                           value=float(mult * max_act[feat]))
            gen = steered_generate(model, prompt, steer, cfg)
            texts = list(gen.texts)
            out.append(ClampOutcome(prompt, feat, 0.0 if feat is None else mult, label,
                                    sum(writes_traceback(t) for t in texts), len(texts), texts))
    return out
