"""Watch a persona trait in a conversation: each token's projection on the trait's vector (a heatmap), a coefficient
slider that regenerates the reply steered along the vector, and the SAE features closest to the vector.

    pm = PersonaMonitor(model, pv, layer=15, sae=sae, explanations=explanations)
    pm.set_message("How do I make tea?")       # optional: system=..., history=[(user, assistant), ...]
    pm.set_coef(6.0)                           # regenerates the reply with 6 x v added at layer 15
    pm.to_html()                               # heatmap (red: towards the trait, blue: away), features, reply

``pv``: a :class:`workbench.persona.extract.PersonaVector` (or a ``[n_layers, d_model]`` tensor); ``judge``: optional,
scores each reply (e.g. :class:`workbench.persona.judge.RubricJudge`). See docs/methods.md §12, §16.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from workbench.data.chat import chat_messages, chat_prompt
from workbench.intervene.generation import Generation, GenerationConfig
from workbench.intervene.steering import steered_generate
from workbench.persona.decompose import decompose
from workbench.persona.monitor import token_projections
from workbench.persona.steer import persona_steering
from workbench.report import html as H
from workbench.sae.interop import as_sae

from .view import View

__all__ = ["PersonaMonitor"]


def _signed_spans(tokens, values, scale: float) -> str:
    parts = []
    for tok, v in zip(tokens, values):
        a = min(abs(float(v)) / max(scale, 1e-12), 1.0)
        rgb = "220,50,47" if v > 0 else "38,139,210"
        show = H.escape(tok.replace("\n", "⏎"))
        parts.append(f'<span class="wb-tok" style="background:rgba({rgb},{a:.2f})" title="{float(v):+.3f}">{show}'
                     "</span>")
    return "".join(parts)


class PersonaMonitor(View):
    """State (conversation, coefficient) plus an ipywidgets view kept in sync with it (module docstring)."""

    def __init__(self, model, pv, layer: int, *, sae=None, explanations=None, judge=None,
                 config: GenerationConfig | None = None, coef_range: tuple[float, float] = (-10.0, 10.0),
                 top_features: int = 8):
        if sae is not None and not isinstance(sae, torch.Tensor):  # a bare decoder matrix stays as it is
            sae = as_sae(sae, model=model)  # a sae_lens.SAE, a folder...
        self.model, self.sae, self.explanations, self.judge = model, sae, explanations, judge
        vectors = getattr(pv, "vectors", pv)
        self.trait = getattr(pv, "trait", "trait")
        if not 0 <= int(layer) < vectors.shape[0]:
            raise ValueError(f"layer {layer} does not exist: the vector has layers 0..{vectors.shape[0] - 1}")
        self.layer = int(layer)
        self.vector = vectors[self.layer].detach().to(torch.float32).cpu()
        self.config = config or GenerationConfig(max_new_tokens=40, n_samples=1)
        self.coef_range = (float(coef_range[0]), float(coef_range[1]))
        self.coef = 0.0
        self.system: str | None = None
        self.history: list[tuple[str, str]] = []
        self.message = ""
        self.reply: Generation | None = None
        self.tokens: list[str] = []
        self.projections = torch.zeros(0)
        self.top_features = self._top_features(top_features)
        self._ui = None

    def _top_features(self, n: int) -> list[tuple[int, float]]:
        if self.sae is None:
            return []
        return decompose(self.vector, self.sae, top_n=n, ks=()).top

    # ----- state -----

    def set_message(self, text: str, *, system: str | None = None, history=()) -> None:
        if not text or not text.strip():
            raise ValueError("the message is empty: type something to say to the model")
        self.message, self.system, self.history = text, system, list(history)
        self.run()

    def set_coef(self, coef: float) -> None:
        lo, hi = self.coef_range
        if not lo <= float(coef) <= hi:
            raise ValueError(f"coefficient {coef} is outside [{lo}, {hi}]")
        self.coef = float(coef)
        if self.message:
            self.run()
        self._sync()

    def set_config(self, **changes) -> None:
        self.config = replace(self.config, **changes)

    # ----- running -----

    def prompt(self) -> str:
        messages = chat_messages(self.message, self.system, self.history)
        return chat_prompt(self.model, messages)

    def run(self) -> str:
        """Regenerate the reply at the current coefficient and project the whole conversation; returns the reply."""
        prompt = self.prompt()
        steering = persona_steering(self.vector, self.layer, self.coef) if self.coef else None
        self.reply = steered_generate(self.model, prompt, steering, self.config)
        text = self.reply.texts[0].strip()
        self.tokens, self.projections = token_projections(self.model, prompt + text, self.vector, self.layer)
        self._sync()
        return text

    def describe(self, i: int) -> str:
        text = ""
        if self.explanations is not None:
            unit = self.explanations.get(i) if hasattr(self.explanations, "get") else None
            text = getattr(getattr(unit, "explanation", unit), "text", unit) or ""
        return f"F{i}" + (f": {text}" if text else "")

    # ----- rendering -----

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        """The reply, each token's projection, the top SAE features (no chart: ``include_plotlyjs`` is unused)."""
        scale = float(self.projections.abs().max()) if len(self.projections) else 1.0
        heat = _signed_spans(self.tokens, self.projections.tolist(), scale) if self.tokens else \
            '<div class="wb-muted">no conversation yet</div>'
        reply = self.reply.texts[0].strip() if self.reply is not None else ""
        score = ""
        if self.judge is not None and reply:
            s = self.judge(self.message, reply)
            score = f" · judged trait {s.trait:.0f}, coherence {s.coherence:.0f}"
        feats = H.table(["feature", "cosine"], [[self.describe(i), c] for i, c in self.top_features]) \
            if self.top_features else '<div class="wb-muted">no SAE given</div>'
        return (f"<h3>Persona monitor: {H.escape(self.trait)} (layer {self.layer}, "
                f"coefficient {self.coef:+g}{score})</h3>"
                f"<div><b>reply</b><div class=\"wb-ex\">{H.escape(reply)}</div></div>"
                f"<div><b>projection per token</b> (red: towards the trait, blue: away; max |p| {scale:.3g})"
                f'<div class="wb-ex">{heat}</div></div><div><b>top SAE features</b>{feats}</div>')

    def plain_text(self) -> str:
        said = f"; {len(self.tokens)} tokens of conversation" if self.tokens else "; no conversation yet"
        return f"PersonaMonitor: {self.trait} at layer {self.layer}, coefficient {self.coef:+g}{said}"

    def _build_widget(self):
        """The ipywidgets view: message box, coefficient slider, send button, output."""
        import ipywidgets as W

        lo, hi = self.coef_range
        ui = {"message": W.Textarea(value=self.message, placeholder="a message", layout=W.Layout(width="100%")),
              "coef": W.FloatSlider(value=self.coef, min=lo, max=hi, step=0.5, description="coefficient",
                                    continuous_update=False),
              "send": W.Button(description="send", button_style="primary"),
              "out": W.HTML()}
        ui["coef"].observe(lambda ch: self.set_coef(ch["new"]), names="value")
        ui["send"].on_click(lambda _: self.set_message(ui["message"].value, system=self.system,
                                                       history=self.history))
        self._ui = ui
        box = W.VBox([ui["message"], ui["coef"], ui["send"], ui["out"]])
        self._sync()
        return box

    def _sync(self) -> None:
        if self._ui is None:
            return
        self._ui["out"].value = f"<style>{H.STYLE}</style>" + self.to_html()
