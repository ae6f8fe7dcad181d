"""Browse the features of a :class:`workbench.analysis.features.FeatureResults`: search (explanation text, or a feature
id), sort (density, max activation, explanation score, index), page, select one to see its :class:`FeatureCard`.

Every control is a method, so a notebook or a test drives it without clicks::

    b = FeatureBrowser(results, explanations)
    b.search("bridge"); b.sort_by("max_activation"); b.next_page(); card = b.select(b.visible[0])

``order=`` lists the features to show, in the order to show them (e.g. concept features first); the sort menu
then offers "given" (that order, the default) beside the usual keys, which sort the same features.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from workbench.analysis.search import search_explanations

from workbench.report import html as H
from .feature_card import FeatureCard
from .view import View

__all__ = ["FeatureBrowser", "SORT_KEYS"]

SORT_KEYS = ("density", "max_activation", "score", "index")


class FeatureBrowser(View):
    """State (query, sort, page, selection) plus an ipywidgets view kept in sync with it.

    ``order``: the features to list and their order (default: every alive feature, or every feature with
    ``include_dead``, by ``sort``); ``sort``: default "given" when ``order`` is passed, else "density"."""

    frame = "wb-browser"

    def __init__(self, results, explanations=None, *, page_size: int = 20, sort: str | None = None,
                 include_dead: bool = False, order: Sequence[int] | None = None):
        if page_size < 1:
            raise ValueError(f"page_size must be a positive integer, got {page_size}")
        self.results, self.explanations = results, explanations
        self.page_size, self.include_dead = int(page_size), include_dead
        self.given_order: list[int] | None = None if order is None else self._check_order(order)
        self.query = ""
        self.sort_key = "density"
        self.page = 0
        self.selected: int | None = None
        self.card: FeatureCard | None = None
        self._matches: list[int] | None = None  # None: no query, every feature
        self._ui = None
        self._syncing = False
        self.sort_by(sort or ("given" if self.given_order is not None else "density"))

    @classmethod
    def concept_first(cls, results, explanations=None, *, store=None, concept_scores=None, tokenizer=None,
                      **kwargs) -> "FeatureBrowser":
        """A browser over every alive feature in reading order: features that carry a concept first (ranked by
        :func:`workbench.analysis.reading_order.lead_order`, with ``concept_scores`` e.g. a concept-probing
        scorecard's ``feature_scores``), then the dense ones and, last, the token / position / whitespace /
        punctuation detectors (docs/methods.md §22)."""
        from workbench.analysis.reading_order import lead_order

        order = lead_order(results, store=store, concept_scores=concept_scores, tokenizer=tokenizer,
                           include_rest=True)
        return cls(results, explanations, order=order, **kwargs)

    def _check_order(self, order: Sequence[int]) -> list[int]:
        out = [self.results.check_index(i) for i in order]
        if not out:
            raise ValueError("order is empty: pass the features to show, or order=None for every alive feature")
        if len(set(out)) != len(out):
            dup = sorted(i for i, n in Counter(out).items() if n > 1)
            raise ValueError(f"order lists features {dup[:10]} more than once: list each feature once")
        return out

    # ----- state -----

    def _pool(self) -> list[int]:
        if self._matches is not None:
            return list(self._matches)
        if self.given_order is not None:
            return list(self.given_order)
        if self.include_dead:
            return list(range(self.results.d_sae))
        return self.results.alive().tolist()

    def _score(self, i: int) -> float:
        unit = self.explanations[i] if self.explanations is not None and i in self.explanations else None
        s = getattr(unit, "score", None)
        return float(s.f1) if s is not None else float("-inf")

    @property
    def order(self) -> list[int]:
        """Every feature matching the query, in the current order (a search keeps its relevance order under
        ``sort_by("relevance")``)."""
        pool = self._pool()
        key = self.sort_key
        if key in ("relevance", "given"):
            return pool
        if key == "index":
            return sorted(pool)
        if key == "score":
            return sorted(pool, key=lambda i: (-self._score(i), i))
        values = (self.results.density if key == "density" else self.results.max_activation).to(torch.float64)
        return sorted(pool, key=lambda i: (-float(values[i]), i))

    @property
    def n_pages(self) -> int:
        return max(1, -(-len(self._pool()) // self.page_size))

    @property
    def visible(self) -> list[int]:
        """The features on the current page."""
        s = self.page * self.page_size
        return self.order[s:s + self.page_size]

    def search(self, query: str) -> list[int]:
        """Filter by ``query``: a feature id ("123" or "F123") selects that feature; other text matches the
        explanations (``search_explanations``) and orders by relevance; "" clears the filter. Returns the matches."""
        q = (query or "").strip()
        self.query, self.page = q, 0
        if not q:
            self._matches = None
            if self.sort_key == "relevance":
                self.sort_key = "given" if self.given_order is not None else "density"
        elif q.lstrip("Ff#").isdigit():
            i = self.results.check_index(int(q.lstrip("Ff#")))
            self._matches = [i]
            self.select(i)
        else:
            if self.explanations is None:
                raise ValueError("text search needs explanations: pass FeatureBrowser(results, explanations) "
                                 "(from workbench.analysis.explain.explain_features), or search a feature id")
            hits = search_explanations(self.explanations, q, top_n=self.results.d_sae)
            self._matches = [h.feature for h in hits]
            self.sort_key = "relevance"
        self._refresh()
        return list(self._matches) if self._matches is not None else self.order

    def sort_by(self, key: str) -> list[int]:
        """Order by "density", "max_activation", "score" (held-out F1 of the explanation), "index", "given" (the
        ``order=`` passed, when one was) or, after a text search, "relevance" (all descending except index).
        Returns the visible page."""
        allowed = self._keys() + (("relevance",) if self._matches is not None else ())
        if key not in allowed:
            raise ValueError(f"unknown sort key {key!r}: choose one of {', '.join(allowed)}")
        self.sort_key, self.page = key, 0
        self._refresh()
        return self.visible

    def go_to_page(self, page: int) -> list[int]:
        self.page = min(max(int(page), 0), self.n_pages - 1)
        self._refresh()
        return self.visible

    def next_page(self) -> list[int]:
        return self.go_to_page(self.page + 1)

    def prev_page(self) -> list[int]:
        return self.go_to_page(self.page - 1)

    def select(self, index: int) -> FeatureCard:
        """Show feature ``index``'s card (it need not be on the current page)."""
        i = self.results.check_index(index)
        self.selected = i
        self.card = FeatureCard.from_results(self.results, i, self.explanations)
        self._refresh_card()
        return self.card

    # ----- rendering -----

    def _label(self, i: int) -> str:
        d, m = float(self.results.density[i]), float(self.results.max_activation[i])
        text = ""
        if self.explanations is not None and i in self.explanations:
            text = getattr(self.explanations[i], "explanation", self.explanations[i])
            text = getattr(text, "text", text)
        return f"F{i}  d={d:.2g}  max={m:.3g}  {str(text)[:60]}"

    @property
    def message(self) -> str:
        """What the list says about the query: how many features match it, or that none does."""
        if self._matches is None:
            return ""
        if not self._matches:
            return f"no matches for {self.query!r}: try other words, a feature id, or clear the search"
        return f"{len(self._matches)} match{'es' if len(self._matches) != 1 else ''} for {self.query!r}"

    def listing_html(self) -> str:
        if self._matches == []:
            return f'<div class="wb-muted">{H.escape(self.message)}</div>'
        rows = [[i, f"{float(self.results.density[i]):.3g}", float(self.results.max_activation[i]),
                 self._label(i).split("  ", 3)[-1] if self.explanations is not None else ""] for i in self.visible]
        return (f'<div class="wb-muted">query {self.query!r}, sorted by {self.sort_key}, page {self.page + 1} of '
                f"{self.n_pages}</div>" + H.table(["feature", "density", "max", "explanation"], rows))

    def body_html(self, include_plotlyjs: bool | str = "cdn") -> str:
        """The current page as a table, then the selected feature's card."""
        card = self.card.to_html(include_plotlyjs) if self.card is not None else ""
        return f"{self.listing_html()}{card}"

    def plain_text(self) -> str:
        return (f"FeatureBrowser: {len(self.order)} features, sorted by {self.sort_key}, page {self.page + 1} of "
                f"{self.n_pages}" + (f", feature {self.selected} open" if self.selected is not None else ""))

    def _build_widget(self):
        """The ipywidgets view: search box, sort menu, page buttons, feature list, card."""
        import ipywidgets as W

        ui = {"search": W.Text(placeholder="explanation text or feature id", continuous_update=False),
              "sort": W.Dropdown(options=self._sort_options(), value=self.sort_key, description="sort"),
              "prev": W.Button(description="◀", layout=W.Layout(width="40px")),
              "next": W.Button(description="▶", layout=W.Layout(width="40px")),
              "page": W.Label(), "message": W.HTML(),
              "list": W.Select(rows=12, layout=W.Layout(width="100%")), "card": W.Box()}
        ui["search"].observe(lambda ch: self._syncing or self.search(ch["new"]), names="value")
        ui["sort"].observe(lambda ch: self._syncing or ch["new"] == self.sort_key or self.sort_by(ch["new"]),
                           names="value")
        ui["prev"].on_click(lambda _: self.prev_page())
        ui["next"].on_click(lambda _: self.next_page())
        ui["list"].observe(lambda ch: self._syncing or ch["new"] is None or ch["new"] == self.selected
                           or self.select(ch["new"]), names="value")
        self._ui = ui
        box = W.VBox([W.HBox([ui["search"], ui["sort"], ui["prev"], ui["page"], ui["next"]]),
                      ui["message"], ui["list"], ui["card"]])
        self._refresh()
        self._refresh_card()
        return box

    def _keys(self) -> tuple[str, ...]:
        return SORT_KEYS + (("given",) if self.given_order is not None else ())

    def _sort_options(self) -> list[str]:
        return list(self._keys()) + (["relevance"] if self._matches is not None and self.query
                                     and not self.query.lstrip("Ff#").isdigit() else [])

    def _refresh(self) -> None:
        """Bring the view in line with the state. Changing the list's options must not pick a feature: only a
        user's choice (or ``select``) replaces the open card."""
        if self._ui is None:
            return
        ui = self._ui
        self._syncing = True
        try:
            ui["page"].value = f"{self.page + 1}/{self.n_pages}" if self._matches != [] else "0/0"
            ui["message"].value = f'<span class="wb-muted">{H.escape(self.message)}</span>' if self.message else ""
            visible = self.visible
            ui["list"].options = [(self._label(i), i) for i in visible]
            ui["list"].value = self.selected if self.selected in visible else None
            if ui["search"].value != self.query:
                ui["search"].value = self.query
            options = self._sort_options()
            if list(ui["sort"].options) != options:
                ui["sort"].options = options
            ui["sort"].value = self.sort_key if self.sort_key in options else None
        finally:
            self._syncing = False

    def _refresh_card(self) -> None:
        if self._ui is not None and self.card is not None:
            self._ui["card"].children = [self.card.widget]
