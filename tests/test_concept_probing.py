"""Concept probing on the wiki's topic labels: the topic table, the probe pieces on planted data, and one real run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis.concept_probing import (ProbeConfig, ProbeScorecard, PooledUnits, _average_ranks,
                                                _column_quantiles, _select, feature_topic_auc, score_probes,
                                                sparse_probe_accuracy)
from workbench.data.wiki_topics import SHARED_TOPICS, language_topics, topic_articles, topic_counts


def test_shared_topics_exist_in_every_language_and_splits_do_not_overlap():
    assert len(SHARED_TOPICS) == 7
    for lang in ("en", "es", "fr"):
        own = set(language_topics(lang))
        assert {labels[lang] for labels in SHARED_TOPICS.values()} <= own
        train = {a.doc.doc_id for a in topic_articles(lang, "train")}
        held = {a.doc.doc_id for a in topic_articles(lang, "heldout")}
        assert train and held and not train & held
        counts = topic_counts(lang, "heldout")
        assert set(counts) == set(SHARED_TOPICS) and min(counts.values()) >= 5
    assert "Uncategorized" not in language_topics("en")
    fr = topic_articles("fr", "train", max_per_topic=3)
    assert len(fr) == 21 and all(a.doc.lang == "fr" for a in fr)
    assert {a.topic for a in fr} == set(SHARED_TOPICS)  # French labels come back under the shared English names


def test_unknown_topic_names_the_known_ones():
    with pytest.raises(ValueError, match="known ones"):
        topic_articles("en", topics=["Astrology"])


def test_selection_is_scale_free_and_picks_the_planted_unit():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50, int), np.zeros(150, int)]
    x = rng.normal(size=(200, 30))
    x[:, 7] += 1.5 * y  # the informative unit
    x[:, 3] *= 1000.0  # a large but uninformative unit must not win on raw mean difference
    assert _select(x, y, 1).tolist() == [7]
    acc, cols = sparse_probe_accuracy(x[::2], y[::2], x[1::2], y[1::2], 1)
    assert cols.tolist() == [7] and acc > 0.7


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    x = torch.from_numpy(np.round(rng.normal(size=(60, 5)), 1)).float()
    x[:, 2] = 0.0  # all tied
    topics = list(rng.choice(["a", "b", "c"], size=60))
    auc, names = feature_topic_auc(x, topics)
    for j, t in enumerate(names):
        y = np.asarray(topics) == t
        for u in range(5):
            assert float(auc[u, j]) == pytest.approx(roc_auc_score(y, x[:, u].numpy()), abs=1e-6)
    r = _average_ranks(torch.tensor([[3.0], [1.0], [3.0], [2.0]], dtype=torch.float64))
    assert r.flatten().tolist() == [3.5, 1.0, 3.5, 2.0]


def test_column_quantiles():
    x = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 3)
    q = _column_quantiles(x, torch.tensor([0.0, 0.5, 0.99]))
    assert q.tolist() == [0.0, 50.0, 98.0]


def _planted(n_per=12, n_units=20, seed=0) -> PooledUnits:
    """Three topics, two languages; feature j (j < 3) fires on topic j in both languages; neurons are noise."""
    rng = np.random.default_rng(seed)
    topics, langs, train = [], [], []
    for lang in ("en", "fr"):
        for split in (True, False):
            for t in ("A", "B", "C"):
                topics += [t] * n_per
                langs += [lang] * n_per
                train += [split] * n_per
    n = len(topics)
    feats = np.abs(rng.normal(scale=0.1, size=(n, n_units)))
    for j, t in enumerate(("A", "B", "C")):
        feats[np.asarray(topics) == t, j] += 1.0
    noise = lambda: torch.from_numpy(rng.normal(size=(n, n_units))).float()  # noqa: E731
    units = {"features": torch.from_numpy(feats).float(), "neurons": noise(), "random": noise(), "pca": noise()}
    return PooledUnits(units, topics, langs, np.asarray(train), [f"doc{i}" for i in range(n)])


def test_score_probes_finds_planted_features_in_and_across_languages(tmp_path):
    cfg = ProbeConfig(ks=(1, 2), languages=("en", "fr"), cross_lingual_from="en")
    card = score_probes(_planted(), cfg)
    settings = {r["setting"] for r in card.rows}
    assert settings == {"en", "fr", "en->fr"}
    for r in card.rows:
        assert r["features"] > 0.95, r
        assert r["neurons"] < 0.8, r  # noise units stay near chance
    top = [e["features_units"][0] for e in card.per_topic if e["k"] == 1 and e["setting"] == "en->fr"]
    assert sorted(top) == [0, 1, 2]
    assert card.feature_topics[0] == "A" and card.feature_scores[0] > 0.95
    assert max(card.feature_scores[j] for j in range(3, 20)) < 0.6
    back = ProbeScorecard.load(card.save(tmp_path))
    assert back.rows == card.rows and back.feature_scores == card.feature_scores
    assert "SAE features" in card.format_table() and "<table>" in card._repr_html_()


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="cross_lingual_from"):
        ProbeConfig(languages=("es",), cross_lingual_from="en")
    with pytest.raises(ValueError, match="ks"):
        ProbeConfig(ks=())


@pytest.mark.slow
def test_concept_probing_on_the_real_model(gemma, real_sae):
    from workbench.analysis.concept_probing import concept_probing

    cfg = ProbeConfig.smoke()
    card = concept_probing(gemma, real_sae, cfg)
    assert {r["setting"] for r in card.rows} == {"en", "es", "fr", "en->es", "en->fr"}
    for r in card.rows:
        for kind in ("features", "neurons", "random", "pca"):
            assert 0.0 <= r[kind] <= 1.0
    # the k units chosen are real unit indices of each kind
    e = card.per_topic[0]
    assert all(0 <= u < real_sae.cfg.d_sae for u in e["features_units"])
    assert all(0 <= u < gemma.cfg.d_mlp for u in e["neurons_units"])
    assert card.n_articles["train"] == 3 * 7 * cfg.train_per_topic
