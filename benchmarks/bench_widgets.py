"""Bytes the kernel sends to the browser per widget interaction: plotly's own FigureWidget (the baseline, which
carries plotly.js in every chart's state) against widgets.plot.PlotWidget (figure JSON only; plotly.js once per page).

Runs the FeatureBrowser of the browser test's gallery (tiny synthetic data, no real model): open the browser, then
select 5 features one after another (each opens a card with a histogram). Every comm message the widgets send (the
"open" of each new widget with its full state, and each state update) is recorded by a stand-in comm (no kernel).

``--browser`` also runs the gallery notebook in a real JupyterLab in headless Chromium (Debian's, through
Playwright), once with plotly's FigureWidget patched in for the card's chart (the baseline) and once as shipped, and
picks 4 features in the FeatureBrowser's list: bytes received over the kernel websocket and seconds from the pick
until the new card's chart is drawn, per pick. Prints JSON.

    .venv/bin/python benchmarks/bench_widgets.py [--browser]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))


class Recorder:
    """Counts the JSON bytes (and binary buffers) of every message the widgets would send."""

    def __init__(self):
        self.bytes = 0
        self.messages = 0

    def comm_factory(self):
        import comm.base_comm as bc

        rec = self

        class RecordingComm(bc.BaseComm):
            def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
                rec.messages += 1
                rec.bytes += len(json.dumps(data or {}, default=str)) + sum(len(memoryview(b)) for b in buffers or ())

        return lambda *a, **k: RecordingComm(*a, **k)


def run(kind: str, data) -> dict:
    import comm

    import widgets.feature_card as fc
    from widgets.feature_browser import FeatureBrowser

    rec = Recorder()
    comm.create_comm = rec.comm_factory()
    fc_orig = fc.figure_output
    if kind == "plotly FigureWidget":
        from lab import BASELINE_PATCH

        exec(BASELINE_PATCH, {})  # widgets.feature_card.figure_output -> plotly's FigureWidget
    try:
        res, expl = data.results["topk-64"], data.explanations["topk-64"]
        b = FeatureBrowser(res, expl, page_size=10)
        t = time.perf_counter()
        b.widget
        first = {"bytes": rec.bytes, "seconds": time.perf_counter() - t}
        per = []
        for i in b.visible[:5]:
            b0, t = rec.bytes, time.perf_counter()
            b.select(i)
            per.append({"bytes": rec.bytes - b0, "seconds": time.perf_counter() - t})
    finally:
        fc.figure_output = fc_orig
    # the page loads plotly.js once for PlotWidget (asked for by the first chart drawn)
    from plotly.offline import get_plotlyjs

    once = len(get_plotlyjs().encode()) if kind == "PlotWidget" else 0
    return {"open_bytes": first["bytes"], "plotly_js_once_per_page_bytes": once,
            "bytes_per_select": sum(p["bytes"] for p in per) / len(per),
            "kernel_seconds_per_select": sum(p["seconds"] for p in per) / len(per)}


def browser_run(baseline: bool, n_picks: int = 4) -> dict:
    """The FeatureBrowser of the gallery notebook in JupyterLab + Chromium: bytes and seconds per pick."""
    import os

    from playwright.sync_api import sync_playwright

    from lab import WebSocketBytes, find_chromium, gallery_notebook, running_lab

    exe = find_chromium()
    if exe is None:
        raise SystemExit("--browser needs a system Chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as d, running_lab(Path(d), gallery_notebook(Path(d), baseline=baseline)) as url:
        with sync_playwright() as pw:
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = pw.chromium.launch(executable_path=exe, headless=True, args=args)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            ws = WebSocketBytes(page)
            t = time.perf_counter()
            page.goto(f"{url}/lab/tree/gallery.ipynb")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                                   "window.jupyterapp.shell.currentWidget.sessionContext.isReady", timeout=120_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function("() => document.body.textContent.includes('STATE')", timeout=300_000)
            # every chart of the page drawn (for PlotWidget: plotly.js has arrived, once)
            page.wait_for_function("() => document.querySelectorAll('svg.main-svg').length >= 8", timeout=300_000)
            load = {"seconds": time.perf_counter() - t, "bytes": ws.total}
            cell = page.locator(".jp-CodeCell").filter(has_text="gallery:browser").first
            listing = cell.locator("select[size]").first
            picks = []
            for k in range(1, n_picks + 1):
                label = listing.evaluate(f"el => el.options[{k}].textContent")
                feature = label.split()[0].lstrip("F")
                b0, t = ws.total, time.perf_counter()
                listing.select_option(index=k)
                page.wait_for_function(f"() => document.querySelectorAll('.jp-CodeCell')[2].textContent"
                                       f".includes('F{feature} activations')", timeout=120_000)
                picks.append({"bytes": ws.total - b0, "seconds": time.perf_counter() - t})
            browser.close()
    return {"page_load": load, "bytes_per_pick": sum(p["bytes"] for p in picks) / len(picks),
            "seconds_per_pick": sum(p["seconds"] for p in picks) / len(picks), "picks": picks}


def main() -> None:
    import gallery

    with tempfile.TemporaryDirectory() as d:
        data = gallery.build(d, widgets=False)
        base = run("plotly FigureWidget", data)
        new = run("PlotWidget", data)
    out = {"baseline (plotly FigureWidget)": base, "PlotWidget": new,
           "bytes_per_select_ratio_new_over_baseline": new["bytes_per_select"] / base["bytes_per_select"]}
    if "--browser" in sys.argv:
        b_base, b_new = browser_run(True), browser_run(False)
        out["browser"] = {"baseline (plotly FigureWidget)": b_base, "PlotWidget": b_new,
                          "bytes_per_pick_ratio": b_new["bytes_per_pick"] / b_base["bytes_per_pick"],
                          "seconds_per_pick_ratio": b_new["seconds_per_pick"] / b_base["seconds_per_pick"]}
    out.update({
           "machine_load": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
