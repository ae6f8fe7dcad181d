"""The widgets and the static report in a real JupyterLab, in a real (headless) Chromium, through Playwright.

A temporary token-less JupyterLab on 127.0.0.1 opens a gallery notebook (``tests/browser/gallery.py``: every view of
``widgets/registry.py`` on tiny synthetic data, no real model), runs all its cells, and for each view checks that it
rendered (no "Error displaying widget", plotly's SVG where the widget draws a chart) and that its interaction
(``INTERACTIONS``, one per registry entry) round-trips: a click, a typed query, a picked menu entry or a button
changes what the kernel-side object holds (read back by a last cell) and what the page shows. The saved notebook
then holds each view's static fallback (``text/html``, plotly.js inlined once, no CDN), and those fallbacks, shown
in a plain page as nbviewer would, draw every chart. The static report of a tiny synthetic run is opened too: no
chart may overlap its neighbours on first load.

Needs the ``playwright`` Python package and a system Chromium (``/usr/bin/chromium``, or ``$WORKBENCH_CHROMIUM``);
browsers are never downloaded. Skipped, with the reason, when either is missing. Screenshots of every widget (and of
the page on a failure) are written to ``test-artifacts/browser/`` (gitignored; override with
``$WORKBENCH_TEST_ARTIFACTS``).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
from lab import CLASS_OF, WIDGETS, WebSocketBytes, find_chromium, gallery_notebook, running_lab  # noqa: E402

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("WORKBENCH_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
HAS_CHART = set(WIDGETS) - {"steering", "persona"}  # the views whose widget draws a plotly chart
ANY = object()  # a state the test does not pin before the interaction
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


# ----------------------------------------------------------------------------------------------------------------
# One interaction per view of widgets.registry (keyed by its gallery key): what to do in the page, and the
# kernel-side state (a Python expression over the gallery ``g``) before and after
# ----------------------------------------------------------------------------------------------------------------


def _click_centre(page, cell, plot_index: int, selector: str, what: str):
    """Click the centre of the tallest element matching ``selector`` in the cell's ``plot_index``-th chart."""
    cell.scroll_into_view_if_needed()
    box = cell.locator(".wb-plot").nth(plot_index).evaluate("""(el, sel) => { let best = null;
        el.querySelectorAll(sel).forEach(p => { const r = p.getBoundingClientRect();
            if (r.height > 2 && (!best || r.height > best.height)) best = r; });
        return best && {x: best.left + best.width / 2, y: best.top + best.height / 2, bottom: best.bottom}; }""",
                                                              selector)
    assert box is not None, f"no {what} to click"
    return box


def _card(page, ws, cell):
    # a click on a histogram bar lists that activation bucket's examples
    box = _click_centre(page, cell, 0, "g.point path", "histogram bar")
    return {"card bar click": _changes(page, ws, "card", lambda: page.mouse.click(box["x"], box["bottom"] - 2))}


def _browser(page, ws, cell):
    # a typed query filters the list and tells how many matched
    box = cell.locator("input[type=text]").first
    box.fill("zzzz-no-such-thing")
    return {"browser search": _timed(page, ws, lambda: box.press("Enter"),
                                     "c => document.body.textContent.includes('no matches')")}


def _inspector(page, ws, cell):
    # a token picked in the menu lists that token's features (option 3: BOS is not listed)
    return {"inspector token": _timed(page, ws, lambda: cell.locator("select").first.select_option(index=3),
                                      "() => document.body.textContent.includes('token 4 ')")}


def _map(page, ws, cell):
    # a search highlights matches (a new trace, redrawn in place)
    box = cell.locator("input[type=text]").first
    box.fill("a")
    return {"map search": _timed(page, ws, lambda: box.press("Enter"),
                                 "() => document.body.textContent.includes(\"search 'a'\")")}


def _splits(page, ws, cell):
    # another parent picked in the menu draws its family
    return {"split pick": _changes(page, ws, "splits", lambda: cell.locator("select").first.select_option(index=1))}


def _scaling(page, ws, cell):
    # another metric refits and redraws
    return {"scaling metric": _changes(page, ws, "scaling", lambda: cell.locator("select").first.select_option("mse"))}


def _languages(page, ws, cell):
    # a feature picked opens its card
    return {"languages pick": _changes(page, ws, "languages",
                                       lambda: cell.locator("select").first.select_option(index=0))}


def _attribution(page, ws, cell):
    # ablate the chosen (position, feature)
    words = cell.locator(".jp-OutputArea-output").first.inner_text().split()
    pos_i, feat_i = int(words[words.index("pick") + 1]), int(words[words.index("pick") + 2])
    cell.locator("select").nth(0).select_option(index=pos_i)
    cell.locator("select").nth(1).select_option(index=feat_i)
    return {"attribution ablate": _changes(page, ws, "attribution",
                                           lambda: cell.locator("button", has_text="ablate").click())}


def _steering(page, ws, cell):
    # a search fills the feature menu (with explanations) without switching the feature
    cell.locator("input[type=text]").first.fill("the")
    out = {"steering search": _timed(page, ws, lambda: cell.locator("button", has_text="search").click(),
                                     f"() => document.querySelectorAll('.jp-CodeCell')"
                                     f"[{1 + WIDGETS.index('steering')}].textContent.includes('pick one in the "
                                     f"feature menu')")}
    assert cell.locator("select").first.evaluate("el => el.options.length") >= 1
    return out


def _persona(page, ws, cell):
    # a new message sent: the reply is regenerated and the conversation's tokens projected again
    cell.locator("textarea").first.fill("Bonjour")
    return {"persona send": _changes(page, ws, "persona", lambda: cell.locator("button", has_text="send").click())}


def _diff(page, ws, cell):
    # a click on a point of the Latent Scaling scatter selects its latent (both cards); the button steers with it
    box = _click_centre(page, cell, 1, ".scatterlayer path.point", "scatter point")
    out = {"diff point click": _changes(page, ws, "diff", lambda: page.mouse.click(box["x"], box["y"]))}
    i = 1 + WIDGETS.index("diff")
    out["diff steering check"] = _timed(page, ws, lambda: cell.locator("button", has_text="steering check").click(),
                                        f"() => document.querySelectorAll('.jp-CodeCell')[{i}].textContent"
                                        f".includes('steering in tiny-')")
    return out


def _sdm_beta(page, ws, cell):
    # another beta picked in the menu redraws the heads against the band
    return {"sdm beta pick": _changes(page, ws, "sdm_beta",
                                      lambda: cell.locator("select").first.select_option("beta_max"))}


def _sdm_continual(page, ws, cell):
    # fewer methods picked in the list redraws the curves with those alone
    return {"sdm methods pick": _changes(page, ws, "sdm_continual",
                                         lambda: cell.locator("select").first.select_option(["sdmlp"]))}


# gallery key -> (action, kernel-side state expression, its value before, a test of its value after)
INTERACTIONS = {
    "card": (_card, "g.card.bucket", None, lambda v: v is not None),
    "browser": (_browser, "g.browser.query", "", lambda v: v == "zzzz-no-such-thing"),
    "inspector": (_inspector, "g.inspector.selected_token", None, lambda v: v == 4),
    "map": (_map, "g.map.query", "", lambda v: v == "a"),
    "splits": (_splits, "g.splits.family.parent if g.splits.family else None", ANY, lambda v: v is not None),
    "scaling": (_scaling, "g.scaling.loss", ANY, lambda v: v == "mse"),
    "languages": (_languages, "g.languages.selected", None, lambda v: v is not None),
    "attribution": (_attribution, "[g.attribution.outcome.position, g.attribution.outcome.feature] "
                                  "if g.attribution.outcome else None", None, lambda v: v is not None),
    "steering": (_steering, "[g.steering.query, g.steering.feature]", ["", None], lambda v: v == ["the", None]),
    "persona": (_persona, "[g.persona.message, len(g.persona.tokens)]", ANY,
                lambda v: v[0] == "Bonjour" and v[1] > 5),
    "diff": (_diff, "[g.diff.selected, sorted(g.diff.steering)]", [None, []],
             lambda v: v[0] is not None and v[1] == [v[0]]),
    "sdm_beta": (_sdm_beta, "g.sdm_beta.which", "beta_norm", lambda v: v == "beta_max"),
    "sdm_continual": (_sdm_continual, "g.sdm_continual.methods", ["sdmlp", "relu"], lambda v: v == ["sdmlp"]),
}


def test_every_registered_view_has_an_interaction():
    assert list(INTERACTIONS) == list(WIDGETS), (
        f"tests/test_browser.py INTERACTIONS must drive every view of widgets/registry.py, in its order: "
        f"expected keys {list(WIDGETS)}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("lab")
    state = {k: expr for k, (_, expr, _, _) in INTERACTIONS.items()}
    with running_lab(work, gallery_notebook(work, state=state)) as url:
        yield url, work


def test_every_widget_renders_and_answers_in_jupyterlab(lab, page):
    with screenshot_on_failure(page, "jupyterlab"):
        _gallery_round_trips(*lab, page)


def _gallery_round_trips(lab, work, page):
    ws = WebSocketBytes(page)
    t0 = time.perf_counter()
    page.goto(f"{lab}/lab/tree/gallery.ipynb", timeout=TIMEOUT_MS)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                           "window.jupyterapp.shell.currentWidget.sessionContext.isReady", timeout=TIMEOUT_MS)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function("() => document.body.textContent.includes('STATE') || "
                           "document.body.textContent.includes('Traceback')", timeout=240_000)
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
    status = {name: {"rendered": False, "interacted": False} for name in WIDGETS}
    for name in WIDGETS:
        cell = _cell_of(page, name)
        cell.scroll_into_view_if_needed()
        cell.screenshot(path=str(ARTIFACTS / f"{CLASS_OF[name]}.png"))
        assert "Error displaying widget" not in cell.inner_text()
        status[name]["rendered"] = True
    before = _state(page)
    assert before["plotly_sends"] == 1
    for name, (_, expr, want, _) in INTERACTIONS.items():
        assert want is ANY or before[name] == want, \
            f"{CLASS_OF[name]} before any interaction: {expr} = {before[name]!r}"

    timings = {}
    for name, (act, _, _, _) in INTERACTIONS.items():
        timings.update(act(page, ws, _cell_of(page, name)))
    after = _state(page)
    for name, (_, expr, _, ok) in INTERACTIONS.items():
        assert ok(after[name]), f"{CLASS_OF[name]}: the interaction did not reach the kernel ({expr} = {after[name]!r})"
        status[name]["interacted"] = True
    assert after["plotly_sends"] == 1, "plotly.js must reach the page once, not once per chart"
    for name in WIDGETS:
        _cell_of(page, name).screenshot(path=str(ARTIFACTS / f"{CLASS_OF[name]}-after.png"))
    assert not [e for e in page.js_errors if "plotly" in e.lower() or "widget" in e.lower()], page.js_errors
    report = {"load_seconds": round(load_s, 2), "load_bytes": load_bytes,
              "interactions": {k: {"seconds": round(s, 3), "bytes": b} for k, (s, b) in timings.items()},
              "views": {CLASS_OF[k]: v for k, v in status.items()}}
    (ARTIFACTS / "timings.json").write_text(json.dumps(report, indent=1))
    print("\nbrowser timings:", json.dumps(report))
    for k, (s, b) in timings.items():
        assert b < 1_000_000, f"{k}: {b} bytes for one interaction (plotly.js sent again?)"
    _static_fallbacks(page, work)


def _static_fallbacks(page, work):
    """Save the notebook; every view's output carries a static ``text/html`` beside the widget, plotly.js inlined
    once in the whole notebook and no CDN; shown one after another in a plain page (what nbviewer does), every
    chart draws."""
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    nb, deadline = None, time.time() + 30
    while time.time() < deadline:
        nb = json.loads((work / "gallery.ipynb").read_text())
        if any(o.get("data") for c in nb["cells"] for o in c.get("outputs", [])):
            break
        time.sleep(0.5)
    from plotly.offline import get_plotlyjs

    plotly_js = get_plotlyjs()  # the library itself names cdn.plot.ly (its topojson default)
    html, n_charts = [], 0
    for name in WIDGETS:
        cell = next(c for c in nb["cells"] if f"gallery:{name}" in "".join(c["source"]))
        (data,) = [o["data"] for o in cell["outputs"] if o.get("data")]
        assert {"application/vnd.jupyter.widget-view+json", "text/html", "text/plain"} <= set(data), (name, set(data))
        text = "".join(data["text/html"])
        assert "cdn.plot.ly" not in text.replace(plotly_js, "") and not re.search(r"<script[^>]*\ssrc=", text), \
            f"{CLASS_OF[name]}: a script from a CDN"
        assert CLASS_OF[name] in "".join(data["text/plain"])
        n_charts += text.count("Plotly.newPlot")
        html.append(text)
    whole = "".join(html)
    inlined = [CLASS_OF[name] for name, h in zip(WIDGETS, html) if "* plotly.js v" in h]  # the library's banner
    assert len(inlined) == 1, f"plotly.js inlined by {inlined} in the saved notebook (want once, by the first chart)"
    path = work / "static.html"
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{whole}</body></html>")
    page.goto(path.as_uri())
    page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_charts}",
                           timeout=TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "static-fallback.png"), full_page=True)
    assert not [e for e in page.js_errors if "plotly" in e.lower()], page.js_errors


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
