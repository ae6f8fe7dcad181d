"""Elicitation strategies compared at one setting, with the persona-selection SAE (notebook 15's last part,
docs/methods.md §32).

    from workbench.studies.strategies import strategies_study
    result = strategies_study(model, selection_sizes())   # {"traits": {name: {"rows", "cosines"}}, ...}

Per trait (pirate, French): the five directions of :mod:`workbench.persona.elicit` (the system-prompt one is notebook
09's smoke persona vector; the feature one uses the study SAE at its layer), their cosines at that layer, and
:func:`~workbench.persona.elicit.evaluate_strategies` at layer 15 and one coefficient, every direction rescaled to
the system-prompt vector's norm there. Steering is on fresh seeds (not the seeds any sweep chose on), against a
random direction and, where the strategy has one, its shuffled-label control; monitoring r and the top SAE features
are beside them. Cached as JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from workbench.core.protocols import ModelLike
from workbench.persona.steer import SteerConfig
from workbench.studies.persona_selection import LAYER, SelectionSizes, cached_json, selection_sae

__all__ = ["StrategySizes", "strategies_study", "strategy_sizes"]


@dataclass(frozen=True)
class StrategySizes:
    """``steer``: the answers per condition (its seed is fresh); ``coef``: the steering coefficient at ``LAYER``;
    ``monitor_questions`` x ``monitor_samples``: the monitoring prompts (0: none)."""

    traits: tuple[str, ...] = ("pirate", "french")
    coef: float = 1.5
    steer: SteerConfig = SteerConfig(n_questions=4, n_samples=2, max_new_tokens=32, seed=23, ppl_contexts=4)
    monitor_questions: int = 4
    monitor_samples: int = 2


def strategy_sizes(smoke: bool) -> StrategySizes:
    if smoke:
        return StrategySizes(traits=("pirate",), steer=SteerConfig(n_questions=1, n_samples=1, max_new_tokens=8,
                                                                   seed=23, ppl_contexts=1), monitor_questions=0)
    return StrategySizes()


def _strategies(model: ModelLike, sizes: SelectionSizes, ss: StrategySizes, progress: bool) -> dict:
    from workbench.persona.elicit import STRATEGIES, compare_strategies, elicit, evaluate_strategies
    from workbench.persona.judge import RubricJudge
    from workbench.studies.persona import persona_sizes, persona_vector

    study = selection_sae(model, sizes, progress)
    out: dict[str, Any] = {"layer": LAYER, "coef": ss.coef, "traits": {}}
    for t in ss.traits:
        judge = RubricJudge(t)
        vectors = {}
        for s in STRATEGIES:
            if s == "system_prompt":
                vectors[s] = persona_vector(model, t, sizes=persona_sizes("smoke"), progress=progress)
            else:
                vectors[s] = elicit(model, s, t, sae=study.sae, sae_layer=LAYER)
        norm = float(vectors["system_prompt"].vectors[LAYER].norm())
        rows = evaluate_strategies(model, vectors, t, judge, LAYER, ss.coef, ss.steer, sae=study.sae, norm=norm,
                                   monitor_questions=ss.monitor_questions, monitor_samples=ss.monitor_samples,
                                   progress=progress)
        for r in rows:
            controls = [r[c]["gain"] for c in ("random", "shuffled") if c in r]
            r["margin_over_controls"] = round(r["persona"]["gain"] - max(controls), 2)
        out["traits"][t] = {"rows": rows, "cosines": compare_strategies(vectors, [LAYER]), "norm": norm,
                            "n_meeting_target": sum(r["margin_over_controls"] >= 30 for r in rows)}
    return out


def strategies_study(model: ModelLike, sizes: SelectionSizes | None = None, ss: StrategySizes | None = None, *,
                     progress: bool = False) -> dict:
    """The strategies table (module docstring) for ``sizes``' SAE; ``ss``: its own counts (default: by
    ``$WORKBENCH_PROFILE``, as ``sizes``)."""
    from workbench.studies.persona_selection import selection_sizes
    from workbench.studies.profile import current_profile

    sizes = sizes or selection_sizes()
    ss = ss or strategy_sizes(current_profile().smoke)
    return cached_json("strategies", sizes, {"model": str(getattr(model, "workbench_name", "model")), "v": 1,
                                             "strategies": asdict(ss)},
                       lambda: _strategies(model, sizes, ss, progress))
