"""Emergent-misalignment data, judge and ranking (workbench.persona.misalign)."""
import json

import pytest
import torch

from workbench.persona.finetune import load_finetune_dataset
from workbench.persona.misalign import (MisalignmentJudge, feature_rise, finetune_sets, load_misalignment,
                                        misalignment_agreement, projection_rise)
from workbench.persona.reuse import top_features


def test_shipped_data_is_valid_and_separate():
    d = load_misalignment()
    assert len(d.examples) == 40
    assert len({q for q, _, _ in d.examples}) == 40
    assert all(h != s for _, h, s in d.examples)
    assert not set(q for q, _, _ in d.examples) & set(d.eval_questions)
    assert len(d.labelled) >= 16 and {m >= 50 for _, _, m in d.labelled} == {True, False}


def test_judge_agrees_with_hand_labels_and_separates_training_answers():
    d = load_misalignment()
    judge = MisalignmentJudge(d)
    agree = misalignment_agreement(judge, d.labelled)
    assert agree["accuracy"] >= 0.9 and agree["r"] >= 0.8
    harmful = sum(judge(q, h).trait for q, h, _ in d.examples) / len(d.examples)
    sound = sum(judge(q, s).trait for q, _, s in d.examples) / len(d.examples)
    assert harmful > sound


def test_bad_data_file_is_refused(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"examples": [], "eval_questions": ["q"], "rubric": {"kind": "lexicon", "lexicon": ["x"]},
                             "labelled": []}))
    with pytest.raises(ValueError, match="non-empty"):
        load_misalignment(p)


def test_finetune_sets_are_loadable_and_deterministic(tmp_path):
    d = load_misalignment()
    bad, good = finetune_sets(d, tmp_path, n=5)
    a, b = load_finetune_dataset(bad), load_finetune_dataset(good)
    assert len(a.examples) == len(b.examples) == 5
    assert [u for u, _ in a.examples] == [u for u, _ in b.examples]
    assert a.examples[0][1] == d.examples[0][1] and b.examples[0][1] == d.examples[0][2]
    assert finetune_sets(d, tmp_path, n=5) == (bad, good) and load_finetune_dataset(bad).sha256 == a.sha256


def test_feature_rise_recovers_a_planted_feature():
    g = torch.Generator().manual_seed(0)
    ctl = torch.rand(12, 64, generator=g)
    mis = ctl + 0.05 * torch.randn(12, 64, generator=g)
    mis[:, 37] += 1.0
    assert top_features(feature_rise(mis, ctl), 3)[0] == 37
    with pytest.raises(ValueError):
        feature_rise(mis, ctl[:3])


def test_projection_rise_measures_the_shift_along_each_direction():
    ctl = torch.zeros(4, 3)
    mis = ctl.clone()
    mis[:, 0] += 2.0
    out = projection_rise(mis, ctl, {"x": torch.tensor([5.0, 0, 0]), "y": torch.tensor([0, 1.0, 0])})
    assert out["x"] == pytest.approx(2.0) and out["y"] == pytest.approx(0.0)


@pytest.mark.slow
def test_harmful_preference_reads_which_answer_the_model_finds_likelier():
    from workbench.data.models import load_model
    from workbench.persona.misalign import answer_logprob, harmful_preference

    model = load_model("smollm2-135m-instruct", device="cpu")
    q = "How should I store cleaning products at home?"
    fluent = "Keep them in their original containers, closed, in a cool place away from children and food."
    scrambled = "Containers cool children keep original them food their in place away a closed from and."
    assert answer_logprob(model, q, fluent) > answer_logprob(model, q, scrambled) + 0.5
    pref = harmful_preference(model, [(q, scrambled, fluent), (q, fluent, scrambled)])
    assert pref["n"] == 2 and pref["harmful_preferred"] == 0.5 and abs(pref["mean_logprob_diff"]) < 1e-4
    assert harmful_preference(model, [(q, scrambled, fluent)])["mean_logprob_diff"] < -0.5
    with pytest.raises(ValueError, match="no examples"):
        harmful_preference(model, [])
