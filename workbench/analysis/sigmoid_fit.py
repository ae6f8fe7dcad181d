"""A maximum-likelihood logistic (sigmoid) fit of a binary outcome on one variable, with Wald intervals.

    fit = fit_sigmoid(x, y)          # y in {0, 1}
    fit.midpoint, fit.slope, fit.midpoint_ci
    fit.predict([fit.midpoint])      # 0.5

P(y = 1) = 1 / (1 + exp(-slope * (x - midpoint))), fitted by IRLS with a small ridge on the slope, which keeps
separable data finite. The completeness analysis (:mod:`workbench.analysis.completeness`) uses it for the
probability that a concept has a dedicated feature against its log frequency.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from workbench.core.config import known_fields_only

__all__ = ["SigmoidFit", "fit_sigmoid"]


@dataclass
class SigmoidFit:
    """P(present) = 1 / (1 + exp(-slope * (x - midpoint))). ``midpoint_ci`` (delta method) and ``slope_ci`` are
    Wald intervals from the inverse Fisher information; ``defined`` is False (with ``reason``) when every concept
    is present or every one absent, and ``separable`` when a threshold splits them perfectly (the slope is then
    set by the ridge and its interval is not meaningful). ``in_range`` says whether the midpoint lies within the
    observed x; with very few present (or absent) concepts it is often far outside, an extrapolation."""

    midpoint: float
    slope: float
    midpoint_ci: tuple[float, float]
    slope_ci: tuple[float, float]
    n: int
    n_present: int
    defined: bool
    separable: bool
    in_range: bool = False  # the midpoint lies within the observed x (else it is an extrapolation)
    reason: str = ""

    def predict(self, x) -> np.ndarray:
        from scipy.special import expit  # scipy is slow to import: only when a fit is used

        return expit(self.slope * (np.asarray(x, dtype=np.float64) - self.midpoint))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["midpoint_ci"], out["slope_ci"] = list(self.midpoint_ci), list(self.slope_ci)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SigmoidFit":
        data = known_fields_only(cls, data, "sigmoid fit fields")
        data["midpoint_ci"], data["slope_ci"] = tuple(data["midpoint_ci"]), tuple(data["slope_ci"])
        return cls(**data)


def fit_sigmoid(x, y, *, ridge: float = 1e-3, confidence: float = 0.95, max_iter: int = 100) -> SigmoidFit:
    """Maximum-likelihood logistic fit of binary ``y`` on ``x`` (IRLS; ``ridge`` penalises the slope)."""
    from scipy import stats  # scipy is slow to import: only when a fit is made
    from scipy.special import expit

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size != y.size or x.size == 0:
        raise ValueError(f"x and y need the same non-zero length, got {x.size} and {y.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite (drop concepts that never occur before taking log frequencies)")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must be 0/1 (absent/present)")
    n, k = int(x.size), int(y.sum())
    nan2 = (math.nan, math.nan)
    if k == 0 or k == n:
        return SigmoidFit(math.nan, math.nan, nan2, nan2, n, k, False, False, False,
                          "every concept is " + ("present" if k == n else "absent") + ": no midpoint to fit")
    xm, xs = x.mean(), x.std() or 1.0
    z = (x - xm) / xs  # standardised for conditioning
    X = np.stack([np.ones(n), z], 1)
    R = np.diag([0.0, ridge * n])
    beta = np.zeros(2)
    for _ in range(max_iter):
        p = expit(X @ beta)
        w = p * (1 - p)
        H = X.T @ (X * w[:, None]) + R
        step = np.linalg.solve(H, X.T @ (y - p) - R @ beta)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    p = expit(X @ beta)
    H = X.T @ (X * (p * (1 - p))[:, None]) + R
    cov = np.linalg.inv(H)
    a, b = beta
    slope = b / xs
    mid = xm - a / b * xs if b != 0 else math.nan
    zq = float(stats.norm.ppf(0.5 + confidence / 2))
    se_b = math.sqrt(max(cov[1, 1], 0.0)) / xs
    # midpoint in z units: -a/b; delta method
    g = np.array([-1.0 / b, a / b ** 2]) if b != 0 else np.array([math.nan, math.nan])
    se_mid = math.sqrt(max(float(g @ cov @ g), 0.0)) * xs
    order = np.argsort(x)
    ys = y[order]
    separable = bool(np.all(np.diff(ys) >= 0)) or bool(np.all(np.diff(ys) <= 0))
    return SigmoidFit(midpoint=float(mid), slope=float(slope),
                      midpoint_ci=(float(mid - zq * se_mid), float(mid + zq * se_mid)),
                      slope_ci=(float(slope - zq * se_b), float(slope + zq * se_b)), n=n, n_present=k, defined=True,
                      separable=separable, in_range=bool(x.min() <= mid <= x.max()))
