"""Power laws y = a x^b fitted by least squares in log-log space, with a t-interval on the exponent from the fit's
covariance and a bootstrap percentile interval (resampling the points).

    from workbench.analysis.powerlaw import fit_power_law
    fit = fit_power_law(compute, loss)     # fit.exponent, fit.exponent_ci, fit.bootstrap_ci, fit.predict(x)

Pure functions on arrays (numpy; scipy for the t quantile), tested on synthetic data with known exponents. The
scaling-law fits (:mod:`workbench.analysis.scaling`) are built on them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from workbench.core.config import known_fields_only

__all__ = ["PowerLawFit", "fit_power_law", "positive_array"]


def _interval(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` as plain floats (for JSON)."""
    return (float(lo), float(hi))


def positive_array(name: str, values) -> np.ndarray:
    """``values`` as a flat float64 array; ValueError naming ``name`` unless every value is finite and positive."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr <= 0)):
        raise ValueError(f"{name} must be finite and positive for a power-law fit, got {arr.tolist()}")
    return arr


@dataclass
class PowerLawFit:
    """y = prefactor * x ** exponent, fitted by least squares on (log x, log y).

    ``exponent_ci`` is a t-interval from the fit's covariance at ``confidence`` (nan with 2 points: no residual
    degrees of freedom); ``bootstrap_ci`` a percentile interval over resampled points (None below 4 points)."""

    exponent: float
    prefactor: float
    exponent_stderr: float
    exponent_ci: tuple[float, float]
    bootstrap_ci: tuple[float, float] | None
    confidence: float
    n_points: int
    r2: float

    def predict(self, x) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=np.float64) ** self.exponent

    def to_dict(self) -> dict:
        out = asdict(self)
        out["exponent_ci"] = list(self.exponent_ci)
        out["bootstrap_ci"] = list(self.bootstrap_ci) if self.bootstrap_ci is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PowerLawFit":
        data = known_fields_only(cls, data, "power-law fit field(s)")
        data["exponent_ci"] = tuple(data["exponent_ci"])
        data["bootstrap_ci"] = tuple(data["bootstrap_ci"]) if data.get("bootstrap_ci") is not None else None
        return cls(**data)


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float, float]:
    """slope, intercept, slope standard error, r^2 of ly ~ lx."""
    n = lx.size
    mx, my = lx.mean(), ly.mean()
    sxx = float(((lx - mx) ** 2).sum())
    slope = float(((lx - mx) * (ly - my)).sum() / sxx)
    intercept = float(my - slope * mx)
    resid = ly - (intercept + slope * lx)
    ssr = float((resid ** 2).sum())
    sst = float(((ly - my) ** 2).sum())
    se = math.sqrt(ssr / (n - 2) / sxx) if n > 2 else float("nan")
    r2 = 1.0 - ssr / sst if sst > 0 else 1.0
    return slope, intercept, se, r2


def fit_power_law(x, y, *, confidence: float = 0.95, n_bootstrap: int = 2000, seed: int = 0) -> PowerLawFit:
    """Fit y = a x^b (see :class:`PowerLawFit`). Needs at least 2 points with distinct x, all values positive."""
    from scipy import stats  # heavy: only for the t quantile

    x, y = positive_array("x", x), positive_array("y", y)
    if x.size != y.size:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < 2 or np.unique(x).size < 2:
        raise ValueError(f"a power-law fit needs at least 2 points with distinct x, got x={x.tolist()}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    lx, ly = np.log(x), np.log(y)
    slope, intercept, se, r2 = _ols(lx, ly)
    n = x.size
    if n > 2:
        t = float(stats.t.ppf(0.5 + confidence / 2, n - 2))
        ci = _interval(slope - t * se, slope + t * se)
    else:
        ci = (float("nan"), float("nan"))
    boot = None
    if n >= 4 and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_bootstrap, n))
        bx, by = lx[idx], ly[idx]
        mx, my = bx.mean(1, keepdims=True), by.mean(1, keepdims=True)
        sxx = ((bx - mx) ** 2).sum(1)
        ok = sxx > 1e-12 * max(1.0, float(((lx - lx.mean()) ** 2).sum()))
        slopes = ((bx - mx) * (by - my)).sum(1)[ok] / sxx[ok]
        if slopes.size >= 10:
            alpha = (1 - confidence) / 2
            boot = _interval(np.quantile(slopes, alpha), np.quantile(slopes, 1 - alpha))
    return PowerLawFit(exponent=slope, prefactor=float(math.exp(intercept)), exponent_stderr=se, exponent_ci=ci,
                       bootstrap_ci=boot, confidence=confidence, n_points=n, r2=r2)
