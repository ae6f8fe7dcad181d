"""Binary Sparse Distributed Memory: Hamming-ball intersections, read weights and their exponential fit.

In an SDM over ``n``-bit addresses a pattern is written to every neuron within Hamming radius ``d`` of its address
and a query reads every neuron within ``d`` of itself. The weight a stored pattern gets in the read is the number of
neurons in both balls, which depends only on the distance ``h`` between the two centres. With neurons uniform over
the address space its expectation is ``r * I(h) / 2**n`` where ``I`` is the intersection size computed here.

    I = intersection_size(n=64, d=20, h=10)             # exact count (a float, computed in log space)
    lw = log_intersection(64, 20)                         # log I(h) for h = 0..n (-inf where empty)
    fit = fit_exponential(64, 20)                         # I(h) ~ exp(-beta_h * h); fit.beta_cosine, fit.max_error
    mc = monte_carlo_intersection(64, 20, 10, samples=200_000, seed=0)

Every function is pure; log space keeps n in the hundreds exact to float64 precision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["ExpFit", "ball_size", "fit_exponential", "intersection_size", "log_ball_size", "log_intersection",
           "monte_carlo_intersection", "read_weights"]


def _check(n: int, d: int) -> None:
    if n < 1 or not 0 <= d <= n:
        raise ValueError(f"need n >= 1 and 0 <= d <= n, got n={n}, d={d}: pick a radius inside the address space")


def _log_comb(n: int) -> np.ndarray:
    """log C(n, k) for k = 0..n."""
    k = np.arange(n + 1)
    return math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in k])


def log_ball_size(n: int, d: int) -> float:
    """log of the number of addresses within Hamming distance ``d`` of a point."""
    _check(n, d)
    return float(np.logaddexp.reduce(_log_comb(n)[: d + 1]))


def ball_size(n: int, d: int) -> int:
    _check(n, d)
    return sum(math.comb(n, i) for i in range(d + 1))


def log_intersection(n: int, d: int) -> np.ndarray:
    """log I(h) for h = 0..n: the number of addresses within ``d`` of two points ``h`` apart.

    Of the ``h`` bits where the centres differ, an address agrees with the first centre on ``i`` (so it is ``h - i``
    from it there and ``i`` from the second); of the ``n - h`` shared bits it flips ``j``. It is in both balls when
    ``h - i + j <= d`` and ``i + j <= d``, and there are ``C(h, i) C(n - h, j)`` such addresses.
    """
    _check(n, d)
    return _log_intersection(n, d).copy()


@lru_cache(maxsize=4096)
def _log_intersection(n: int, d: int) -> np.ndarray:
    out = np.full(n + 1, -np.inf)
    for h in range(n + 1):
        lch, lcs = _log_comb(h), _log_comb(n - h)
        i = np.arange(h + 1)[:, None]
        j = np.arange(n - h + 1)[None, :]
        ok = (h - i + j <= d) & (i + j <= d)
        if ok.any():
            out[h] = float(np.logaddexp.reduce((lch[:, None] + lcs[None, :])[ok]))
    return out


def intersection_size(n: int, d: int, h: int) -> float:
    """I(h), the exact count (as a float; use :func:`log_intersection` for large n)."""
    if not 0 <= h <= n:
        raise ValueError(f"the distance h={h} must lie in 0..n={n}")
    return float(np.exp(log_intersection(n, d)[h]))


def read_weights(n: int, d: int, distances: np.ndarray) -> np.ndarray:
    """Normalised SDM read weights of patterns at Hamming ``distances`` (any real values in [0, n]; non-integer
    distances interpolate log I linearly), summing to one over the last axis. All-empty rows stay zero."""
    lw = log_intersection(n, d)
    h = np.clip(np.asarray(distances, dtype=np.float64), 0, n)
    lo = np.floor(h).astype(int)
    hi = np.minimum(lo + 1, n)
    frac = h - lo
    a, b = lw[lo], lw[hi]
    with np.errstate(invalid="ignore"):
        logw = np.where(np.isinf(b), np.where(frac > 0, -np.inf, a), (1 - frac) * a + frac * b)
    m = np.max(logw, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.exp(logw - m)
    s = w.sum(-1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s > 0)


@dataclass(frozen=True)
class ExpFit:
    """I(h) ~ C exp(-beta_hamming h) over the distances where the balls meet (h <= 2d).

    ``beta_cosine = beta_hamming * n / 2`` is the same decay per unit of cosine similarity (h = n (1 - cos) / 2 for
    +-1 vectors), i.e. the softmax temperature attention would need. ``max_error``: the largest absolute gap between
    the normalised intersection weights and the normalised fitted exponential over h = 0..2d (weights relative to
    h = 0); ``log_rmse``: the RMS error of the fit in log space."""

    n: int
    d: int
    beta_hamming: float
    log_c: float
    max_error: float
    log_rmse: float

    @property
    def beta_cosine(self) -> float:
        return self.beta_hamming * self.n / 2


def fit_exponential(n: int, d: int) -> ExpFit:
    """Least-squares fit of log I(h) against h for h = 0..min(2d, n) (where the intersection is non-empty), each
    distance weighted by the square root of its normalised read weight, so the fit is good where the read is."""
    lw = log_intersection(n, d)
    h = np.arange(min(2 * d, n) + 1)
    y = lw[h]
    keep = np.isfinite(y)
    h, y = h[keep], y[keep]
    if len(h) < 2:
        raise ValueError(f"radius d={d} leaves fewer than two non-empty distances to fit: use d >= 1")
    w_true = np.exp(y - y.max())
    slope, intercept = np.polyfit(h, y, 1, w=np.sqrt(w_true / w_true.sum()))  # fit where the read weight is
    pred = slope * h + intercept
    w_fit = np.exp(pred - pred.max())
    return ExpFit(n, d, float(-slope), float(intercept), float(np.max(np.abs(w_true / w_true.sum()
                                                                              - w_fit / w_fit.sum()))),
                  float(np.sqrt(np.mean((pred - y) ** 2))))


def _random_in_ball(n: int, d: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` addresses uniform within radius ``d`` of the all-zero address, as 0/1 arrays."""
    lc = _log_comb(n)[: d + 1]
    p = np.exp(lc - np.logaddexp.reduce(lc))
    radii = rng.choice(d + 1, size=size, p=p / p.sum())
    keys = rng.random((size, n))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)  # a random permutation per row
    return (ranks < radii[:, None]).astype(np.int8)


def monte_carlo_intersection(n: int, d: int, h: int, samples: int = 100_000, seed: int = 0) -> float:
    """Monte-Carlo estimate of I(h): addresses drawn uniformly inside the first ball, the share that also lies
    within ``d`` of the second centre, times the ball's exact size."""
    _check(n, d)
    rng = np.random.default_rng(seed)
    x = _random_in_ball(n, d, samples, rng)
    b = np.zeros(n, dtype=np.int8)
    b[rng.choice(n, size=h, replace=False)] = 1
    inside = (np.abs(x - b).sum(1) <= d).mean()
    return float(inside * math.exp(log_ball_size(n, d)))
