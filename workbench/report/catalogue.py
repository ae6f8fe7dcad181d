"""The feature catalogue as one section of HTML (from :func:`workbench.studies.catalogue_run.run_catalogue`'s dict):
each candidate code-error feature with its firing rates (held-out Python, REPL transcripts, C headers, English prose
with the same typos), top examples, bucket specificity; the clamp outcomes beside a random feature; abstract vs
concrete; features vs neurons; and what was searched for and not found.

    html = catalogue_section(result)                 # a <section> fragment
    write_catalogue_page(result, "catalogue.html")   # a standalone page
"""
from __future__ import annotations

from html import escape
from pathlib import Path

__all__ = ["catalogue_section", "write_catalogue_page"]

NOT_SEARCHED = ("safety-relevant features (deception, secrecy, sycophancy, power-seeking, bias, dangerous content, "
                "the assistant's self-representation, chatbots/NPCs) on SmolLM2: not searched in this catalogue yet")


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * float(x):.0f}%"


def _table(head: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _rates_rows(cand: dict) -> list[list]:
    rows = []
    for name in ("selection", "python_heldout", "repl_heldout", "c_headers", "prose_typos"):
        r = cand.get(name)
        if isinstance(r, dict):
            rows.append([name, r["n"], _pct(r["bug_rate"]), _pct(r["clean_rate"])])
        elif r is not None:
            rows.append([name, 0, str(r), ""])
    return rows


def catalogue_section(result: dict) -> str:
    """The catalogue's ``<section>`` HTML."""
    parts = ["<section id='catalogue'><h2>Feature catalogue</h2>",
             f"<p>{result.get('n_bugs', 0)} planted bugs in held-out stdlib files (selection {result.get('n_selection')},"
             f" evaluation {result.get('n_eval')}); {result.get('n_prose')} English prose typos; "
             f"{result.get('n_c')} C-header typos. Rates: share of sites where the feature fires (code &gt; 0) at the "
             f"bug vs at the same place in the correct text.</p>"]
    for c in result.get("candidates", []):
        parts.append(f"<h3>Feature {c['feature']} (max {c['max_act']:.2f})</h3>")
        parts.append(_table(["set", "n", "fires at bug", "fires at same place, correct"], _rates_rows(c)))
        parts.append("<p>Top examples (firing token in [[ ]]):</p><ul>" + "".join(
            f"<li><code>{escape(e['text'])}</code> ({e['act']})</li>" for e in c.get("top_examples", [])) + "</ul>")
        for judge, rows in c.get("specificity", {}).items():
            parts.append(f"<p>Bucket specificity, judge <b>{escape(judge)}</b></p>" + _table(
                ["bucket (fraction of max)", "n", "judged about the concept"],
                [[r["bucket"], r["n"], _pct(r["specificity"])] for r in rows]))
    if result.get("clamps"):
        parts.append("<h3>Clamping on the REPL prompt</h3>" + _table(
            ["prompt", "clamp", "multiple", "tracebacks", "first sample"],
            [["buggy" if "rihgt" in o["prompt"] else "correct", o["label"], o["multiple"], f"{o['tracebacks']}/{o['n']}",
              (o["texts"][0] if o["texts"] else "")[:80]] for o in result["clamps"]]))
    if result.get("abstract_concrete"):
        parts.append("<h3>Abstract vs concrete (held-out halves)</h3>" + _table(
            ["concept", "feature", "instances", "discussion", "neutral"],
            [[k, v["feature"], _pct(v["heldout_instance_rate"]), _pct(v["heldout_discussion_rate"]),
              _pct(v["neutral_rate"])] for k, v in result["abstract_concrete"].items()]))
    n = result.get("neurons")
    if n:
        parts.append(f"<h3>Features vs neurons</h3><p>{_pct(n['fraction_best_corr_below_threshold'])} of "
                     f"{n['n_defined']} features have a best |r| &le; 0.3 with any neuron of the preceding MLP over "
                     f"{n['n_tokens']} tokens (Scaling Monosemanticity: 82%); median best |r| "
                     f"{n['median_best_corr']:.2f}.</p>")
    parts.append(f"<h3>Not found / not searched</h3><ul><li>{escape(NOT_SEARCHED)}</li>" + "".join(
        f"<li>{escape(x)}</li>" for x in result.get("not_found", [])) + "</ul></section>")
    return "\n".join(parts)


def write_catalogue_page(result: dict, path: str | Path) -> Path:
    """A standalone HTML page holding :func:`catalogue_section`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<!doctype html><meta charset='utf-8'><title>Feature catalogue</title>"
                    "<style>body{font-family:sans-serif;max-width:60em;margin:auto}td,th{padding:2px 8px}</style>"
                    + catalogue_section(result), encoding="utf-8")
    return path
