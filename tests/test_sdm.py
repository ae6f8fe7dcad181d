"""SDM: the circle-intersection closed form against counts, the exponential fit, the optimal radii against a
recall simulation, and the SDMLP's components."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from workbench.sdm.binary import (fit_exponential, intersection_size, log_intersection, monte_carlo_intersection,
                                  read_weights)
from workbench.sdm.optimal import SimulationConfig, optimal_radii, OptimalConfig, simulate_recall
from workbench.sdm.sdmlp import MLPConfig, SparseMLP, prepare_inputs


@pytest.mark.parametrize("n,d,h", [(10, 3, 2), (10, 4, 5), (12, 5, 9), (12, 2, 5)])
def test_closed_form_equals_exhaustive_count(n, d, h):
    pts = np.array(list(itertools.product([0, 1], repeat=n)))
    b = np.zeros(n)
    b[:h] = 1
    count = int(((pts.sum(1) <= d) & (np.abs(pts - b).sum(1) <= d)).sum())
    assert intersection_size(n, d, h) == pytest.approx(count, rel=1e-9)


@pytest.mark.parametrize("n,d,h", [(20, 5, 4), (64, 20, 10), (64, 24, 20)])
def test_closed_form_matches_monte_carlo(n, d, h):
    exact = intersection_size(n, d, h)
    mc = monte_carlo_intersection(n, d, h, samples=200_000, seed=1)
    assert mc == pytest.approx(exact, rel=0.03)


def test_intersection_empty_beyond_twice_the_radius_and_decreasing():
    lw = log_intersection(64, 10)
    assert np.all(np.isinf(lw[21:])) and np.all(np.isfinite(lw[:21]))
    assert np.all(np.diff(lw[:21]) < 1e-9)  # non-increasing; odd h ties the next even one: I(2j-1) == I(2j)
    assert np.allclose(lw[1:21:2], lw[2:21:2]) and np.all(np.diff(lw[0:21:2]) < 0)


@pytest.mark.parametrize("n,d", [(64, 15), (64, 20), (64, 25), (256, 80)])
def test_exponential_fit_error_is_bounded(n, d):
    fit = fit_exponential(n, d)
    assert fit.max_error < 0.08
    assert fit.beta_cosine == pytest.approx(fit.beta_hamming * n / 2)


def test_read_weights_normalised_and_monotone():
    w = read_weights(64, 20, np.array([[0, 5, 10, 41, 64]]))
    assert w.sum() == pytest.approx(1.0)
    assert w[0, 0] > w[0, 1] > w[0, 2] > 0 and w[0, 3] == 0 and w[0, 4] == 0


def test_optimal_radius_matches_the_recall_simulation():
    sim = simulate_recall(SimulationConfig(neurons=2000, patterns=50, radii=tuple(range(16, 29, 2)), deltas=(6,),
                                           queries=80, seeds=1))
    radii = optimal_radii(OptimalConfig(n=64, neurons=2000, patterns=50))
    assert abs(sim.best_simulated[6] - sim.best_predicted[6]) <= 2
    assert abs(sim.best_simulated[6] - radii["critical"].d) <= 3
    assert np.max(np.abs(sim.accuracy - sim.predicted)) < 0.15


def test_sdmlp_step_keeps_weights_nonnegative_normalised_and_k_active():
    cfg = MLPConfig(width=50, k=4, gaba=False)
    x = prepare_inputs(torch.randn(32, 8), cfg)
    assert (x >= 0).all() and torch.allclose(x.norm(dim=1), torch.ones(32))
    m = SparseMLP(16, 3, cfg, seed=0)
    opt = m.make_optimizer()
    loss = torch.nn.functional.cross_entropy(m(x), torch.randint(0, 3, (32,)))
    loss.backward()
    opt.step()
    m.project()
    assert (m.w1 >= 0).all() and torch.allclose(m.w1.norm(dim=1), torch.ones(50), atol=1e-5)
    assert ((m.hidden(x) > 0).sum(1) <= 4).all() and ((m.hidden(x) > 0).sum(1) == 4).float().mean() > 0.9
    assert m.b1 is None and isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0


def test_gaba_switch_anneals_k_from_the_width_down_to_k():
    cfg = MLPConfig(width=100, k=2, anneal_steps=10)
    m = SparseMLP(16, 2, cfg, seed=0)
    assert m.current_k() == 100
    x = torch.rand(8, 16)
    assert ((m.hidden(x) > 0).sum(1) > 2).all()  # at first every unit with a positive input is on
    m.steps = 5
    assert m.current_k() == 51
    m.steps = 10
    assert m.current_k() == 2 and ((m.hidden(x) > 0).sum(1) <= 2).all()
