"""One widget contract (widgets.view.View) and one list of views (widgets.registry): every view class follows the
first and appears in the second; the package's exports, the browser gallery, the gallery notebook and the README
follow the list; a view's notebook display carries the live widget and a self-contained static fallback."""
from __future__ import annotations

import ast
import inspect
import re
import sys
from importlib import import_module
from pathlib import Path

import pytest

import widgets
from widgets.registry import VIEWS, exports, find, get, names
from widgets.view import WIDGET_MIME, View, reset_static_plotly

ROOT = Path(__file__).resolve().parents[1]
WIDGETS_DIR = ROOT / "widgets"
SCRIPT_SRC = re.compile(r"<script[^>]*\ssrc=")  # a script loaded from elsewhere (a CDN)
CONTRACT = ("_repr_mimebundle_", "widget", "figure_output")  # what only widgets/view.py may define


def _view_modules() -> list[str]:
    return sorted(p.stem for p in WIDGETS_DIR.glob("*.py") if p.stem not in ("__init__", "view", "registry", "plot"))


def test_the_registry_lists_every_view_class_once():
    assert len(set(names())) == len(VIEWS) and len({v.gallery for v in VIEWS}) == len(VIEWS)
    found = {}
    for mod in _view_modules():
        m = import_module(f"widgets.{mod}")
        for name, obj in vars(m).items():
            if inspect.isclass(obj) and issubclass(obj, View) and obj is not View and obj.__module__ == m.__name__:
                found[name] = f".{mod}"
    assert found == {v.name: v.module for v in VIEWS}, (
        f"widgets/registry.py must list exactly the View classes of widgets/: found {sorted(found)}")
    for spec in VIEWS:
        cls = spec.load()
        assert issubclass(cls, View) and cls.__name__ == spec.name
        assert spec.description and "\n" not in spec.description and len(spec.description) < 140


def test_no_module_copies_the_widget_contract():
    copies = []
    for path in sorted(WIDGETS_DIR.glob("*.py")):
        if path.name == "view.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in CONTRACT:
                copies.append(f"{path.name}:{node.lineno} {node.name}")
    assert not copies, f"the widget contract is defined once, in widgets/view.py (class View): {copies}"


def test_the_package_exports_follow_the_registry():
    table = exports()
    for spec in VIEWS:
        assert spec.name in widgets.__all__ and getattr(widgets, spec.name) is spec.load()
        for extra in spec.extras:
            assert extra in widgets.__all__ and table[extra] == spec.module
    assert widgets.View is View and widgets.VIEWS is VIEWS
    assert get("DiffExplorer").gallery == "diff" and find("Nope") is None
    with pytest.raises(ValueError, match="FeatureCard, FeatureBrowser"):
        get("Nope")


def test_the_gallery_and_its_notebook_follow_the_registry():
    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    import gallery
    import lab

    keys = [v.gallery for v in VIEWS]
    assert list(gallery.BUILDERS) == keys, f"tests/browser/gallery.py BUILDERS must be keyed {keys}"
    assert list(lab.WIDGETS) == keys
    nb = lab.gallery_notebook(Path("/tmp/unused"), state={"card": "g.card.bucket"})
    sources = ["".join(c["source"]) for c in nb["cells"]]
    assert len(sources) == len(keys) + 2
    for key, src in zip(keys, sources[1:-1]):
        assert src.startswith(f"print('gallery:{key}") and src.endswith(f"\ng.{key}")
    assert "'card': g.card.bucket" in sources[-1] and "plotly_sends" in sources[-1]


def _readme_widget_names() -> list[str]:
    row = next((line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `widgets/`")),
               None)
    assert row is not None, "README.md has no `widgets/` row in its Layout table"
    return re.findall(r"`([A-Z][A-Za-z]+)`", row)


def test_the_readme_names_exactly_the_registry_views():
    listed = _readme_widget_names()
    expected = ", ".join(f"`{n}`" for n in names())
    assert listed == names(), (
        f"README.md's `widgets/` row names {listed}; it should name the views of widgets/registry.py, in order: "
        f"| `widgets/` | ipywidgets + plotly views: {expected} |")


# ----------------------------------------------------------------------------------------------------------------
# The contract itself
# ----------------------------------------------------------------------------------------------------------------


class _Toy(View):
    frame = "wb-toy"

    def __init__(self, fail: bool = False):
        self.builds = 0
        self.fail = fail
        self.clicked: list = []

    def body_html(self, include_plotlyjs="cdn"):
        if self.fail:
            raise ValueError("nothing to show yet")
        import plotly.graph_objects as go

        figs = [go.Figure(go.Bar(y=[1, 2])), go.Figure(go.Bar(y=[3]))]
        return "<p>toy</p>" + "".join(self.figures_html(figs, include_plotlyjs))

    def _build_widget(self):
        import ipywidgets as W

        self.builds += 1
        return W.VBox([W.HTML("toy"), self.figure_output(self.figures()[0], on_click=self.clicked.append)])

    def figures(self):
        import plotly.graph_objects as go

        return [go.Figure(go.Bar(y=[1, 2]))]


def test_the_widget_is_built_once_and_clicks_reach_python():
    toy = _Toy()
    w = toy.widget
    assert toy.widget is w and toy.builds == 1
    plot = w.children[1]
    plot.click([{"curve": 0, "point": 1, "customdata": None}])
    assert toy.clicked == [[{"curve": 0, "point": 1, "customdata": None}]]


def test_to_html_frames_the_body_and_links_plotly_once():
    out = _Toy().to_html()
    assert out.startswith('<div class="wb-toy"><p>toy</p>') and out.endswith("</div>")
    assert out.count("cdn.plot.ly") == 1 and out.count("Plotly.newPlot") == 2  # the first chart links it
    assert not SCRIPT_SRC.search(_Toy().to_html(False)) and SCRIPT_SRC.search(_Toy().to_html())


def test_the_mimebundle_holds_the_widget_and_a_self_contained_fallback():
    from plotly.offline import get_plotlyjs

    reset_static_plotly()
    first, second = _Toy()._repr_mimebundle_(), _Toy()._repr_mimebundle_()
    for bundle in (first, second):
        assert set(bundle) == {WIDGET_MIME, "text/html", "text/plain"}
        assert bundle[WIDGET_MIME]["model_id"]
        html = bundle["text/html"].replace(get_plotlyjs(), "")  # the library itself names cdn.plot.ly (topojson)
        assert "cdn.plot.ly" not in html and not SCRIPT_SRC.search(html) and html.count("Plotly.newPlot") == 2
        assert "<style>" in html and "<p>toy</p>" in html
        assert bundle["text/plain"] == "_Toy"  # not registered: the class name alone
    assert first["text/html"].count("* plotly.js v") == 1  # inlined by the first fallback of the session only
    assert "* plotly.js v" not in second["text/html"] and len(second["text/html"]) < 100_000
    only = _Toy()._repr_mimebundle_(include=["text/plain"])
    assert only == {"text/plain": "_Toy"}
    assert WIDGET_MIME not in _Toy()._repr_mimebundle_(exclude=[WIDGET_MIME])
    reset_static_plotly()
    assert "* plotly.js v" in _Toy().static_html()


def test_a_state_without_static_html_still_displays():
    bundle = _Toy(fail=True)._repr_mimebundle_()
    assert WIDGET_MIME in bundle and "no static view: ValueError: nothing to show yet" in bundle["text/html"]


def test_a_registered_view_says_what_it_is_in_plain_text():
    from test_widgets import synthetic_report

    from widgets.feature_card import FeatureCard

    card = FeatureCard(synthetic_report(), "fires on Gate")
    assert card.plain_text() == "FeatureCard: feature 7 (fires on Gate)"
    bundle = card._repr_mimebundle_()
    assert bundle["text/plain"] == card.plain_text() and "Feature 7" in bundle["text/html"]
    assert View.plain_text(card) == f"FeatureCard: {get('FeatureCard').description}"
