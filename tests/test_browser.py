"""The widgets and the static report in a real JupyterLab, in a real (headless) Chromium, through Playwright.

A temporary token-less JupyterLab on 127.0.0.1 opens a gallery notebook (``tests/browser/gallery.py``: every widget
class on tiny synthetic data, no real model), runs all its cells, and for each widget checks that it rendered (no
"Error displaying widget", plotly's SVG where the widget draws a chart) and that one interaction round-trips: a typed
query or a picked menu entry changes what the kernel-side object holds (read back by a last cell) and what the page
shows. The static report of a tiny synthetic run is opened too: no chart may overlap its neighbours on first load.

Needs the ``playwright`` Python package and a system Chromium (``/usr/bin/chromium``, or ``$WORKBENCH_CHROMIUM``);
browsers are never downloaded. Skipped, with the reason, when either is missing. Screenshots of every widget (and of
the page on a failure) are written to ``test-artifacts/browser/`` (gitignored; override with
``$WORKBENCH_TEST_ARTIFACTS``).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
from lab import WIDGETS, WebSocketBytes, find_chromium, gallery_notebook, running_lab  # noqa: E402

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("WORKBENCH_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
CLASS_OF = {"card": "FeatureCard", "browser": "FeatureBrowser", "inspector": "PromptInspector",
            "map": "NeighborhoodMap", "splits": "SplitExplorer", "scaling": "ScalingView",
            "languages": "LanguageHeatmap", "attribution": "AttributionView", "steering": "SteeringPlayground"}
HAS_CHART = set(WIDGETS) - {"steering"}
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def chromium():
    pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright Python package "
                                                      "(pip install playwright; no browser download needed)")
    exe = find_chromium()
    if exe is None:
        pytest.skip("browser tests need a system Chromium: apt-get install chromium (or set WORKBENCH_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=args + ["--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, request):
    """A fresh page; a failing test leaves a full-page screenshot in ARTIFACTS (its path is printed)."""
    ctx = chromium.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    yield pg
    ctx.close()


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"FAILED-{name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the failure: {shot}")
        except Exception as err:  # the page may be gone
            print(f"\nno screenshot ({err})")
        raise


# ----------------------------------------------------------------------------------------------------------------
# JupyterLab
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("lab")
    with running_lab(work, gallery_notebook(work)) as url:
        yield url


def _cell_of(page, name):
    return page.locator(".jp-CodeCell").filter(has_text=f"gallery:{name}").first


def _state(page) -> dict:
    """Run the last cell again and read the kernel-side state it prints."""
    page.evaluate("""async () => { const nb = window.jupyterapp.shell.currentWidget;
        nb.content.activeCellIndex = nb.content.widgets.length - 1;
        await window.jupyterapp.commands.execute('notebook:run-cell'); }""")
    last = page.locator(".jp-CodeCell").last.locator(".jp-OutputArea-output")
    page.wait_for_function("""() => { const cells = document.querySelectorAll('.jp-CodeCell');
        const t = cells[cells.length - 1].querySelector('.jp-OutputArea-output');
        return t && t.textContent.includes('STATE') && window.__wbStateSeq !== t.textContent; }""",
                           timeout=TIMEOUT_MS)
    text = last.first.inner_text()
    page.evaluate("t => { window.__wbStateSeq = t; }", text)
    return json.loads(text[text.index("STATE") + 5:].strip().splitlines()[0])


def _timed(page, ws, action, done_js, arg=None):
    """Run ``action``, wait until ``done_js`` holds; (seconds, bytes received)."""
    b0, t0 = ws.total, time.perf_counter()
    action()
    page.wait_for_function(done_js, arg=arg, timeout=TIMEOUT_MS)
    return time.perf_counter() - t0, ws.total - b0


def _changes(page, ws, name, action):
    """Run ``action`` and wait until the text of widget ``name``'s cell changes: (seconds, bytes received)."""
    i = 1 + WIDGETS.index(name)
    before = page.evaluate(f"() => document.querySelectorAll('.jp-CodeCell')[{i}].textContent")
    return _timed(page, ws, action, f"t => document.querySelectorAll('.jp-CodeCell')[{i}].textContent !== t",
                  arg=before)


def test_every_widget_renders_and_answers_in_jupyterlab(lab, page):
    with screenshot_on_failure(page, "jupyterlab"):
        _gallery_round_trips(lab, page)


def _gallery_round_trips(lab, page):
    ws = WebSocketBytes(page)
    t0 = time.perf_counter()
    page.goto(f"{lab}/lab/tree/gallery.ipynb", timeout=TIMEOUT_MS)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                           "window.jupyterapp.shell.currentWidget.sessionContext.isReady", timeout=TIMEOUT_MS)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function("() => document.body.textContent.includes('STATE') || "
                           "document.body.textContent.includes('Traceback')", timeout=180_000)
    assert "Traceback" not in page.inner_text("body"), page.inner_text("body")[-4000:]
    for name in WIDGETS:
        if name in HAS_CHART:
            _cell_of(page, name).locator(".wb-plot svg.main-svg").first.wait_for(timeout=20_000)
        else:
            _cell_of(page, name).locator(".widget-vbox").first.wait_for(timeout=20_000)
    load_s, load_bytes = time.perf_counter() - t0, ws.total
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    body = page.inner_text("body")
    assert "Error displaying widget" not in body and "Traceback" not in body, body[-3000:]
    for name in WIDGETS:
        cell = _cell_of(page, name)
        cell.scroll_into_view_if_needed()
        cell.screenshot(path=str(ARTIFACTS / f"{CLASS_OF[name]}.png"))
        assert "Error displaying widget" not in cell.inner_text()
    before = _state(page)
    assert before["browser"] == "" and before["inspector"] is None and before["card"] is None and before["plotly_sends"] == 1

    timings = {}
    # FeatureCard: a click on a histogram bar lists that activation bucket's examples
    cell = _cell_of(page, "card")
    cell.scroll_into_view_if_needed()
    box = cell.locator(".wb-plot").first.evaluate("""el => { let best = null;
        el.querySelectorAll('g.point path').forEach(p => { const r = p.getBoundingClientRect();
            if (r.height > 2 && (!best || r.height > best.height)) best = r; });
        return best && {x: best.left + best.width / 2, y: best.bottom - 2}; }""")
    assert box is not None, "no histogram bar to click"
    timings["card bar click"] = _changes(page, ws, "card", lambda: page.mouse.click(box["x"], box["y"]))
    # FeatureBrowser: a typed query filters the list and tells how many matched
    cell = _cell_of(page, "browser")
    box = cell.locator("input[type=text]").first
    box.fill("zzzz-no-such-thing")
    timings["browser search"] = _timed(page, ws, lambda: box.press("Enter"),
                                       "c => document.body.textContent.includes('no matches')")
    # PromptInspector: a token picked in the menu lists that token's features
    cell = _cell_of(page, "inspector")
    timings["inspector token"] = _timed(page, ws, lambda: cell.locator("select").first.select_option(index=3),
                                        "() => document.body.textContent.includes('token 4 ')")  # option 3: BOS is not listed
    # NeighborhoodMap: a search highlights matches (a new trace, redrawn in place)
    cell = _cell_of(page, "map")
    box = cell.locator("input[type=text]").first
    box.fill("a")
    timings["map search"] = _timed(page, ws, lambda: box.press("Enter"),
                                   "() => document.body.textContent.includes(\"search 'a'\")")
    # SplitExplorer: another parent picked in the menu draws its family
    cell = _cell_of(page, "splits")
    timings["split pick"] = _changes(page, ws, "splits", lambda: cell.locator("select").first.select_option(index=1))
    # ScalingView: another metric refits and redraws
    cell = _cell_of(page, "scaling")
    timings["scaling metric"] = _changes(page, ws, "scaling",
                                         lambda: cell.locator("select").first.select_option("mse"))
    # LanguageHeatmap: a feature picked opens its card
    cell = _cell_of(page, "languages")
    timings["languages pick"] = _changes(page, ws, "languages",
                                         lambda: cell.locator("select").first.select_option(index=0))
    # AttributionView: ablate the chosen (position, feature)
    cell = _cell_of(page, "attribution")
    words = cell.locator(".jp-OutputArea-output").first.inner_text().split()
    pos_i, feat_i = int(words[words.index("pick") + 1]), int(words[words.index("pick") + 2])
    cell.locator("select").nth(0).select_option(index=pos_i)
    cell.locator("select").nth(1).select_option(index=feat_i)
    timings["attribution ablate"] = _changes(page, ws, "attribution",
                                             lambda: cell.locator("button", has_text="ablate").click())
    # SteeringPlayground: a search fills the feature menu (with explanations) without switching the feature
    cell = _cell_of(page, "steering")
    cell.locator("input[type=text]").first.fill("the")
    timings["steering search"] = _timed(page, ws, lambda: cell.locator("button", has_text="search").click(),
                                        f"() => document.querySelectorAll('.jp-CodeCell')"
                                        f"[{1 + WIDGETS.index('steering')}].textContent.includes('pick one in the "
                                        f"feature menu')")
    n_options = cell.locator("select").first.evaluate("el => el.options.length")
    assert n_options >= 1
    after = _state(page)
    assert after["card"] is not None
    assert after["browser"] == "zzzz-no-such-thing"
    assert after["inspector"] == 4
    assert after["map"] == "a"
    assert after["splits"] is not None
    assert after["scaling"] == "mse"
    assert after["languages"] is not None
    assert after["attribution"] is not None
    assert after["steering"] == "the" and after["steering_feature"] is None
    assert after["plotly_sends"] == 1, "plotly.js must reach the page once, not once per chart"
    for name in WIDGETS:
        _cell_of(page, name).screenshot(path=str(ARTIFACTS / f"{CLASS_OF[name]}-after.png"))
    assert not [e for e in page.js_errors if "plotly" in e.lower() or "widget" in e.lower()], page.js_errors
    report = {"load_seconds": round(load_s, 2), "load_bytes": load_bytes,
              "interactions": {k: {"seconds": round(s, 3), "bytes": b} for k, (s, b) in timings.items()}}
    (ARTIFACTS / "timings.json").write_text(json.dumps(report, indent=1))
    print("\nbrowser timings:", json.dumps(report))
    for k, (s, b) in timings.items():
        assert b < 1_000_000, f"{k}: {b} bytes for one interaction (plotly.js sent again?)"


# ----------------------------------------------------------------------------------------------------------------
# The static report
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """The report of the gallery's 64-feature SAE (with explanations and a toy scorecard): several cards, each a
    histogram beside a logit table."""
    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    import gallery
    from test_report import _toy_scorecard
    from workbench.report.page import write_report

    work = tmp_path_factory.mktemp("report")
    g = gallery.build(work, widgets=False)
    res = g.results["topk-64"]
    return write_report(work / "report.html", res, {"fvu": 0.25, "l0": 4.0}, g.explanations["topk-64"],
                        n_features=6, max_density=1.0, scorecard=_toy_scorecard())


def test_report_charts_do_not_overlap_on_first_load(page, tiny_report):
    with screenshot_on_failure(page, "report"):
        _report_layout(page, tiny_report)


def _report_layout(page, path):
    page.goto(path.as_uri())
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
    boxes = page.evaluate("""() => {
        const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        const out = [];
        document.querySelectorAll('.js-plotly-plot').forEach(p => {
            const svg = p.querySelector('.main-svg');
            const sibs = [];
            const row = p.closest('.wb-row');
            if (row) row.querySelectorAll(':scope > *').forEach(c => { if (!c.contains(p)) sibs.push(rect(c)); });
            out.push({plot: rect(svg), parent: rect(p.closest('.wb-fig') || p.parentElement), siblings: sibs});
        });
        return out; }""")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert len(boxes) >= 2
    for b in boxes:
        l, t, r, btm = b["plot"]
        assert r <= b["parent"][2] + 1, f"a chart is wider than its column: {b}"
        for s in b["siblings"]:
            overlap = min(r, s[2]) - max(l, s[0]) > 1 and min(btm, s[3]) - max(t, s[1]) > 1
            assert not overlap, f"a chart covers its neighbour: {b}"
