"""choose() by a lower confidence bound: synthetic sweep rows, and old rows without trait_sd (docs/methods.md §32)."""
from __future__ import annotations

import json
import math

import pytest

from workbench.persona.steer import SteerRow, _row, choose


def _rows():
    # high mean, high variance (4 answers of 0 / 100): mean 50, sd 57.7, sem 28.9 -> lcb(1.645) 2.5
    noisy = _row("persona", 24, 1.0, 1.4, [0.0, 100.0, 0.0, 100.0], [90.0] * 4, ["a"] * 4)
    # slightly lower mean, low variance: mean 45, sd 5.8, sem 2.9 -> lcb 40.3
    steady = _row("persona", 15, 1.5, 1.6, [40.0, 50.0, 40.0, 50.0], [90.0] * 4, ["b"] * 4)
    return [_row("none", -1, 0.0, 1.0, [0.0] * 4, [95.0] * 4, ["c"] * 4), noisy, steady]


def test_row_carries_sd_and_sem():
    _, noisy, steady = _rows()
    assert noisy.trait == 50.0 and noisy.trait_sd == pytest.approx(57.735, abs=1e-3)
    assert noisy.sem == pytest.approx(57.735 / 2, abs=1e-3) and steady.sem == pytest.approx(2.887, abs=1e-3)
    assert steady.lower_bound(1.645) == pytest.approx(45 - 1.645 * 2.887, abs=1e-2)
    assert noisy.scores == [0.0, 100.0, 0.0, 100.0]


def test_lcb_prefers_the_consistent_row_and_mean_the_noisy_one():
    rows = _rows()
    assert choose(rows, by="mean").layer == 24
    assert choose(rows).layer == 15 and choose(rows, by="lcb", z=1.0).layer == 15
    assert choose(rows, by="lcb", z=0.0).layer == 24  # z = 0 is the mean rule


def test_choose_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown ranking"):
        choose(_rows(), by="median")
    with pytest.raises(ValueError, match="z must be"):
        choose(_rows(), z=-1)


def test_old_rows_without_trait_sd_load_and_rank_by_mean():
    old = [{"method": "persona", "layer": 24, "coef": 1.0, "trait": 44.0, "coherence": 90.0, "ppl_ratio": 1.43,
            "n": 16}, {"method": "persona", "layer": 15, "coef": 1.5, "trait": 39.0, "coherence": 80.0,
                       "ppl_ratio": 1.59, "n": 16, "extra_key": 1}]
    rows = [SteerRow.from_dict(d) for d in old]
    assert math.isnan(rows[0].trait_sd) and math.isnan(rows[0].sem) and rows[1].texts == []
    with pytest.warns(UserWarning, match="no s.e.m."):
        assert choose(rows).layer == 24  # no s.e.m. anywhere: the mean decides
    # a row that has one ranks above those that do not, whatever their means
    new = _rows()[2]
    with pytest.warns(UserWarning):
        assert choose([*rows, new]).layer == 15
    # to_dict -> JSON -> from_dict keeps trait_sd (texts and scores are left out of the table row)
    d = json.loads(json.dumps(new.to_dict()))
    assert "scores" not in d and "texts" not in d
    back = SteerRow.from_dict(d)
    assert back.trait_sd == pytest.approx(new.trait_sd) and back.sem == pytest.approx(new.sem)
    with pytest.raises(ValueError, match="needs"):
        SteerRow.from_dict({"method": "persona"})
