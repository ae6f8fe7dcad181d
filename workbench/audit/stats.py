"""The statistics of the out-of-distribution table: Wilson intervals for a rate, a one-sided pooled
two-proportion z-test, and a paired bootstrap over prompts (the samples of one prompt are not independent, so the
prompt is the unit that is resampled).

    from workbench.audit.stats import wilson, two_proportion_test, paired_bootstrap
    wilson(3, 40)                         # (0.026, 0.199)
    two_proportion_test(12, 40, 3, 40)    # {"z": ..., "p": ...}: is the first rate greater?
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["paired_bootstrap", "two_proportion_test", "wilson"]


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval (default 95%) of a rate of ``k`` successes in ``n`` trials."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> dict:
    """One-sided pooled z-test that rate 1 (``k1/n1``) exceeds rate 2. Returns ``{"diff", "z", "p"}``; when both
    rates are 0 or both 1 the pooled variance is 0 and the rates are equal: ``z = 0``, ``p = 1``."""
    if min(n1, n2) <= 0:
        raise ValueError(f"both groups need at least one trial, got n1={n1}, n2={n2}")
    p1, p2 = k1 / n1, k2 / n2
    pool = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    if se == 0:
        return {"diff": p1 - p2, "z": 0.0, "p": 1.0}
    z = (p1 - p2) / se
    return {"diff": p1 - p2, "z": z, "p": 0.5 * math.erfc(z / math.sqrt(2))}


def paired_bootstrap(a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], *, n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """Rate difference ``a - b`` over prompts answered by both models: ``a[j]``/``b[j]`` are the hits of prompt
    ``j``'s samples. Prompts are resampled with replacement; returns ``{"diff", "lo", "hi", "p"}`` (95% percentile
    interval; ``p``: the share of resamples whose difference is <= 0, a one-sided test that ``a`` is higher)."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"a and b must hold the same, non-zero number of prompts, got {len(a)} and {len(b)}")
    d = np.array([np.mean(x) - np.mean(y) for x, y in zip(a, b)], dtype=float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    return {"diff": float(d.mean()), "lo": float(np.quantile(boots, 0.025)),
            "hi": float(np.quantile(boots, 0.975)), "p": float((boots <= 0).mean())}
