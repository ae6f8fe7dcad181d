"""A temporary JupyterLab, the gallery notebook and helpers shared by tests/test_browser.py and
benchmarks/bench_widgets.py (plain functions: the pytest fixtures live in the test module)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from widgets.registry import VIEWS  # noqa: E402  (pure data: imports nothing heavy)

WIDGETS = tuple(v.gallery for v in VIEWS)  # the gallery's keys, one cell each, in the registry's order
CLASS_OF = {v.gallery: v.name for v in VIEWS}

# plotly's own FigureWidget in place of widgets.plot.PlotWidget: the baseline of benchmarks/bench_widgets.py
BASELINE_PATCH = """
import plotly.graph_objects as go
import widgets.feature_card as _fc

class _BaselineFigureWidget(go.FigureWidget):
    def on_click(self, callback):
        for trace in self.data:
            trace.on_click(lambda tr, pts, st: pts.point_inds and callback(
                [{"curve": 0, "point": pts.point_inds[0], "customdata": None}]))

_fc.figure_output = _BaselineFigureWidget
"""


def find_chromium() -> str | None:
    for cand in (os.environ.get("WORKBENCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and Path(cand).exists():
            return cand
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cell(src: str, kind: str = "code") -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": src}
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


def gallery_notebook(work: Path, *, baseline: bool = False, state: Mapping[str, str] | None = None) -> dict:
    """Cell 0 builds the gallery; one cell per view of the registry (its key printed first, so the test finds it);
    a last cell prints, after ``STATE``, a JSON object of the kernel-side state the interactions should have
    changed: each expression of ``state`` (key -> Python expression over ``g``, the gallery) and ``plotly_sends``
    (how many times the kernel sent plotly.js to the page)."""
    cells = [_cell((BASELINE_PATCH if baseline else "")
                   + f"import sys\nsys.path.insert(0, {str(ROOT / 'tests' / 'browser')!r})\nimport gallery\n"
                   f"g = gallery.build({str(work / 'data')!r})")]
    for name in WIDGETS:
        extra = " pick', *g.attribution_pick, '" if name == "attribution" else ""
        cells.append(_cell(f"print('gallery:{name}{extra}')\ng.{name}"))
    fields = "".join(f"  {k!r}: {expr},\n" for k, expr in (state or {}).items())
    cells.append(_cell(
        "import json\nfrom widgets.plot import PlotWidget\n"
        "print('STATE' + json.dumps({\n" + fields +
        "  'plotly_sends': sum(w.n_library_sends for w in PlotWidget.widgets.values() if isinstance(w, PlotWidget)),"
        "\n}))"))
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


@contextlib.contextmanager
def running_lab(work: Path, notebook: dict):
    """A token-less JupyterLab on a free 127.0.0.1 port with temporary config/runtime/settings dirs under ``work``,
    serving ``work`` with ``notebook`` saved as gallery.ipynb; yields its base URL and stops it on exit."""
    (work / "gallery.ipynb").write_text(json.dumps(notebook))
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("IPYTHONDIR", "ipython")):
        (work / sub).mkdir()
        env[var] = str(work / sub)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    settings = work / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    nb_settings = work / "user-settings" / "@jupyterlab" / "notebook-extension"
    nb_settings.mkdir(parents=True)  # every cell in the DOM: the test reads and clicks widgets anywhere in the page
    (nb_settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(work / "user-settings")
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
           "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={work}",
           "--LabApp.expose_app_in_browser=True", f"--LabApp.workspaces_dir={work / 'workspaces'}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: see {work / 'lab.log'}:\n"
                                       + (work / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class WebSocketBytes:
    """Bytes the page received over its kernel websockets."""

    def __init__(self, page):
        self.total = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._add))

    def _add(self, payload):
        self.total += len(payload)
