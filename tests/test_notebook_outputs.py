"""Notebooks committed with outputs (workbench.report.notebooks): shrinking keeps what a reader needs under the size
limit, and ``run_notebooks`` executes at the requested profile, records it, and skips unchanged notebooks."""
import json

import pytest

from workbench.core.errors import InputError
from workbench.report.notebooks import NotebookRunConfig, notebook_bytes, run_notebooks, shrink_notebook, source_hash

BUNDLE = '<script type="text/javascript">/**\n* plotly.js v3.1.2\n* Copyright\n*/' + "x" * 200_000 + "</script>"


def _cell(source, outputs=()):
    return {"cell_type": "code", "execution_count": None, "id": f"c{abs(hash(source)) % 10**6}", "metadata": {},
            "outputs": list(outputs), "source": source}


def _nb(*cells, widgets=False):
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    if widgets:
        meta["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"a": "y" * 5000}}}
    return {"cells": list(cells), "metadata": meta, "nbformat": 4, "nbformat_minor": 5}


def _stdout(nb):
    return "".join(nb["cells"][0]["outputs"][0]["text"]).strip()


def _display(**data):
    return {"output_type": "display_data", "metadata": {}, "data": data}


def test_shrink_links_the_inlined_plotly_bundle_and_drops_widget_state():
    view = _display(**{"text/plain": "SDMBetaView: heads", "text/html": f"<div>{BUNDLE}<div id='p'>chart</div></div>"})
    nb, log = shrink_notebook(_nb(_cell("view", [view]), widgets=True), max_bytes=50_000)
    html = nb["cells"][0]["outputs"][0]["data"]["text/html"]
    assert '<script src="https://cdn.plot.ly/plotly-3.1.2.min.js"' in html and "<div id='p'>chart</div>" in html
    assert "x" * 1000 not in html and "widgets" not in nb["metadata"]
    assert notebook_bytes(nb) < 5_000 and len(log) == 2 and "plotly.js -> CDN" in log[0]


def test_shrink_keeps_a_long_script_that_is_not_plotly_and_small_outputs_untouched():
    other = '<script type="text/javascript">' + "z" * 150_000 + "</script>"
    table = _display(**{"text/plain": "   a\n0  1", "text/html": "<table><tr><td>1</td></tr></table>"})
    nb = _nb(_cell("other", [_display(**{"text/html": other})]), _cell("t", [table]))
    out, log = shrink_notebook(json.loads(json.dumps(nb)), max_bytes=1_000_000, max_output_bytes=500_000)
    assert out == nb and log == []


def test_shrink_reduces_an_oversized_output_to_its_text_and_says_so():
    big = _display(**{"text/plain": "<Figure>", "image/png": "A" * 400_000})
    size = len(json.dumps(big).encode())
    nb, log = shrink_notebook(_nb(_cell("fig", [big])), max_bytes=100_000, max_output_bytes=50_000)
    data = nb["cells"][0]["outputs"][0]["data"]
    assert list(data) == ["text/plain"] and data["text/plain"].startswith("<Figure>\n[output dropped")
    assert "image/png" in data["text/plain"] and log == [f"cell 0: image/png dropped ({size:,} bytes)"]


def test_shrink_refuses_text_outputs_that_stay_too_large():
    text = {"output_type": "stream", "name": "stdout", "text": "line\n" * 40_000}
    with pytest.raises(InputError, match="still .* bytes after shrinking"):
        shrink_notebook(_nb(_cell("print", [text])), max_bytes=100_000, max_output_bytes=50_000)


def test_source_hash_follows_code_only():
    a = _nb(_cell("x = 1"), {"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# one"})
    b = json.loads(json.dumps(a))
    b["cells"][1]["source"] = "# two"
    b["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1"}]
    c = json.loads(json.dumps(a))
    c["cells"][0]["source"] = "x = 2"
    assert source_hash(a) == source_hash(b) != source_hash(c)


def test_run_notebooks_executes_at_the_profile_records_it_and_then_skips(tmp_path):
    path = tmp_path / "probe.ipynb"
    path.write_text(json.dumps(_nb(_cell("import os\nprint(os.environ['WORKBENCH_PROFILE'])"))))
    cfg = NotebookRunConfig(profile="quick", timeout_s=120)
    (row,) = run_notebooks([path], cfg, announce=lambda _: None)
    nb = json.loads(path.read_text())
    assert _stdout(nb) == "quick"
    assert nb["metadata"]["workbench"]["profile"] == "quick" and not row["skipped"]
    assert nb["metadata"]["workbench"]["source_hash"] == source_hash(nb)
    (again,) = run_notebooks([path], cfg, announce=lambda _: None)
    assert again["skipped"] and json.loads(path.read_text()) == nb
    (other,) = run_notebooks([path], NotebookRunConfig(profile="smoke", timeout_s=120), announce=lambda _: None)
    assert not other["skipped"] and _stdout(json.loads(path.read_text())) == "smoke"


def test_run_notebooks_rejects_what_is_not_a_notebook(tmp_path):
    (tmp_path / "x.py").write_text("print(1)")
    with pytest.raises(InputError, match="not a notebook"):
        run_notebooks([tmp_path / "x.py"], announce=lambda _: None)
    with pytest.raises(ValueError, match="max_output_bytes"):
        NotebookRunConfig(max_bytes=10, max_output_bytes=20)
