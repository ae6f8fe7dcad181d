"""Safety-relevant feature search (workbench.persona.safety_features): data, choice, held-out test, judge."""
import json

import pytest
import torch

from workbench.persona.safety_features import (ConceptJudge, choose_feature, heldout_separation,
                                               load_safety_concepts)


def test_shipped_contrast_sets_are_valid_and_their_judges_see_the_concept():
    data = load_safety_concepts()
    assert {"deception", "sycophancy", "power_seeking", "bias", "dangerous_information", "self_representation",
            "npc_dialogue"} <= set(data.concepts) and len(data.clamp_questions) >= 4
    for c in data.concepts.values():
        assert len(c.positive) == len(c.negative) >= 16 and not set(c.positive) & set(c.negative)
        judge = ConceptJudge(c)
        pos = [judge("", t).trait for t in c.positive]
        neg = [judge("", t).trait for t in c.negative]
        # the lexicon that judges the clamps must tell the concept's own texts from their matched negatives
        assert sum(pos) / len(pos) > sum(neg) / len(neg) + 20, (c.name, pos, neg)


def test_bad_files_are_refused(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"clamp_questions": ["q"], "concepts": {"x": {"description": "", "positive": ["a"] * 4,
                                                                           "negative": ["b"] * 3, "lexicon": ["a"]}}}))
    with pytest.raises(ValueError, match="as many negative texts"):
        load_safety_concepts(bad)
    bad.write_text(json.dumps({"clamp_questions": ["q"], "concepts": {"x": {"description": "", "positive": ["a"] * 4,
                                                                           "negative": ["b"] * 4, "lexicon": ["(a"]}}}))
    with pytest.raises(ValueError, match="not a regular expression"):
        load_safety_concepts(bad)
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a safety-concepts file"):
        load_safety_concepts(bad)


def test_choose_feature_finds_the_planted_one_and_skips_rare_firing():
    g = torch.Generator().manual_seed(0)
    # sparse codes, as an SAE's: about a tenth of the entries fire, with small values
    pos, neg = [torch.rand(8, 50, generator=g) * (torch.rand(8, 50, generator=g) < 0.1) * 0.2 for _ in range(2)]
    pos[:, 7] += 1.0           # fires on every positive text
    pos[0, 30] = 50.0          # a huge mean from one text: fires on 1/8, must not win
    pos[:, 12] = 0.0
    pos[:6, 12] = 0.6          # fires on 6/8, a smaller rise: second
    pick = choose_feature(pos, neg, k=3)
    assert pick["feature"] == 7 and pick["top"][:2] == [7, 12] and 30 not in pick["top"]
    assert choose_feature(torch.zeros(4, 5), torch.zeros(4, 5))["feature"] is None
    with pytest.raises(ValueError, match="codes for both sets"):
        choose_feature(torch.zeros(4, 5), torch.zeros(4, 6))


def test_heldout_separation_is_one_for_a_clean_split_and_chance_for_none():
    clean = heldout_separation(torch.tensor([2.0, 3.0, 1.5, 2.5, 4.0, 3.3, 2.2, 1.9]), torch.zeros(8))
    assert clean["auc"] == 1.0 and clean["p"] < 0.01 and clean["pos_rate"] == 1.0 and clean["neg_rate"] == 0.0
    same = heldout_separation(torch.tensor([1.0, 0.0, 2.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 2.0]))
    assert same["auc"] == 0.5 and same["p"] > 0.3
    with pytest.raises(ValueError, match="at least one"):
        heldout_separation(torch.tensor([]), torch.ones(3))
