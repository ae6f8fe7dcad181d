"""Reused persona features (workbench.persona.reuse): overlap, controls, ranking, clamping, streetlight."""
from types import SimpleNamespace

import pytest
import torch

from workbench.persona.reuse import (FeatureSetClamp, jaccard, mean_delta, overlap_row, random_features,
                                     rank_correlation, shuffled_delta, streetlight, top_features)


def _planted(d=200, n=10, shared=(3, 17, 42), seed=0):
    """Narrative and assistant activations in which features ``shared`` rise on the trait side of both."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(2 * n, d, generator=g) * 0.1
    narr_pos, narr_neg = base[:n].clone(), base[n:].clone()
    asst = torch.rand(2 * n, d, generator=g) * 0.1
    asst_pos, asst_neg = asst[:n].clone(), asst[n:].clone()
    for f in shared:
        narr_pos[:, f] += 1.0
        asst_pos[:, f] += 1.0
    narr_pos[:, 100] += 2.0  # narrative only
    asst_pos[:, 150] += 2.0  # assistant only
    return narr_pos, narr_neg, asst_pos, asst_neg


def test_overlap_finds_planted_shared_features_above_controls():
    np_, nn, ap, an = _planted()
    narr, asst = mean_delta(np_, nn), mean_delta(ap, an)
    other = mean_delta(*_planted(shared=(60, 61, 62), seed=1)[:2])  # another trait's narratives
    row = overlap_row(narr, asst, {"other": other, "shuffled": shuffled_delta(np_, nn)}, k=4)
    assert sorted(row["shared"]) == [3, 17, 42]
    assert row["jaccard"] == pytest.approx(3 / 5)
    assert row["control_other"]["n_shared"] == 0
    assert row["control_shuffled"]["jaccard"] < 0.35  # the planted rise cancels under balanced swaps


def test_shuffled_delta_cancels_a_constant_trait_shift():
    pos = torch.zeros(6, 5)
    pos[:, 2] = 1.0
    neg = torch.zeros(6, 5)
    assert mean_delta(pos, neg)[2] == pytest.approx(1.0)
    assert shuffled_delta(pos, neg).abs().max() == pytest.approx(0.0, abs=1e-6)


def test_top_features_jaccard_and_rank_correlation():
    s = torch.tensor([0.5, -1.0, 3.0, 0.0, 2.0])
    assert top_features(s, 3) == [2, 4, 0]
    assert top_features(-s, 3) == [1]  # only positive scores
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert jaccard([], []) == 0.0
    x = torch.arange(10.0)
    assert rank_correlation(x, x ** 3) == pytest.approx(1.0)
    assert rank_correlation(x, -x) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        top_features(s, 0)


def test_random_features_avoid_exclusions_and_are_seeded():
    a = random_features(50, 5, exclude=range(10), seed=3)
    assert len(set(a)) == 5 and min(a) >= 10
    assert a == random_features(50, 5, exclude=range(10), seed=3)
    with pytest.raises(ValueError):
        random_features(5, 6)


class _LinearSAE:
    """encode = relu(x W_enc), W_dec = I (d=4): clamping sets coordinates exactly."""

    def __init__(self):
        self.W_dec = torch.eye(4)
        self.cfg = SimpleNamespace(d_sae=4, d_in=4)
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T)


def test_feature_set_clamp_sets_only_the_chosen_features():
    clamp = FeatureSetClamp(hook="blocks.0.hook_resid_post", sae=_LinearSAE(), features=(1, 3), values=(5.0, 2.0))
    x = torch.tensor([[[1.0, 0.5, -1.0, 0.0]]])
    y = clamp.apply(x)
    assert torch.allclose(y, torch.tensor([[[1.0, 5.0, -1.0, 2.0]]]))
    with pytest.raises(ValueError):
        FeatureSetClamp(hook="h", sae=_LinearSAE(), features=(9,), values=(1.0,))


def test_streetlight_auc():
    scores = {1: 0.9, 2: 0.8, 3: 0.1, 4: 0.2, 5: float("nan")}
    out = streetlight(scores, reused=[1, 2], others=[3, 4, 5])
    assert out["auc"] == pytest.approx(1.0)
    assert out["n_other"] == 2
    assert streetlight(scores, reused=[3], others=[1])["auc"] == pytest.approx(0.0)
