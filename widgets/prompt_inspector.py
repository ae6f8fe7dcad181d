"""Which features fire on a prompt: a token x feature heatmap of the top features (``features_for_text``), and
for a selected token its own top features.

    insp = PromptInspector(model, sae, results=results)   # results: optional, adds corpus-relative activations
    insp.run("The Golden Gate Bridge is in San Francisco")
    insp.select_token(4)                                    # or click a heatmap cell (with plotly's widget backend)
"""
from __future__ import annotations

import plotly.graph_objects as go

from workbench.analysis.search import TextSearchResult, features_for_text
from workbench.sae.interop import as_sae

from workbench.report import html as H
from .view import View

__all__ = ["PromptInspector", "heatmap_figure"]


def _label(tok: str, j: int) -> str:
    return f"{j}:{tok.replace(chr(10), '⏎')}"


def heatmap_figure(result: TextSearchResult, height: int | None = None, *, include_bos: bool = False) -> go.Figure:
    """Features (rows, ranked) x tokens (columns) of the activations in ``result``. The BOS column is left out by
    default: features fire 10-20x harder there than on words, so it would set the colour scale alone."""
    feats = [h.feature for h in result.hits]
    first = 0 if include_bos else result.span[0]
    cols = list(range(first, len(result.tokens)))
    z = result.acts[first:].T.tolist() if feats else [[0.0] * len(cols)]
    fig = go.Figure(go.Heatmap(z=z, x=[_label(result.tokens[j], j) for j in cols],
                               y=[f"F{f}" for f in feats] or ["(none)"], colorscale="Oranges",
                               customdata=[cols] * max(len(feats), 1),
                               hovertemplate="%{y} on %{x}: %{z:.3g}<extra></extra>"))
    fig.update_layout(height=height or 120 + 18 * max(len(feats), 1), margin=dict(l=60, r=10, t=24, b=80),
                      yaxis=dict(autorange="reversed"), title=dict(text="top features by token", font=dict(size=12)))
    return fig


class PromptInspector(View):
    """A text box and a heatmap; ``select_token(j)`` lists that token's strongest features."""

    def __init__(self, model, sae, *, results=None, top_n: int = 15, token_top_n: int = 10, text: str | None = None):
        sae = as_sae(sae, model=model)  # a sae_lens.SAE, a folder...; on the model's device
        self.model, self.sae, self.results = model, sae, results
        self.top_n, self.token_top_n = int(top_n), int(token_top_n)
        self.result: TextSearchResult | None = None
        self.selected_token: int | None = None
        self.token_result: TextSearchResult | None = None
        self._ui = None
        self._syncing = False
        if text:
            self.run(text)

    def run(self, text: str) -> TextSearchResult:
        """Encode ``text`` and rank the features firing on it (by max activation over its tokens)."""
        if not text or not text.strip():
            raise ValueError("the prompt is empty: type some text")
        self.result = features_for_text(self.model, self.sae, text, top_n=self.top_n, results=self.results)
        self.selected_token, self.token_result = None, None
        self._refresh()
        return self.result

    def select_token(self, j: int) -> list[tuple[int, float]]:
        """The strongest features on token ``j`` of the prompt (position 0 is BOS), as (feature, activation)."""
        if self.result is None:
            raise ValueError("no prompt yet: call run(text) first")
        n = len(self.result.tokens)
        if not 0 <= int(j) < n:
            raise ValueError(f"token {j} out of range: the prompt has {n} tokens (0 is BOS)")
        self.selected_token = int(j)
        self.token_result = features_for_text(self.model, self.sae, self.result.text, span=(int(j), int(j) + 1),
                                              top_n=self.token_top_n, results=self.results)
        self._refresh_token()
        return self.token_features

    @property
    def token_features(self) -> list[tuple[int, float]]:
        if self.token_result is None:
            return []
        return [(h.feature, h.max_activation) for h in self.token_result.hits]

    def figure(self) -> go.Figure:
        if self.result is None:
            raise ValueError("no prompt yet: call run(text) first")
        return heatmap_figure(self.result)

    # ----- rendering -----

    def token_html(self) -> str:
        if self.token_result is None:
            return '<div class="wb-muted">select a token to see its top features</div>'
        j = self.selected_token
        tok = self.result.tokens[j]
        rows = [[f"F{h.feature}", h.max_activation, "" if h.relative is None else f"{h.relative:.2f}"]
                for h in self.token_result.hits]
        return (f"<div><b>token {j} {H.escape(repr(tok))}</b>"
                + H.table(["feature", "activation", "÷ corpus max"], rows) + "</div>")

    def to_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        if self.result is None:
            return '<div class="wb-muted">no prompt</div>'
        return super().to_html(include_plotlyjs)

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        return (f'<div class="wb-ex">{H.escape(self.result.text)}</div>'
                f"{H.figure_html(self.figure(), include_plotlyjs)}{self.token_html()}")

    def plain_text(self) -> str:
        if self.result is None:
            return "PromptInspector: no prompt yet"
        tok = "" if self.selected_token is None else f", token {self.selected_token} selected"
        return f"PromptInspector: {len(self.result.hits)} features on {self.result.text[:60]!r}{tok}"

    def _build_widget(self):
        """The ipywidgets view: prompt box, run button, heatmap, token selector, token table."""
        import ipywidgets as W

        ui = {"text": W.Textarea(value=self.result.text if self.result else "", placeholder="type a prompt",
                                 layout=W.Layout(width="100%")),
              "run": W.Button(description="inspect"), "plot": W.Box(),
              "token": W.Dropdown(description="token", options=[]), "table": W.HTML()}
        ui["run"].on_click(lambda _: self.run(ui["text"].value))
        ui["token"].observe(lambda ch: not self._syncing and ch["new"] is not None
                            and ch["new"] != self.selected_token and self.select_token(ch["new"]), names="value")
        self._ui = ui
        box = W.VBox([ui["text"], ui["run"], ui["plot"], ui["token"], ui["table"]])
        self._refresh()
        self._refresh_token()
        return box

    def _on_click(self, points: list[dict]) -> None:
        if points:
            col = points[0].get("customdata")  # the token position of the clicked column
            if col is not None:
                self.select_token(int(col))

    def _refresh(self) -> None:
        if self._ui is None or self.result is None:
            return
        plot = self.figure_output(self.figure(), on_click=self._on_click)  # clicking a cell selects its token
        self._ui["plot"].children = [plot]
        first = self.result.span[0]
        self._syncing = True  # new options must not pick a token by themselves
        try:
            self._ui["token"].options = [(_label(t, j), j) for j, t in enumerate(self.result.tokens) if j >= first]
        finally:
            self._syncing = False
        self._refresh_token()

    def _refresh_token(self) -> None:
        if self._ui is not None:
            menu = self._ui["token"]
            if menu.value != self.selected_token:  # the menu names the token the table shows
                self._syncing = True
                try:
                    menu.value = self.selected_token if any(v == self.selected_token for _, v in menu.options) else None
                finally:
                    self._syncing = False
            self._ui["table"].value = f"<style>{H.STYLE}</style>" + self.token_html()
