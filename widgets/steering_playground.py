"""Steer a model by hand: a prompt, a feature picked by search, a strength, and unsteered vs steered generations
side by side (same seeds, so the only difference is the intervention).

    pg = SteeringPlayground(model, sae, max_acts, explanations=explanations)
    pg.set_prompt("I went on holiday to")
    pg.search("bridge")           # explanation text; a number picks that feature; else the features firing on it
    pg.set_feature(pg.matches[0]); pg.set_strength(10); pg.set_method("clamp")
    unsteered, steered = pg.run()
    pg.to_html()
"""
from __future__ import annotations

from dataclasses import replace

import torch

from workbench.analysis.search import features_for_text, search_explanations
from workbench.data.chat import chat_prompt
from workbench.data.hooks import sae_hook
from workbench.intervene.generation import Generation, GenerationConfig
from workbench.intervene.steering import steered_generate, steering_methods

from workbench.report import html as H
from workbench.sae.interop import as_sae

from .view import View

__all__ = ["SteeringPlayground"]

METHODS = ("clamp", "add feature")


class SteeringPlayground(View):
    """State (prompt, feature, strength, method) plus an ipywidgets view kept in sync with it.

    ``max_activations`` [d_sae]: each feature's max over the training data (``FeatureResults.max_activation`` or
    :func:`workbench.intervene.steering.max_activations`); strength ``c`` clamps the feature to ``c x`` that max, or adds
    ``c x max x W_dec[i]`` (method ``"add feature"``). ``chat=True`` wraps the prompt in the model's chat template.
    """

    def __init__(self, model, sae, max_activations, *, explanations=None, config: GenerationConfig | None = None,
                 chat: bool | None = None, hook: str | None = None, strength_range: tuple[float, float] = (-20, 20)):
        sae = as_sae(sae, model=model)  # a sae_lens.SAE, a folder...; on the model's device
        self.model, self.sae, self.explanations = model, sae, explanations
        self.max_activations = torch.as_tensor(max_activations, dtype=torch.float32).cpu()
        if self.max_activations.shape != (int(sae.cfg.d_sae),):
            raise ValueError(f"max_activations has shape {tuple(self.max_activations.shape)}, the SAE has "
                             f"d_sae={sae.cfg.d_sae}: pass one max per feature")
        self.hook = sae_hook(sae, hook)
        self.config = config or GenerationConfig(max_new_tokens=24, n_samples=2)
        has_template = bool(getattr(model.tokenizer, "chat_template", None))
        self.chat = has_template if chat is None else bool(chat)
        self.strength_range = (float(strength_range[0]), float(strength_range[1]))
        self.prompt = ""
        self.feature: int | None = None
        self.strength = 10.0
        self.method = "clamp"
        self.query = ""
        self.matches: list[int] = []
        self.unsteered: Generation | None = None
        self.steered: Generation | None = None
        self._unsteered_key = None
        self._ui = None
        self._syncing = False

    # ----- state -----

    def set_prompt(self, text: str) -> None:
        if not text or not text.strip():
            raise ValueError("the prompt is empty: type some text")
        self.prompt = text
        self._sync()

    def set_feature(self, feature: int) -> None:
        d = int(self.sae.cfg.d_sae)
        if not hasattr(feature, "__index__"):
            raise ValueError(f"feature must be an integer index, got {feature!r}")
        if not 0 <= int(feature) < d:
            raise ValueError(f"unknown feature index {feature}: the SAE has features 0..{d - 1}")
        if float(self.max_activations[int(feature)]) <= 0:
            raise ValueError(f"feature {feature} never fired in the training data (max activation 0): strength x max "
                             "would be 0; pick an alive feature")
        self.feature = int(feature)
        self._sync()

    def set_strength(self, c: float) -> None:
        lo, hi = self.strength_range
        if not lo <= float(c) <= hi:
            raise ValueError(f"strength {c} is outside [{lo}, {hi}] (multiples of the feature's max activation)")
        self.strength = float(c)
        self._sync()

    def set_method(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
        self.method = method
        self._sync()

    def search(self, query: str, top_n: int = 20) -> list[int]:
        """Candidate features: the number itself for a feature id; else explanations matching ``query`` (when
        explanations were given); else the features most active on ``query`` as text (relative to their max)."""
        q = query.strip()
        if not q:
            raise ValueError("the query is empty")
        self.query = q
        if q.lstrip("F").isdigit():
            i = int(q.lstrip("F"))
            if not 0 <= i < int(self.sae.cfg.d_sae):
                raise ValueError(f"unknown feature index {i}: the SAE has features 0..{self.sae.cfg.d_sae - 1}")
            found = [i]
        elif self.explanations is not None and (hits := search_explanations(self.explanations, q, top_n)):
            found = [h.feature for h in hits]
        else:
            res = features_for_text(self.model, self.sae, q, top_n=top_n, hook=self.hook)
            mx = self.max_activations
            hits = sorted(res.hits, key=lambda h: -h.max_activation / max(float(mx[h.feature]), 1e-12))
            found = [h.feature for h in hits]
        self.matches = [i for i in found if float(self.max_activations[i]) > 0]
        self._sync()
        return self.matches

    def describe(self, i: int) -> str:
        """``F<i>`` and its explanation, when there is one (an ExplanationSet or a mapping feature -> text)."""
        text = ""
        if self.explanations is not None and i in self.explanations:
            unit = self.explanations[i]
            expl = getattr(unit, "explanation", unit)
            text = getattr(expl, "text", expl) or ""
        return f"F{i}" + (f": {text}" if text else "")

    # ----- running -----

    def _prompt_text(self) -> str:
        if not self.prompt:
            raise ValueError("no prompt yet: call set_prompt(text) first")
        if self.chat:

            return chat_prompt(self.model, self.prompt)
        return self.prompt

    def steering(self):
        """The current intervention (a :class:`workbench.intervene.steering.Steering`)."""
        if self.feature is None:
            raise ValueError("no feature yet: call set_feature(i) (search(query) lists candidates)")
        methods = steering_methods(self.sae, self.feature, float(self.max_activations[self.feature]), self.hook)
        return methods[self.method](self.strength)

    def run(self) -> tuple[list[str], list[str]]:
        """Generate with and without the intervention (same seed); returns (unsteered, steered) texts. The unsteered
        generations are reused while the prompt and settings are unchanged."""
        text, steering = self._prompt_text(), self.steering()
        key = (text, self.config)
        if self._unsteered_key != key:
            self.unsteered = steered_generate(self.model, text, None, self.config)
            self._unsteered_key = key
        self.steered = steered_generate(self.model, text, steering, self.config)
        self._sync()
        return self.unsteered.texts, self.steered.texts

    def set_config(self, **changes) -> None:
        """Change generation settings (``max_new_tokens``, ``n_samples``, ``temperature``, ``seed``...)."""
        self.config = replace(self.config, **changes)
        self._sync()

    # ----- rendering -----

    def _column(self, title: str, gen: Generation | None) -> str:
        if gen is None:
            body = '<div class="wb-muted">not run yet</div>'
        else:
            body = "".join(f'<div class="wb-ex">{H.escape(t)}</div>' for t in gen.texts)
        return (f'<div style="flex:1;min-width:0"><b>{H.escape(title)}</b>{body}</div>')

    def settings_html(self) -> str:
        feat = self.describe(self.feature) if self.feature is not None else "(no feature)"
        mx = f"{float(self.max_activations[self.feature]):.4g}" if self.feature is not None else "-"
        return H.table(["prompt", "feature", "max activation", "method", "strength"],
                       [[self.prompt, feat, mx, self.method, f"{self.strength:+g}x"]])

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        """Settings, then the unsteered and steered generations side by side (no chart: ``include_plotlyjs`` is
        unused)."""
        steered_title = (f"steered ({self.method} F{self.feature} at {self.strength:+g}x max)"
                         if self.feature is not None else "steered")
        return (f"<h3>Steering playground</h3>{self.settings_html()}"
                f'<div style="display:flex;gap:12px">{self._column("unsteered", self.unsteered)}'
                f"{self._column(steered_title, self.steered)}</div>")

    def plain_text(self) -> str:
        feat = f"F{self.feature}, {self.method} at {self.strength:+g}x max" if self.feature is not None else \
            "no feature"
        return f"SteeringPlayground: {feat}; prompt {self.prompt[:60]!r}"

    def _build_widget(self):
        """The ipywidgets view: prompt box, feature search and picker, method, strength slider, run, outputs."""
        import ipywidgets as W

        lo, hi = self.strength_range
        ui = {"prompt": W.Textarea(value=self.prompt, placeholder="a prompt", layout=W.Layout(width="100%")),
              "query": W.Text(value=self.query, placeholder="search features (text, explanation or id)"),
              "search": W.Button(description="search"),
              "feature": W.Dropdown(description="feature", options=[], layout=W.Layout(width="100%",
                                                                                      max_width="760px")),
              "method": W.ToggleButtons(options=list(METHODS), value=self.method),
              # a wide slider (about 16 px per unit over ±20) and a box to type an exact value
              "strength": W.FloatSlider(value=self.strength, min=lo, max=hi, step=0.5, description="strength",
                                        continuous_update=False, readout_format="+.1f",
                                        layout=W.Layout(width="100%", max_width="760px"),
                                        style={"description_width": "initial"}),
              "run": W.Button(description="generate", button_style="primary"),
              "out": W.HTML()}
        ui["search"].on_click(lambda _: self.search(ui["query"].value))
        ui["feature"].observe(lambda ch: not self._syncing and ch["new"] is not None
                              and ch["new"] != self.feature and self.set_feature(ch["new"]), names="value")
        ui["method"].observe(lambda ch: self.set_method(ch["new"]), names="value")
        ui["strength"].observe(lambda ch: self.set_strength(ch["new"]), names="value")

        def go(_):
            if ui["prompt"].value != self.prompt:
                self.set_prompt(ui["prompt"].value)
            self.run()

        ui["run"].on_click(go)
        self._ui = ui
        box = W.VBox([ui["prompt"], W.HBox([ui["query"], ui["search"]]), ui["feature"], ui["method"],
                      ui["strength"], ui["run"], ui["out"]])
        self._sync()
        return box

    def _sync(self) -> None:
        if self._ui is None:
            return
        ui = self._ui
        options = list(dict.fromkeys(([self.feature] if self.feature is not None else []) + self.matches))
        self._syncing = True  # new search results fill the menu; only a user's pick changes the feature
        try:
            ui["feature"].options = [(self.describe(i)[:100], i) for i in options]
            ui["feature"].value = self.feature if self.feature in options else None
        finally:
            self._syncing = False
        hint = ""
        if self.query:  # a search fills the menu and says so; it never picks a feature by itself
            hint = (f'<div class="wb-muted">{len(self.matches)} features for {H.escape(repr(self.query))}: pick one in '
                    f"the feature menu</div>" if self.matches else
                    f'<div class="wb-muted">no alive feature for {H.escape(repr(self.query))}</div>')
        ui["out"].value = f"<style>{H.STYLE}</style>" + hint + self.to_html()
