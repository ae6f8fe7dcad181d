"""Optimal SDM read/write radii and the softmax beta each implies, checked by a recall simulation.

Neurons sit at ``r`` uniform random addresses; ``m`` random +-1 patterns are stored autoassociatively (each written
to the neurons within ``d`` of its address); a query ``delta`` bits from a stored pattern reads the neurons within
``d`` of itself and takes the sign of the summed counters. With ``q(h) = I(h) / 2**n`` the chance that one neuron
lies in two balls ``h`` apart (:mod:`workbench.sdm.binary`), one bit of the read has

    signal   S = r q(delta)
    variance V = r q(delta) (1 - q(delta)) + (m - 1) E_h[ r q(h) (1 - q(h)) + r**2 q(h)**2 ],  h ~ Bin(n, 1/2)

and signal-to-noise ``S / sqrt(V)``; a bit is wrong with probability about ``Phi(-S / sqrt(V))``. Three criteria pick
``d`` (:func:`optimal_radii`): the largest signal-to-noise for an exact query (``snr``), the most patterns stored at
a bit-error target (``memory``), and the largest query noise still read at that target (``critical``).

    cfg = OptimalConfig(n=64, neurons=100_000, patterns=1_000)
    radii = optimal_radii(cfg)            # {"snr": OptimalRadius(d, beta_cosine, ...), "memory": ..., "critical": ...}
    sim = simulate_recall(SimulationConfig.smoke())   # recall accuracy per d, next to the prediction
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from workbench.sdm.binary import fit_exponential, log_intersection

__all__ = ["OptimalConfig", "OptimalRadius", "SimulationConfig", "SimulationResult", "beta_band", "bit_error",
           "optimal_radii", "signal_to_noise", "simulate_recall"]


@dataclass(frozen=True)
class OptimalConfig:
    n: int = 64  # address bits (the head dimension when read as attention)
    neurons: int = 100_000
    patterns: int = 1_000
    bit_error: float = 0.01  # the target for the memory and critical-distance criteria

    @classmethod
    def smoke(cls) -> "OptimalConfig":
        return cls(n=64, neurons=2_000, patterns=50)


@dataclass(frozen=True)
class OptimalRadius:
    criterion: str
    d: int
    beta_hamming: float
    beta_cosine: float
    fit_max_error: float
    value: float  # the criterion's value at d: snr, patterns stored, or bits of noise tolerated


def _log_q(n: int, d: int) -> np.ndarray:
    return log_intersection(n, d) - n * math.log(2)


def signal_to_noise(n: int, d: int, neurons: int, patterns: int, delta: int | np.ndarray = 0) -> np.ndarray:
    """Signal-to-noise of one read bit (module docstring) for queries ``delta`` bits from the stored pattern."""
    q = np.exp(_log_q(n, d))
    lbin = np.array([math.lgamma(n + 1) - math.lgamma(h + 1) - math.lgamma(n - h + 1) for h in range(n + 1)])
    ph = np.exp(lbin - n * math.log(2))
    cross = float(np.sum(ph * (neurons * q * (1 - q) + neurons ** 2 * q ** 2)))
    qd = q[np.asarray(delta)]
    var = neurons * qd * (1 - qd) + (patterns - 1) * cross
    return neurons * qd / np.sqrt(np.maximum(var, 1e-300))


def bit_error(snr: np.ndarray) -> np.ndarray:
    """Phi(-snr): the Gaussian approximation of one bit's error rate."""
    return 0.5 * np.vectorize(math.erfc)(np.asarray(snr, dtype=np.float64) / math.sqrt(2))


def _threshold(err: float) -> float:
    """rho with Phi(-rho) = err (bisection; no scipy at import time)."""
    lo, hi = 0.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(mid / math.sqrt(2)) > err else (lo, mid)
    return (lo + hi) / 2


def _radius(criterion: str, n: int, d: int, value: float) -> OptimalRadius:
    fit = fit_exponential(n, d)
    return OptimalRadius(criterion, d, fit.beta_hamming, fit.beta_cosine, fit.max_error, float(value))


def criterion_curves(cfg: OptimalConfig) -> dict[str, np.ndarray]:
    """Each criterion's value for d = 1..n/2: snr, patterns stored at the error target, noise bits tolerated."""
    rho = _threshold(cfg.bit_error)
    ds = np.arange(1, cfg.n // 2 + 1)
    snr, mem, crit = [], [], []
    for d in ds:
        snr.append(float(signal_to_noise(cfg.n, int(d), cfg.neurons, cfg.patterns, 0)))
        s1 = float(signal_to_noise(cfg.n, int(d), cfg.neurons, 1, 0))  # no interference
        q = np.exp(_log_q(cfg.n, int(d)))
        lbin = np.array([math.lgamma(cfg.n + 1) - math.lgamma(h + 1) - math.lgamma(cfg.n - h + 1)
                         for h in range(cfg.n + 1)])
        cross = float(np.sum(np.exp(lbin - cfg.n * math.log(2)) * (cfg.neurons * q * (1 - q)
                                                                   + cfg.neurons ** 2 * q ** 2)))
        sig = cfg.neurons * q[0]
        own = cfg.neurons * q[0] * (1 - q[0])
        mem.append(max(0.0, 1 + ((sig / rho) ** 2 - own) / cross) if s1 >= rho else 0.0)
        s_delta = signal_to_noise(cfg.n, int(d), cfg.neurons, cfg.patterns, np.arange(cfg.n + 1))
        ok = np.flatnonzero(s_delta >= rho)
        crit.append(float(ok.max()) if len(ok) and ok[0] == 0 else -1.0)
    return {"d": ds, "snr": np.array(snr), "memory": np.array(mem), "critical": np.array(crit)}


def optimal_radii(cfg: OptimalConfig | None = None) -> dict[str, OptimalRadius]:
    """The radius each criterion picks, with the beta of its fitted exponential (ties: the smaller d)."""
    cfg = cfg or OptimalConfig()
    cur = criterion_curves(cfg)
    out = {}
    for name in ("snr", "memory", "critical"):
        i = int(np.argmax(cur[name]))
        out[name] = _radius(name, cfg.n, int(cur["d"][i]), cur[name][i])
    return out


BAND_NEURONS = (10_000, 1_000_000)
BAND_PATTERNS = (100, 10_000)


def beta_band(n: int, neurons: tuple[int, ...] = BAND_NEURONS, patterns: tuple[int, ...] = BAND_PATTERNS,
              bit_error: float = 0.01) -> tuple[float, float]:
    """(lowest, highest) beta_cosine over the three criteria and every memory size ``neurons`` x ``patterns``
    given (with patterns < neurons): the band attention's beta is compared with for head dimension ``n``."""
    betas = [r.beta_cosine for nr in neurons for m in patterns if m < nr
             for r in optimal_radii(OptimalConfig(n, nr, m, bit_error)).values()]
    if not betas:
        raise ValueError("beta_band needs at least one memory size with fewer patterns than neurons")
    return min(betas), max(betas)


# --------------------------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    n: int = 64
    neurons: int = 4_000
    patterns: int = 100
    radii: tuple[int, ...] = tuple(range(14, 31))
    deltas: tuple[int, ...] = (0, 4, 8)  # query noise in bits
    queries: int = 200
    seeds: int = 3

    @classmethod
    def smoke(cls) -> "SimulationConfig":
        return cls(neurons=2_000, patterns=50, radii=tuple(range(16, 31, 2)), deltas=(0, 6), queries=60, seeds=1)


@dataclass
class SimulationResult:
    config: SimulationConfig
    accuracy: np.ndarray  # [radius, delta] mean bit accuracy of one read
    predicted: np.ndarray  # [radius, delta] 1 - Phi(-snr)
    best_simulated: dict[int, int] = field(default_factory=dict)  # delta -> d with the best simulated accuracy
    best_predicted: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "accuracy": self.accuracy.round(4).tolist(),
                "predicted": self.predicted.round(4).tolist(),
                "best_simulated": {str(k): v for k, v in self.best_simulated.items()},
                "best_predicted": {str(k): v for k, v in self.best_predicted.items()}}


def simulate_recall(cfg: SimulationConfig | None = None) -> SimulationResult:
    """Store random patterns in a real SDM, read them back from noisy queries, one step, per radius."""
    cfg = cfg or SimulationConfig()
    acc = np.zeros((len(cfg.radii), len(cfg.deltas)))
    for seed in range(cfg.seeds):
        rng = np.random.default_rng(seed)
        addr = rng.integers(0, 2, (cfg.neurons, cfg.n), dtype=np.int8)
        pats = rng.integers(0, 2, (cfg.patterns, cfg.n), dtype=np.int8)
        dist = (addr[:, None, :] != pats[None, :, :]).sum(-1)  # [neurons, patterns]
        targets = rng.integers(0, cfg.patterns, cfg.queries)
        for b, delta in enumerate(cfg.deltas):
            q = pats[targets].copy()
            for row in q:
                row[rng.choice(cfg.n, size=delta, replace=False)] ^= 1
            qdist = (addr[:, None, :] != q[None, :, :]).sum(-1)  # [neurons, queries]
            for a, d in enumerate(cfg.radii):
                counters = (dist <= d).astype(np.float32) @ (2.0 * pats - 1)  # [neurons, n]
                read = (qdist <= d).astype(np.float32).T @ counters  # [queries, n]
                acc[a, b] += float(((read > 0) == (pats[targets] == 1)).mean()) / cfg.seeds
    pred = np.array([[1 - float(bit_error(signal_to_noise(cfg.n, d, cfg.neurons, cfg.patterns, delta)))
                      for delta in cfg.deltas] for d in cfg.radii])
    res = SimulationResult(cfg, acc, pred)
    for b, delta in enumerate(cfg.deltas):
        res.best_simulated[delta] = int(cfg.radii[int(np.argmax(acc[:, b]))])
        res.best_predicted[delta] = int(cfg.radii[int(np.argmax(pred[:, b]))])
    return res
