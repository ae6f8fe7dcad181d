"""Scaling laws: the fits on synthetic data with known exponents, a tiny real sweep on synthetic activations
(train -> evaluate -> JSON -> reload), and the ScalingView widget driven through its methods."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from workbench.analysis.powerlaw import PowerLawFit, fit_power_law
from workbench.analysis.scaling import (ComputeOptimum, ScalingConfig, ScalingResults, fit_frontier, fit_loss_surface,
                                        fit_scaling, iso_compute_optima, pareto_frontier, pareto_points,
                                        training_compute)
from workbench.studies.sweeps import run_sweep, sweep_config
from workbench.sae.train import SyntheticSource

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _surface(f, t, E=0.05, A=1.0, alpha=0.3, B=1.0, beta=0.5):
    return E + A * np.asarray(f, float) ** -alpha + B * np.asarray(t, float) ** -beta


def _grid(lo=4, hi=12):
    f = 2.0 ** np.arange(lo, hi + 1)
    ff, tt = np.meshgrid(f, f, indexing="ij")
    return ff.ravel(), tt.ravel()


# ----------------------------------------------------------------------------------------------------------------
# Pure fits
# ----------------------------------------------------------------------------------------------------------------


def test_power_law_recovers_exponent_and_its_interval_covers_it():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e9, 1e14, 10)
    covered, boot_covered, n = 0, 0, 200
    for _ in range(n):
        y = 2.5 * x ** -0.27 * np.exp(rng.normal(0, 0.05, x.size))
        fit = fit_power_law(x, y, n_bootstrap=300, seed=int(rng.integers(1 << 30)))
        covered += fit.exponent_ci[0] <= -0.27 <= fit.exponent_ci[1]
        boot_covered += fit.bootstrap_ci[0] <= -0.27 <= fit.bootstrap_ci[1]
    assert 0.88 <= covered / n <= 0.995  # a 95% t-interval
    assert boot_covered / n >= 0.8       # percentile bootstrap with 10 points is a little narrow
    exact = fit_power_law(x, 3.0 * x ** 0.4)
    assert exact.exponent == pytest.approx(0.4, abs=1e-9) and exact.prefactor == pytest.approx(3.0, rel=1e-6)
    assert exact.r2 == pytest.approx(1.0)
    np.testing.assert_allclose(exact.predict([1e10]), 3.0 * 1e10 ** 0.4, rtol=1e-6)


def test_power_law_rejects_bad_input_and_two_points_have_no_interval():
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2, 3], [1, -1, 2])
    with pytest.raises(ValueError, match="distinct x"):
        fit_power_law([2, 2], [1, 3])
    two = fit_power_law([1, 10], [1, 100])
    assert two.exponent == pytest.approx(2.0) and all(math.isnan(v) for v in two.exponent_ci)
    assert two.bootstrap_ci is None


def test_power_law_fit_round_trips_through_json():
    x = np.geomspace(1.0, 1e4, 6)
    fit = fit_power_law(x, 2.0 * x ** -0.5 * np.exp(np.sin(np.arange(6)) * 0.01), n_bootstrap=200)
    again = PowerLawFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert again == fit and again.bootstrap_ci is not None
    np.testing.assert_allclose(again.predict(x), fit.predict(x))


def test_iso_compute_optima_follow_the_analytic_optimum():
    # L = A F^-a + B T^-b at F*T = K is minimal at F* = (aA / (bB))^(1/(a+b)) K^(b/(a+b))
    f, t = _grid()
    loss = _surface(f, t)
    optima = iso_compute_optima(f, t, loss)
    assert [o.compute for o in optima] == sorted({float(c) for c in f * t})
    interior = [o for o in optima if o.interior]
    assert len(interior) >= 8 and all(o.method == "parabola" for o in interior)
    for o in interior:
        analytic = (0.3 / 0.5) ** (1 / 0.8) * o.compute ** (0.5 / 0.8)
        assert o.d_sae == pytest.approx(analytic, rel=0.2)
        assert o.d_sae * o.steps == pytest.approx(o.compute)
    edge = [o for o in optima if not o.interior]
    assert all(o.method == "argmin" for o in edge)


def test_frontier_and_surface_recover_the_features_exponent():
    f, t = _grid()
    rng = np.random.default_rng(1)
    loss = _surface(f, t) * np.exp(rng.normal(0, 0.002, f.size))
    fits = fit_scaling(f, t, loss, f * t)
    assert fits.basis == "interior optima"
    assert fits.features.exponent == pytest.approx(0.625, abs=0.04)
    assert fits.features.exponent + fits.steps.exponent == pytest.approx(1.0, abs=1e-9)
    assert fits.loss.exponent < 0
    s = fits.surface
    assert s.params["alpha"] == pytest.approx(0.3, abs=0.03) and s.params["beta"] == pytest.approx(0.5, abs=0.03)
    assert s.features_exponent_ci[0] <= 0.625 <= s.features_exponent_ci[1]
    assert s.features_exponent + s.steps_exponent == pytest.approx(1.0)
    np.testing.assert_allclose(s.predict(f, t), loss, rtol=0.02)


def test_surface_needs_enough_runs():
    assert fit_loss_surface([1, 2, 4], [1, 2, 4], [3, 2, 1]) is None


def test_pareto_frontier_and_fallback_when_the_grid_does_not_bracket_the_optimum():
    c = np.array([1, 2, 2, 4, 8, 8])
    loss = np.array([5.0, 4.0, 3.0, 3.5, 2.0, 2.5])
    assert pareto_frontier(c, loss).tolist() == [0, 2, 4]
    # smallest size best on every budget: no interior optimum, the frontier uses the Pareto runs
    f, t = _grid(4, 7)
    loss = 1.0 / np.sqrt(t) + 1e-4 * f
    fits = fit_scaling(f, t, loss, f * t)
    assert fits.basis == "pareto runs"
    assert all(p.method == "pareto" for p in fits.frontier)
    assert [p.compute for p in fits.frontier] == sorted(p.compute for p in fits.frontier)
    assert len(pareto_points(f, t, loss, f * t)) == len(fits.frontier)
    assert fit_frontier([ComputeOptimum(1.0, 1.0, 1.0, 1.0, 1, True, "argmin")]).features is None


def test_training_compute_convention():
    assert float(training_compute(640, 1024, 4096)) == 6 * 2 * 640 * 1024 * 4096


# ----------------------------------------------------------------------------------------------------------------
# A real (tiny) sweep
# ----------------------------------------------------------------------------------------------------------------


class _HeldOutSynthetic(SyntheticSource):
    """Synthetic activations with the first ``holdout_tokens`` of another seed held out."""

    holdout_tokens = 512

    def heldout_batches(self, batch_size):
        other = SyntheticSource(self.d_model, self.n_features, active=self.active, seed=self.seed + 99,
                                noise=self.noise)
        for i in range(self.holdout_tokens // batch_size):
            yield other.batch(i, batch_size)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    src = _HeldOutSynthetic(16, 48, active=3, seed=0, noise=0.01)
    cfg = ScalingConfig(d_sae=(16, 32, 64), steps=(8, 16, 32), batch_size=64, k=4, device="cpu")
    out = tmp_path_factory.mktemp("scaling")
    return run_sweep(src, cfg, out, progress=False), src, cfg, out


def test_sweep_trains_every_cell_evaluates_and_reloads(tiny_sweep):
    results, src, cfg, out = tiny_sweep
    assert len(results.runs) == 9
    assert {(r.d_sae, r.steps) for r in results.runs} == {(d, s) for d in cfg.d_sae for s in cfg.steps}
    for r in results.runs:
        assert r.tokens == r.steps * cfg.batch_size
        assert r.compute == pytest.approx(12 * 16 * r.d_sae * r.tokens)
        assert 3 < r.l0 <= 4.0 and 0 < r.fvu < 1.5 and r.eval_tokens == 512  # TopK, k=4
    # more training helps every size
    for d in cfg.d_sae:
        by_steps = {r.steps: r.fvu for r in results.runs if r.d_sae == d}
        assert by_steps[32] < by_steps[8]
    saved = json.loads((out / "scaling.json").read_text())
    assert saved["format"] == "workbench-scaling" and len(saved["runs"]) == 9 and "fvu" in saved["fits"]
    again = ScalingResults.load(out)
    assert again.config == cfg and [r.fvu for r in again.runs] == [r.fvu for r in results.runs]
    assert again.fits().to_dict() == results.fits().to_dict()
    # a rerun loads the saved result instead of retraining
    assert run_sweep(src, cfg, out, progress=False).seconds == results.seconds
    assert set(results.dead_by_size()) == set(cfg.d_sae)


def test_sweep_rejects_sources_without_held_out_tokens(tmp_path):
    src = SyntheticSource(8, 16)
    with pytest.raises(ValueError, match="held-out"):
        run_sweep(src, ScalingConfig(d_sae=(8, 16), steps=(2, 4), batch_size=16), tmp_path, progress=False)


def test_config_validation_and_profiles():
    with pytest.raises(ValueError, match="at least 2 sizes"):
        ScalingConfig(d_sae=(8,), steps=(1, 2))
    with pytest.raises(ValueError, match="loss"):
        ScalingConfig(loss="accuracy")
    smoke = sweep_config("smoke")
    assert smoke.max_tokens <= 16_384 - 128 - 2_048  # fits the smoke store after BOS and held-out tokens
    assert sweep_config("full").max_tokens <= 2_000_000 - 15_625 - 65_536
    assert ScalingConfig.from_dict(smoke.to_dict()) == smoke


def test_scaling_view_renders_and_switches_metric(tiny_sweep):
    from helpers import assert_balanced
    from widgets.scaling_view import ScalingView

    results = tiny_sweep[0]
    view = ScalingView(results)
    figs = view.figures()
    assert set(figs) == {"loss", "optimum", "dead"}
    # one line per size in the loss plot, holding its runs' losses in order of compute
    sizes = [t for t in figs["loss"].data if t.name.startswith("d_sae")]
    assert len(sizes) == 3
    first = min(results.config.d_sae)
    expect = [r.fvu for r in sorted((r for r in results.runs if r.d_sae == first), key=lambda r: r.compute)]
    assert list(sizes[0].y) == pytest.approx(expect)
    assert len(figs["dead"].data) == len(results.config.steps)
    html = view.to_html(include_plotlyjs=False)
    assert_balanced(html)
    assert "fitted laws" in html and "d_sae* ~ C^b" in html
    view.set_loss("mse")
    assert view.fits.loss_key == "mse" and "metric: mse" in view.table_html()
    with pytest.raises(ValueError, match="unknown loss metric"):
        view.set_loss("accuracy")
    w = view.widget
    assert w.children[0].value == "mse"
    w.children[0].value = "fvu"  # the dropdown drives the view
    assert view.loss == "fvu" and "metric: fvu" in view._table.value
