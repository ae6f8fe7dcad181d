"""Bug rules put the bug where they say; the code-error detector finds a planted feature."""
import ast

import pytest
import torch

from workbench.analysis.catalogue_concepts import abstract_concrete, bucket_specificity
from workbench.analysis.code_errors import (error_scores, paper_prompt, rates, split_halves, top_error_features,
                                            writes_traceback)
from workbench.data.code_bugs import c_typo, corrupt, prose_typo, repl_bug, snippets, swap_typo, token_span

SRC = '''def area(width, height, scale):
    total = width * height + 1
    if scale:
        total = total * scale
    return total
'''


def test_swap_typo_swaps_two_neighbouring_interior_letters():
    import random
    out = swap_typo("right", random.Random(0))
    assert out != "right" and sorted(out) == sorted("right") and out[0] == "r" and out[-1] == "t"
    assert sum(a != b for a, b in zip(out, "right")) == 2
    assert swap_typo("aaaa", random.Random(0)) is None


@pytest.mark.parametrize("seed", range(5))
def test_typo_lands_at_the_recorded_span_on_a_later_use(seed):
    bug = corrupt(SRC, "typo", seed)
    assert bug is not None
    assert bug.text[bug.start:bug.end] == bug.replacement
    assert bug.clean[bug.clean_start:bug.clean_end] == bug.original
    assert bug.text[:bug.start] == bug.clean[:bug.clean_start]
    assert bug.text[bug.end:] == bug.clean[bug.clean_end:]
    assert bug.original in bug.clean[:bug.clean_start]  # a use, not the definition
    names = {n.id for n in ast.walk(ast.parse(bug.text)) if isinstance(n, ast.Name)}
    assert bug.replacement in names  # the typo is an identifier that is never bound
    assert bug.replacement not in {a.arg for a in ast.walk(ast.parse(bug.text)) if isinstance(a, ast.arg)}


def test_zero_division_and_type_error_and_wrong_name_raise_when_run():
    for kind, exc in (("zero_division", ZeroDivisionError), ("type_error", TypeError), ("wrong_name", NameError)):
        bug = corrupt(SRC, kind, 1)
        assert bug is not None, kind
        assert bug.text[bug.start:bug.end] in ("0", f'"{bug.original}"', bug.replacement)
        ns: dict = {}
        exec(bug.clean, ns)
        assert ns["area"](2, 3, 2) == 14
        exec(bug.text, ns)
        with pytest.raises(exc):
            ns["area"](2, 3, 2)


def test_token_span_maps_characters_to_tokens():
    offs = [(0, 0), (0, 3), (3, 4), (4, 9), (9, 10)]
    assert token_span(offs, 4, 9) == (3, 4)
    assert token_span(offs, 2, 5) == (1, 4)
    assert token_span(offs, 9, 9) == (4, 5)
    with pytest.raises(ValueError, match="no token covers"):
        token_span(offs, 20, 21)


def test_repl_bug_keeps_spans_on_the_same_characters():
    bug = corrupt(SRC, "typo", 0)
    r = repl_bug(bug)
    assert r.text.startswith(">>> def area") and "\n... " in r.text
    assert r.text[r.start:r.end] == bug.replacement
    assert r.clean[r.clean_start:r.clean_end] == bug.original


def test_prose_and_c_typos_record_their_spans():
    text = "The Golden Gate Bridge is a suspension bridge spanning the strait between the bay and the ocean."
    bug = prose_typo(text, 3)
    assert bug.text[bug.start:bug.end] == bug.replacement and bug.clean[bug.clean_start:bug.clean_end] == bug.original
    c = "int counter;\n/* counter here */\nvoid bump(void) { counter = counter + 1; }\n"
    cb = c_typo(c, 0)
    assert cb is not None and cb.original == "counter" and cb.start > c.index("*/")


def test_snippets_parse_on_their_own():
    mod = "class A:\n    def method(self, x):\n        y = x + 1\n        z = y * 2\n        return z + y + x + 100000\n"
    (snip,) = snippets(mod, min_chars=20)
    ast.parse(snip)


def test_detector_finds_a_planted_error_feature_and_not_a_common_one():
    g = torch.Generator().manual_seed(0)
    n, d = 40, 16
    clean = torch.relu(torch.randn(n, d, generator=g))  # features 0..15 fire about half the time everywhere
    bug = clean.clone()
    bug[:, 7] = 2.0 + torch.rand(n, generator=g)        # 7 fires at every bug site
    clean[:, 7] = 0.0                                    # and never at the clean sites
    bug[:, 3] = 5.0
    clean[:, 3] = 5.0                                    # 3 is strong everywhere: not an error feature
    assert int(top_error_features(bug, clean, k=1)[0]) == 7
    s = error_scores(bug, clean)
    assert s[7] == 1.0 and s[3] == 0.0
    r = rates(bug, clean, 7)
    assert r["bug_rate"] == 1.0 and r["clean_rate"] == 0.0 and r["n"] == n
    with pytest.raises(ValueError, match="differ in shape"):
        error_scores(bug, clean[:3])


def test_split_halves_is_disjoint_by_group():
    groups = ["a", "a", "b", "c", "b", "d", "c"]
    sel, ev = split_halves(groups)
    assert sorted(sel + ev) == list(range(len(groups)))
    assert not {groups[i] for i in sel} & {groups[i] for i in ev}


def test_traceback_judge_and_paper_prompt():
    assert "rihgt" in paper_prompt(True) and "rihgt" not in paper_prompt(False)
    assert writes_traceback("Traceback (most recent call last):\n  File ...\nNameError: name 'rihgt'")
    assert not writes_traceback("3\n>>> add(2, 2)\n4")


def test_bucket_specificity_and_abstract_concrete_on_planted_values():
    acts = torch.tensor([0.1, 0.15, 0.5, 0.9, 1.0])
    rows = bucket_specificity(acts, [False, False, True, True, True])
    assert rows[0]["n"] == 2 and rows[0]["specificity"] == 0.0
    assert rows[4]["n"] == 2 and rows[4]["specificity"] == 1.0
    with pytest.raises(ValueError, match="verdicts"):
        bucket_specificity(acts, [True])
    inst, disc, neutral = torch.zeros(6, 8), torch.zeros(6, 8), torch.zeros(4, 8)
    inst[:, 5] = 1.0
    disc[:, 5] = 1.0
    inst[:, 2] = 1.0  # fires on instances only
    out = abstract_concrete(inst, disc, neutral)
    assert out["feature"] == 5 and out["heldout_instance_rate"] == 1.0 and out["heldout_discussion_rate"] == 1.0
