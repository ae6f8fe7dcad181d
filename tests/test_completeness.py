"""Completeness: the curated categories, whole-word concept matching on token ids, the dedicated-feature criterion
on a planted store with a known answer, and the sigmoid fit on synthetic data with a known midpoint."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from helpers import identity_sae, write_store
from workbench.analysis.completeness import (FORMAT, CompletenessConfig, CompletenessResult, completeness,
                                             concept_feature_counts, dedicated_features, find_occurrences)
from workbench.analysis.concepts import (AMBIGUOUS_FORMS, CATEGORY_NAMES, Category, Concept, builtin_categories,
                                         check_against_corpus)
from workbench.analysis.sigmoid_fit import SigmoidFit, fit_sigmoid
from workbench.data.store import ActivationStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class WordTokenizer:
    """Word-level stand-in for a SentencePiece tokenizer: " word" and "word" are different tokens; unknown pieces
    get ids no store below uses."""

    def __init__(self, words: dict[str, int]):
        self.vocab = dict(words)
        self.inverse = {i: w for w, i in self.vocab.items()}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab.get(p, 10_000 + len(p)) for p in re.findall(r" ?[^ ]+", text)]

    def decode(self, ids) -> str:
        return "".join(self.inverse.get(int(i), "?") for i in ids)


VOCAB = {"<bos>": 1, " Germany": 10, " France": 11, " Spain": 12, " Italy": 13, " the": 14, " Papua": 15, " New": 16,
         " Guinea": 17, "n": 18, " and": 19, "Germany": 20, "(": 21, "x": 22, ".": 23}
TOK = WordTokenizer(VOCAB)


def _concepts(*names: str) -> list[Concept]:
    return [Concept(n, "countries", {"en": (n,)}, (n,)) for n in names]


# ----------------------------------------------------------------------------------------------------------------
# Categories
# ----------------------------------------------------------------------------------------------------------------


def test_builtin_categories_resolve_shared_and_ambiguous_forms():
    cats = {c.name: c for c in builtin_categories()}
    by_name = {(c.category, c.name): c for cat in cats.values() for c in cat.concepts}
    # planets come before elements: the capitalised name is the planet's, the lower-case one the element's
    assert "Mercury" in by_name[("planets", "Mercury")].forms
    merc = by_name[("elements", "Mercury")].forms
    assert "mercury" in merc and "Mercury" not in merc and "mercurio" in merc
    # countries come before capitals: Luxembourg the country keeps its name, the capital has none left
    assert "Luxembourg" in by_name[("countries", "Luxembourg")].forms
    assert ("capitals", "Djibouti") not in by_name and "Djibouti" in cats["capitals"].dropped
    # multilingual forms, and words that are mostly something else are never used
    assert {"Germany", "Alemania", "Allemagne"} <= set(by_name[("countries", "Germany")].forms)
    assert not set(AMBIGUOUS_FORMS) & {f for c in by_name.values() for f in c.forms}
    assert "plomb" in by_name[("elements", "Lead")].forms
    # no form belongs to two concepts
    forms = [f for c in by_name.values() for f in c.forms]
    assert len(forms) == len(set(forms))
    with pytest.raises(ValueError, match="unknown concept category"):
        builtin_categories(["rivers"])


def test_categories_are_checked_against_the_embedded_articles():
    cats = builtin_categories(["countries", "planets"])
    check = check_against_corpus(cats)
    assert check["Germany"]["has_article"] and "Germany" in check["Germany"]["titles"]["en"]
    assert check["Mars"]["titles"].get("en") == ["Mars"]  # the article is "Mars (planet)" or "Mars"
    covered = sum(bool(v["has_article"]) for v in check.values())
    assert covered >= 0.95 * len(check)


def test_concept_tables_are_read_from_the_shipped_resource():
    from workbench.core.resources import load_resource

    data = load_resource("completeness_concepts.json")
    assert data["format"] == "workbench-resource/completeness_concepts" and data["format_version"] == 1
    assert CATEGORY_NAMES == ("planets", "countries", "capitals", "elements", "months")
    by_name = {(c.category, c.name): c for cat in builtin_categories() for c in cat.concepts}
    h = by_name[("elements", "Hydrogen")]
    assert h.names == {"en": ("Hydrogen",), "es": ("Hidrógeno",), "fr": ("Hydrogène",)}
    assert {"Hydrogen", "hydrogen", "hidrógeno", "Hydrogène"} <= set(h.forms)  # elements match in both cases
    assert by_name[("elements", "Boron")].names == {"en": ("Boron",), "es": ("Boro",)}  # no French name
    assert by_name[("countries", "Germany")].names == {"en": ("Germany",), "es": ("Alemania",), "fr": ("Allemagne",)}
    assert by_name[("countries", "Czech Republic")].names["en"] == ("Czech Republic", "Czechia")
    assert by_name[("capitals", "Berlin")].names == {"en": ("Berlin",), "es": ("Berlín",), "fr": ("Berlin",)}
    assert by_name[("months", "September")].names["es"] == ("septiembre", "setiembre")
    assert ("capitals", "Grenada") not in by_name  # a country without a capital in the table
    assert AMBIGUOUS_FORMS["or"] == "the French conjunction"
    assert {c["name"]: len(c["concepts"]) for c in data["categories"]} == {
        "planets": 7, "countries": 193, "capitals": 184, "elements": 118, "months": 12}


# ----------------------------------------------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------------------------------------------


def test_find_occurrences_whole_words_longest_match_and_bos():
    concepts = _concepts("Germany", "Guinea", "Papua New Guinea")
    tokens = np.array([
        [10, 14, 10, 19, 15, 16, 17, 23],   # BOS slot holds " Germany" (ignored); " Germany"; PNG (not Guinea)
        [1, 17, 18, 14, 21, 20, 23, 17],    # " Guinea"+"n" is a longer word; "(Germany" matches; " Guinea" at the end
        [1, 22, 20, 14, 11, 12, 13, 14],    # "xGermany": "Germany" inside a word does not match
    ])
    occ = find_occurrences(tokens, TOK, concepts)
    assert occ.n_tokens == 3 * 7
    assert occ.counts.tolist() == [2, 1, 1]
    flat = occ.token_occurrence.reshape(3, 8)
    assert flat[0, 0] == -1 and flat[0, 2] >= 0
    png = flat[0, 4]
    assert png >= 0 and (flat[0, 4:7] == png).all() and occ.occurrence_concept[png] == 2
    assert flat[1, 1] == -1 and flat[1, 5] >= 0 and flat[1, 7] >= 0
    assert (flat[2] == -1).all()
    np.testing.assert_allclose(occ.frequency, np.array([2, 1, 1]) / 21)
    with pytest.raises(ValueError, match="n_contexts, ctx"):
        find_occurrences(tokens.reshape(-1), TOK, concepts)


def test_find_occurrences_with_the_real_tokenizer():
    from workbench.data.models import load_tokenizer

    tok = load_tokenizer("gemma-3-270m")
    concepts = [c for cat in builtin_categories(["countries", "capitals", "elements"]) for c in cat.concepts]
    text = ("Paris is the capital of France. Alemania limita con Francia. Hydrogen and oxygen form water; "
            "the Ironman race. Papua New Guinea is north of Australia.")
    ids = np.array([[tok.bos_token_id] + tok.encode(text, add_special_tokens=False)])
    occ = find_occurrences(ids, tok, concepts)
    found = sorted(concepts[i].name for i in occ.occurrence_concept)
    assert found == sorted(["Paris", "France", "Germany", "France", "Hydrogen", "Oxygen", "Papua New Guinea",
                            "Australia"])


# ----------------------------------------------------------------------------------------------------------------
# The criterion, on a planted store
# ----------------------------------------------------------------------------------------------------------------


def planted():
    """Token ids and activations where feature 0 fires exactly on " Germany" (dedicated), feature 1 on " France",
    " Italy" and " Spain" alike (a category feature: precision 4/9 for France and Italy), feature 2 on " France" and
    on 5 other tokens (precision 4/9), feature 3 on every other " Germany", feature 4 on " the"; " Spain" occurs
    once (undecidable); feature 5 fires only on BOS, which is ignored (dead)."""
    rng = np.random.default_rng(0)
    n_ctx, ctx, d = 8, 16, 6
    tokens = rng.choice([14, 19, 23], size=(n_ctx, ctx))
    tokens[:, 0] = 1
    for r, c, t in [(0, 3, 10), (1, 5, 10), (2, 2, 10), (3, 9, 10), (4, 4, 10), (5, 7, 10),
                    (0, 8, 11), (2, 6, 11), (4, 11, 11), (6, 3, 11),
                    (1, 12, 13), (3, 2, 13), (5, 14, 13), (7, 6, 13), (6, 10, 12)]:
        tokens[r, c] = t
    acts = np.zeros((n_ctx, ctx, d), dtype=np.float32)
    acts[:, 0, :] = 50.0  # BOS: ignored
    acts[..., 0] = np.where(tokens == 10, 2.0, acts[..., 0])
    acts[..., 1] = np.where((tokens == 11) | (tokens == 12) | (tokens == 13), 1.5, acts[..., 1])
    acts[..., 2] = np.where(tokens == 11, 1.0, acts[..., 2])
    elsewhere = np.argwhere(tokens == 23)
    elsewhere = elsewhere[elsewhere[:, 1] > 0][:5]
    acts[elsewhere[:, 0], elsewhere[:, 1], 2] = 1.0
    germany = np.argwhere(tokens == 10)
    acts[germany[::2, 0], germany[::2, 1], 3] = 1.0
    acts[..., 4] = np.where(tokens == 14, 0.5, acts[..., 4])
    acts[:, 0, 5] = 50.0
    return tokens, acts


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    tokens, acts = planted()
    path = tmp_path_factory.mktemp("completeness") / "store"
    write_store(path, acts, tokens, shard_contexts=3)
    return ActivationStore.open(path), tokens, acts


def test_feature_counts_match_a_direct_count(planted_store):
    store, tokens, acts = planted_store
    concepts = _concepts("Germany", "France", "Italy", "Spain")
    occ = find_occurrences(store.token_ids(), TOK, concepts)
    assert occ.counts.tolist() == [6, 4, 4, 1]
    fc = concept_feature_counts(store, identity_sae(6), occ, CompletenessConfig(progress=False, chunk_contexts=2))
    fires = acts[:, 1:] > 0
    assert fc.count.tolist() == fires.reshape(-1, 6).sum(0).tolist()
    assert fc.n_alive == 5
    germany = tokens[:, 1:] == 10
    assert fc.token_hits[0].tolist() == fires[germany].sum(0).tolist()
    assert fc.occ_hits[0].tolist() == [6, 0, 0, 3, 0, 0]
    assert fc.occ_hits[1].tolist() == [0, 4, 4, 0, 0, 0]
    assert fc.token_hits[3].tolist() == [0, 1, 0, 0, 0, 0]


def test_dedicated_feature_criterion_on_the_planted_store(planted_store, tmp_path):
    store, _, _ = planted_store
    cats = [Category("countries", _concepts("Germany", "France", "Italy", "Spain"))]
    cfg = CompletenessConfig(progress=False)
    res = completeness(store, {"identity": identity_sae(6)}, cats, cfg, tokenizer=TOK, out_path=tmp_path / "c.json")
    rows = {r["name"]: r for r in res.table("identity")}
    g, f, i, s = rows["Germany"], rows["France"], rows["Italy"], rows["Spain"]
    assert g["present"] and g["best_feature"] == 0 and g["precision"] == 1.0 and g["recall"] == 1.0
    # France: feature 1 shares it with Italy and Spain (precision 4/9), feature 2 fires elsewhere more (4/9)
    assert not f["present"] and f["decidable"] and f["precision"] == pytest.approx(4 / 9) and f["recall"] == 1.0
    assert not i["present"] and i["best_feature"] == 1
    assert not s["decidable"] and s["count"] == 1
    assert res.saes["identity"]["n_alive"] == 5
    # a looser precision threshold makes France's and Italy's category feature count
    loose = completeness(store, {"identity": identity_sae(6)}, cats,
                         CompletenessConfig(progress=False, min_precision=0.4), tokenizer=TOK)
    assert [r["present"] for r in loose.table("identity")] == [True, True, True, False]
    again = CompletenessResult.load(tmp_path / "c.json")
    assert again.table("identity") == res.table("identity") and again.summary() == res.summary()
    (tmp_path / "c.json").write_text((tmp_path / "c.json").read_text()[:-20])  # a truncated result file
    with pytest.raises(ValueError, match=r"c\.json is corrupt or unreadable.*run workbench\.analysis\.completeness"):
        CompletenessResult.load(tmp_path / "c.json")
    from widgets.scaling_view import completeness_figure

    fig = completeness_figure(res)
    points = fig.data[0]
    assert list(points.text) == ["Germany", "France", "Italy"]  # the decidable concepts, with jittered 0/1 values
    np.testing.assert_allclose(np.round(points.y), [1, 0, 0])
    x, _ = res.curves("identity", rescaled=True)
    np.testing.assert_allclose(x, np.log10(np.array([6, 4, 4]) / res.n_tokens * 5))
    with pytest.raises(ValueError, match="unknown SAE"):
        res.table("other")


def test_result_file_is_tagged_versioned_and_tallied_by_category(planted_store, tmp_path):
    import json

    store, _, _ = planted_store
    cats = [Category("countries", _concepts("Germany", "France", "Italy", "Spain"))]
    res = completeness(store, {"identity": identity_sae(6)}, cats, CompletenessConfig(progress=False),
                       tokenizer=TOK, out_path=tmp_path / "c.json")
    assert res.by_category() == [{"sae": "identity", "category": "countries", "decidable": 3, "covered": 1}]
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["format"] == FORMAT and data["format_version"] == 1 and "version" not in data
    # a file from before the version was tagged ("version" only) still reads
    old = {k: v for k, v in data.items() if k != "format_version"}
    (tmp_path / "old.json").write_text(json.dumps({**old, "version": 1}))
    assert CompletenessResult.load(tmp_path / "old.json").table("identity") == res.table("identity")
    (tmp_path / "new.json").write_text(json.dumps({**data, "format_version": 2}))
    with pytest.raises(ValueError, match="format version 2, newer than this workbench reads"):
        CompletenessResult.load(tmp_path / "new.json")
    (tmp_path / "other.json").write_text(json.dumps({**data, "format": "workbench-scaling"}))
    with pytest.raises(ValueError, match="is not a completeness result"):
        CompletenessResult.load(tmp_path / "other.json")


def test_dedicated_features_thresholds_and_shapes():
    count = torch.tensor([10, 4, 0])
    token_hits = torch.tensor([[6, 4, 0], [1, 0, 0]])
    occ_hits = torch.tensor([[5, 2, 0], [1, 0, 0]])
    sc = dedicated_features(count, token_hits, occ_hits, [5, 1])
    assert sc.present.tolist() == [True, False] and sc.best_feature.tolist() == [0, 0]
    assert sc.decidable.tolist() == [True, False]
    # feature 0: precision 6/10, recall 5/5; feature 1: precision 4/4, recall 2/5
    strict = dedicated_features(count, token_hits, occ_hits, [5, 1], min_precision=0.9, min_recall=0.4)
    assert strict.present.tolist() == [True, False] and strict.best_feature[0] == 1
    assert strict.precision[0] == 1.0 and strict.recall[0] == pytest.approx(0.4)
    none = dedicated_features(count, token_hits, occ_hits, [5, 1], min_precision=0.9, min_recall=0.5)
    assert none.present.tolist() == [False, False] and none.best_feature[0] == 0  # best precision x recall
    with pytest.raises(ValueError, match="shapes disagree"):
        dedicated_features(count, token_hits, occ_hits[:, :2], [5, 1])


# ----------------------------------------------------------------------------------------------------------------
# The sigmoid fit
# ----------------------------------------------------------------------------------------------------------------


def test_sigmoid_fit_recovers_midpoint_and_slope():
    rng = np.random.default_rng(0)
    x = rng.uniform(-7, -2, 4000)
    p = 1 / (1 + np.exp(-2.0 * (x - (-4.5))))
    y = (rng.random(x.size) < p).astype(float)
    fit = fit_sigmoid(x, y, ridge=0.0)
    assert fit.defined and not fit.separable and fit.in_range
    assert fit.midpoint == pytest.approx(-4.5, abs=0.08) and fit.slope == pytest.approx(2.0, rel=0.12)
    assert fit.midpoint_ci[0] <= -4.5 <= fit.midpoint_ci[1]
    np.testing.assert_allclose(fit.predict([fit.midpoint]), [0.5])


def test_sigmoid_fit_degenerate_and_separable_cases():
    none = fit_sigmoid([-5, -4, -3], [0, 0, 0])
    assert not none.defined and "absent" in none.reason
    sep = fit_sigmoid([-6, -5, -4, -3, -2, -1], [0, 0, 0, 1, 1, 1])
    assert sep.defined and sep.separable and np.isfinite(sep.slope) and sep.slope > 0
    assert -4 < sep.midpoint < -3 and sep.in_range
    one = fit_sigmoid(np.linspace(-6, -1, 30), [0] * 29 + [1])  # one present concept: the midpoint is at the edge
    assert one.defined and one.n_present == 1 and one.midpoint > -1.5
    with pytest.raises(ValueError, match="finite"):
        fit_sigmoid([-np.inf, -3], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        fit_sigmoid([-4, -3], [0, 2])


def test_sigmoid_fit_round_trips_and_rejects_unknown_fields():
    fit = fit_sigmoid([-6, -5, -4, -3, -2, -1], [0, 1, 0, 1, 1, 1])
    assert SigmoidFit.from_dict(fit.to_dict()) == fit
    with pytest.raises(ValueError, match=r"unknown sigmoid fit fields \['intercept'\]: known ones are .*'midpoint'"):
        SigmoidFit.from_dict({**fit.to_dict(), "intercept": 0.0})


# ----------------------------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------------------------


def test_study_sizes_bracket_the_profile_size():
    from workbench.studies.completeness import study_sizes
    from workbench.studies.profile import PROFILES

    assert study_sizes(PROFILES["smoke"]) == [256, 4096]
    assert study_sizes(PROFILES["full"], factor=2) == [PROFILES["full"].d_sae // 2, PROFILES["full"].d_sae * 2] == [8192, 32768]
    with pytest.raises(ValueError, match="factor=1 must be >= 2"):
        study_sizes(PROFILES["smoke"], factor=1)
