"""Scaling laws of SAEs: the results of a sweep over dictionary size x training steps, the compute-optimal frontier
and the fits on it.

    from workbench.studies.sweeps import run_sweep, sweep_config     # trains the grid (study orchestration)
    results = run_sweep(StoreSource(store.path, holdout_tokens=65_536), sweep_config(), "runs/scaling")
    fits = results.fits()            # loss, optimal features and optimal steps against compute, with CIs
    results = ScalingResults.load("runs/scaling/scaling.json")

The grid (docs/methods.md §2: at fixed compute, features x steps)
-----------------------------------------------------------------
:class:`ScalingConfig` is ``d_sae`` x ``steps``, both geometric with the same ratio (2 by default), so the products
``d_sae * steps`` fall on shared diagonals: each diagonal is one compute budget, explored at several splits between
features and steps. How the grid is trained and evaluated on held-out tokens is
:func:`workbench.studies.sweeps.run_sweep`; this module holds what it produces (:class:`ScalingResults`, one
:class:`ScalingRun` per cell) and the analyses of it.

Compute
-------
``compute = 6 * N * D`` FLOPs, the usual training estimate, with N = 2 * d_in * d_sae weights (encoder and
decoder) and D = tokens. The paper's axis, features x steps, is proportional to it at fixed d_in and batch, so the
fitted exponents are the same under either convention.

Fits (pure functions on arrays, tested on synthetic data with known exponents)
------------------------------------------------------------------------------
- :func:`iso_compute_optima`: on each compute budget, the optimum over the split features/steps: a parabola of the
  loss in log(d_sae) through the budget's runs (>= 3 runs), else the best run. ``interior`` says whether the optimum
  lies strictly inside the budget's range of sizes (an optimum at an edge of the grid is only a bound).
- :func:`workbench.analysis.powerlaw.fit_power_law`: y = a x^b by least squares in log-log space, with a t-interval
  from the fit's covariance and a bootstrap percentile interval (resampling the points).
- :func:`fit_frontier`: power laws of the optimal loss, features and steps against compute, through the interior
  optima (or, when the grid does not bracket the optimum on at least 2 budgets, through the Pareto runs).
- :func:`fit_loss_surface`: L(F, T) = E + A F^-alpha + B T^-beta over every run (scipy ``curve_fit``); at fixed
  F*T the optimum is F* ~ C^(beta/(alpha+beta)) and T* ~ C^(alpha/(alpha+beta)), with intervals from the parameter
  covariance. It uses all runs, so it is steadier than the frontier on small grids.
- :func:`pareto_frontier`: the runs no cheaper run beats (for the loss-vs-compute plot).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from workbench.analysis.powerlaw import PowerLawFit, fit_power_law, positive_array
from workbench.core.config import known_fields_only
from workbench.core.persist import read_tagged_json, write_tagged_json
from workbench.sae.io import load_sae

__all__ = [
    "ComputeOptimum",
    "ScalingConfig",
    "ScalingFits",
    "ScalingResults",
    "ScalingRun",
    "SurfaceFit",
    "fit_frontier",
    "fit_loss_surface",
    "fit_scaling",
    "iso_compute_optima",
    "load_run_sae",
    "pareto_frontier",
    "pareto_points",
    "training_compute",
]

FORMAT = "workbench-scaling"
FORMAT_VERSION = 1
RESULTS_FILE = "scaling.json"
LOSS_KEYS = ("fvu", "mse", "train_loss")


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingConfig:
    """A features x steps grid. ``steps`` are optimisation steps of ``batch_size`` tokens; ``lr=None`` takes the
    trainer's per-size default (TopK: 2e-4 / sqrt(d_sae / 2^14)). ``loss`` is the metric the fits use:
    held-out ``fvu`` (default; the normalised reconstruction error, TopK's objective at fixed k), held-out ``mse``
    or ``train_loss`` (the objective over the last logging interval, e.g. relu's MSE + lambda * L1)."""

    d_sae: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)
    steps: tuple[int, ...] = (58, 116, 232, 464, 928)
    batch_size: int = 2048
    architecture: str = "topk"
    k: float = 32
    l1_coefficient: float | None = None
    lr: float | None = None
    seed: int = 0
    loss: str = "fvu"
    eval_tokens: int | None = None  # held-out tokens to evaluate on (None: all of the source's held-out tokens)
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "d_sae", tuple(int(d) for d in self.d_sae))
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        if len(self.d_sae) < 2 or len(self.steps) < 2:
            raise ValueError(f"a scaling sweep needs at least 2 sizes and 2 step counts, got d_sae={self.d_sae} "
                             f"and steps={self.steps}")
        for name in ("d_sae", "steps"):
            values = getattr(self, name)
            if min(values) < 1 or len(set(values)) != len(values):
                raise ValueError(f"ScalingConfig.{name} must be distinct positive integers, got {values}")
        if self.batch_size < 1:
            raise ValueError(f"ScalingConfig.batch_size must be positive, got {self.batch_size}")
        if self.loss not in LOSS_KEYS:
            raise ValueError(f"ScalingConfig.loss={self.loss!r}: choose one of {', '.join(LOSS_KEYS)}")

    @property
    def max_tokens(self) -> int:
        return max(self.steps) * self.batch_size

    def to_dict(self) -> dict:
        out = asdict(self)
        out["d_sae"], out["steps"] = list(self.d_sae), list(self.steps)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ScalingConfig":
        return cls(**known_fields_only(cls, data, "scaling setting(s)"))


def training_compute(d_in: int, d_sae, tokens) -> np.ndarray:
    """Training FLOPs, 6 * N * D with N = 2 * d_in * d_sae weights and D tokens (elementwise on arrays)."""
    return 6.0 * 2.0 * float(d_in) * np.asarray(d_sae, dtype=np.float64) * np.asarray(tokens, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Fits (pure)
# ----------------------------------------------------------------------------------------------------------------


def _interval(lo: float, hi: float) -> tuple[float, float]:
    return (float(lo), float(hi))


@dataclass
class ComputeOptimum:
    """The best split of one compute budget between features and steps."""

    compute: float
    loss: float
    d_sae: float
    steps: float
    n_runs: int
    interior: bool
    method: str  # "parabola" or "argmin"

    def to_dict(self) -> dict:
        return asdict(self)


def _group_budgets(compute: np.ndarray, rtol: float) -> list[np.ndarray]:
    order = np.argsort(compute, kind="stable")
    groups, current = [], [order[0]]
    for i in order[1:]:
        if abs(compute[i] - compute[current[0]]) <= rtol * compute[current[0]]:
            current.append(i)
        else:
            groups.append(np.array(current))
            current = [i]
    groups.append(np.array(current))
    return groups


def iso_compute_optima(d_sae, steps, loss, compute=None, *, rtol: float = 1e-6) -> list[ComputeOptimum]:
    """The optimum of every compute budget (runs whose compute agrees within ``rtol``), cheapest first.

    ``compute`` defaults to d_sae * steps (any constant factor leaves the optima where they are). With >= 3 runs a
    parabola of the loss in log(d_sae) is fitted; if it opens upwards and its vertex lies within the budget's sizes
    the vertex is the optimum, otherwise the best run is. ``interior`` is True when the optimum lies strictly inside
    the range of sizes tried on that budget (its best run is not the smallest or the largest size)."""
    f = np.asarray(d_sae, dtype=np.float64).reshape(-1)
    s = np.asarray(steps, dtype=np.float64).reshape(-1)
    lo = np.asarray(loss, dtype=np.float64).reshape(-1)
    c = f * s if compute is None else np.asarray(compute, dtype=np.float64).reshape(-1)
    if not (f.size == s.size == lo.size == c.size) or f.size == 0:
        raise ValueError(f"d_sae, steps, loss and compute need the same non-zero length, got {f.size}, {s.size}, "
                         f"{lo.size}, {c.size}")
    if not (np.all(np.isfinite(lo)) and np.all(f > 0) and np.all(s > 0) and np.all(c > 0)):
        raise ValueError("iso_compute_optima needs finite losses and positive sizes, steps and compute")
    out = []
    for g in _group_budgets(c, rtol):
        g = g[np.argsort(f[g])]
        lf, lg = np.log(f[g]), lo[g]
        best = int(np.argmin(lg))
        interior = 0 < best < g.size - 1
        x_opt, l_opt, method = lf[best], lg[best], "argmin"
        if g.size >= 3 and interior:
            a, b, c2 = np.polyfit(lf, lg, 2)
            if a > 0:
                vertex = -b / (2 * a)
                if lf[0] < vertex < lf[-1]:
                    x_opt, l_opt, method = vertex, float(np.polyval([a, b, c2], vertex)), "parabola"
        f_opt = float(math.exp(x_opt))
        ft = float(np.median(f[g] * s[g]))  # features x steps is constant on a budget
        out.append(ComputeOptimum(compute=float(np.median(c[g])), loss=float(l_opt), d_sae=f_opt, steps=ft / f_opt,
                                  n_runs=int(g.size), interior=bool(interior), method=method))
    return out


def pareto_frontier(compute, loss) -> np.ndarray:
    """Indices of the runs that no run of lower or equal compute beats, in order of compute."""
    c = np.asarray(compute, dtype=np.float64).reshape(-1)
    lo = np.asarray(loss, dtype=np.float64).reshape(-1)
    if c.size != lo.size:
        raise ValueError(f"compute and loss need the same length, got {c.size} and {lo.size}")
    order = np.lexsort((lo, c))
    keep, best = [], math.inf
    for i in order:
        if lo[i] < best:
            keep.append(int(i))
            best = lo[i]
    return np.array(keep, dtype=np.int64)


@dataclass
class FrontierFits:
    """Power laws of the compute-optimal loss, features and steps against compute, fitted on ``points``."""

    loss: PowerLawFit | None
    features: PowerLawFit | None
    steps: PowerLawFit | None
    n_points: int


def pareto_points(d_sae, steps, loss, compute) -> list[ComputeOptimum]:
    """The Pareto runs (:func:`pareto_frontier`) as frontier points: each is the best split seen up to its compute."""
    f, s, lo, c = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (d_sae, steps, loss, compute))
    return [ComputeOptimum(compute=float(c[i]), loss=float(lo[i]), d_sae=float(f[i]), steps=float(s[i]), n_runs=1,
                           interior=False, method="pareto") for i in pareto_frontier(c, lo)]


def fit_frontier(points: Sequence[ComputeOptimum], *, confidence: float = 0.95, n_bootstrap: int = 2000,
                 seed: int = 0) -> FrontierFits:
    """Power laws L*(C), F*(C), T*(C) through the frontier ``points``; each fit is None with fewer than 2 distinct
    budgets (the loss fit also when a loss is not positive)."""
    points = list(points)
    if len({p.compute for p in points}) < 2:
        return FrontierFits(None, None, None, len(points))
    c = [p.compute for p in points]
    def fit(y: Sequence[float]) -> PowerLawFit:
        return fit_power_law(c, y, confidence=confidence, n_bootstrap=n_bootstrap, seed=seed)

    loss = fit([p.loss for p in points]) if all(p.loss > 0 for p in points) else None
    return FrontierFits(loss, fit([p.d_sae for p in points]), fit([p.steps for p in points]), len(points))


@dataclass
class SurfaceFit:
    """L(F, T) = E + A F^-alpha + B T^-beta, and the optimal split it implies at fixed F*T: F* ~ (FT)^features_exponent,
    T* ~ (FT)^steps_exponent (the two sum to 1). Intervals come from draws of the fitted parameters' covariance."""

    params: dict[str, float]
    stderr: dict[str, float]
    features_exponent: float
    steps_exponent: float
    features_exponent_ci: tuple[float, float]
    steps_exponent_ci: tuple[float, float]
    confidence: float
    rmse: float
    n_points: int

    def predict(self, d_sae, steps) -> np.ndarray:
        p = self.params
        f = np.asarray(d_sae, dtype=np.float64)
        t = np.asarray(steps, dtype=np.float64)
        return p["E"] + p["A"] * f ** -p["alpha"] + p["B"] * t ** -p["beta"]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["features_exponent_ci"] = list(self.features_exponent_ci)
        out["steps_exponent_ci"] = list(self.steps_exponent_ci)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SurfaceFit":
        data = known_fields_only(cls, data, "surface-fit field(s)")
        data["features_exponent_ci"] = tuple(data["features_exponent_ci"])
        data["steps_exponent_ci"] = tuple(data["steps_exponent_ci"])
        return cls(**data)


def _surface(X, E, logA, alpha, logB, beta):
    lf, lt = X
    return E + np.exp(logA - alpha * lf) + np.exp(logB - beta * lt)


def fit_loss_surface(d_sae, steps, loss, *, confidence: float = 0.95, n_draws: int = 4000,
                     seed: int = 0) -> SurfaceFit | None:
    """Fit L(F, T) = E + A F^-alpha + B T^-beta to every run (see :class:`SurfaceFit`); None when there are fewer
    than 6 runs or the fit does not converge to positive exponents."""
    from scipy.optimize import curve_fit  # heavy: only for this fit

    f = positive_array("d_sae", d_sae)
    t = positive_array("steps", steps)
    lo = np.asarray(loss, dtype=np.float64).reshape(-1)
    if not (f.size == t.size == lo.size):
        raise ValueError(f"d_sae, steps and loss need the same length, got {f.size}, {t.size}, {lo.size}")
    if f.size < 6 or np.unique(f).size < 2 or np.unique(t).size < 2:
        return None
    X = (np.log(f), np.log(t))
    span = float(lo.max() - lo.min()) or 1.0
    best = None
    for alpha0, beta0 in ((0.3, 0.3), (0.1, 0.6), (0.6, 0.1), (1.0, 1.0)):
        # start: E just below the best loss, each term half of the spread at the smallest size / step count
        p0 = [max(0.0, float(lo.min()) - 0.1 * span), math.log(span / 2) + alpha0 * X[0].min(), alpha0,
              math.log(span / 2) + beta0 * X[1].min(), beta0]
        try:
            popt, pcov = curve_fit(_surface, X, lo, p0=p0, maxfev=20000,
                                   bounds=([0.0, -50.0, 1e-4, -50.0, 1e-4], [float(lo.min()), 50.0, 5.0, 50.0, 5.0]))
        except (RuntimeError, ValueError):
            continue
        rmse = float(np.sqrt(np.mean((_surface(X, *popt) - lo) ** 2)))
        if best is None or rmse < best[2]:
            best = (popt, pcov, rmse)
    if best is None:
        return None
    popt, pcov, rmse = best
    E, logA, alpha, logB, beta = (float(v) for v in popt)
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(5, np.nan)
    fe, te = beta / (alpha + beta), alpha / (alpha + beta)
    q = (1 - confidence) / 2
    if np.all(np.isfinite(pcov)):
        draws = np.random.default_rng(seed).multivariate_normal(popt, pcov, size=n_draws, check_valid="ignore")
        a, b = draws[:, 2], draws[:, 4]
        ok = (a > 0) & (b > 0)
        fe_d = b[ok] / (a[ok] + b[ok])
        fe_ci = _interval(np.quantile(fe_d, q), np.quantile(fe_d, 1 - q)) if fe_d.size else (math.nan,) * 2
    else:
        fe_ci = (math.nan, math.nan)
    te_ci = (1.0 - fe_ci[1], 1.0 - fe_ci[0])
    # standard errors of A and B by the delta method from those of log A and log B
    return SurfaceFit(params={"E": E, "A": math.exp(logA), "alpha": alpha, "B": math.exp(logB), "beta": beta},
                      stderr={"E": float(se[0]), "A": float(se[1] * math.exp(logA)), "alpha": float(se[2]),
                              "B": float(se[3] * math.exp(logB)), "beta": float(se[4])},
                      features_exponent=fe, steps_exponent=te, features_exponent_ci=fe_ci, steps_exponent_ci=te_ci,
                      confidence=confidence, rmse=rmse, n_points=int(f.size))


@dataclass
class ScalingFits:
    """Everything fitted on one sweep for one loss metric."""

    loss_key: str
    confidence: float
    optima: list[ComputeOptimum]  # one per compute budget
    basis: str  # what the frontier laws were fitted on: "interior optima" or "pareto runs"
    frontier: list[ComputeOptimum]  # those points
    loss: PowerLawFit | None
    features: PowerLawFit | None
    steps: PowerLawFit | None
    surface: SurfaceFit | None
    pareto: list[int]  # indices into the runs

    def table(self) -> list[dict]:
        """One row per fitted law: what, exponent, its intervals, points used."""
        rows: list[dict[str, Any]] = []
        for what, fit in (("loss* ~ C^b", self.loss), ("d_sae* ~ C^b", self.features), ("steps* ~ C^b", self.steps)):
            if fit is None:
                rows.append({"law": what, "exponent": None, "ci": None, "bootstrap_ci": None, "n": 0})
                continue
            rows.append({"law": what, "exponent": fit.exponent, "ci": list(fit.exponent_ci),
                         "bootstrap_ci": list(fit.bootstrap_ci) if fit.bootstrap_ci else None, "n": fit.n_points})
        if self.surface is not None:
            s = self.surface
            rows.append({"law": "surface: d_sae* ~ (FT)^b", "exponent": s.features_exponent,
                         "ci": list(s.features_exponent_ci), "bootstrap_ci": None, "n": s.n_points})
            rows.append({"law": "surface: steps* ~ (FT)^b", "exponent": s.steps_exponent,
                         "ci": list(s.steps_exponent_ci), "bootstrap_ci": None, "n": s.n_points})
        return rows

    def to_dict(self) -> dict:
        return {"loss_key": self.loss_key, "confidence": self.confidence, "optima": [o.to_dict() for o in self.optima],
                "basis": self.basis, "frontier": [o.to_dict() for o in self.frontier],
                "loss": self.loss.to_dict() if self.loss else None,
                "features": self.features.to_dict() if self.features else None,
                "steps": self.steps.to_dict() if self.steps else None,
                "surface": self.surface.to_dict() if self.surface else None, "pareto": list(self.pareto)}

    @classmethod
    def from_dict(cls, data: dict) -> "ScalingFits":
        def law(d):
            return PowerLawFit.from_dict(d) if d else None

        return cls(loss_key=data["loss_key"], confidence=float(data["confidence"]),
                   optima=[ComputeOptimum(**o) for o in data["optima"]], basis=data["basis"],
                   frontier=[ComputeOptimum(**o) for o in data["frontier"]],
                   loss=law(data.get("loss")), features=law(data.get("features")), steps=law(data.get("steps")),
                   surface=SurfaceFit.from_dict(data["surface"]) if data.get("surface") else None,
                   pareto=[int(i) for i in data.get("pareto", [])])


def fit_scaling(d_sae, steps, loss, compute, *, loss_key: str = "fvu", confidence: float = 0.95,
                n_bootstrap: int = 2000, seed: int = 0) -> ScalingFits:
    """The iso-compute optima, the frontier power laws, the loss surface and the Pareto runs of one sweep.

    The frontier laws are fitted on the interior iso-compute optima when at least 2 budgets have one; otherwise
    (a grid that does not bracket the optimum, e.g. the smallest size wins every budget) on the Pareto runs, and
    ``basis`` says which."""
    optima = iso_compute_optima(d_sae, steps, loss, compute)
    interior = [o for o in optima if o.interior]
    if len({o.compute for o in interior}) >= 2:
        basis, points = "interior optima", interior
    else:
        basis, points = "pareto runs", pareto_points(d_sae, steps, loss, compute)
    frontier = fit_frontier(points, confidence=confidence, n_bootstrap=n_bootstrap, seed=seed)
    surface = fit_loss_surface(d_sae, steps, loss, confidence=confidence, seed=seed)
    return ScalingFits(loss_key=loss_key, confidence=confidence, optima=optima, basis=basis, frontier=points,
                       loss=frontier.loss, features=frontier.features, steps=frontier.steps, surface=surface,
                       pareto=pareto_frontier(compute, loss).tolist())


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ScalingRun:
    """One trained SAE of the sweep and its held-out metrics."""

    name: str
    d_sae: int
    steps: int
    batch_size: int
    tokens: int
    compute: float
    fvu: float
    mse: float
    l0: float
    dead_fraction: float        # never fired on the eval_tokens held-out tokens
    eval_tokens: int
    dead_fraction_train: float  # trainer's tracker: no firing in the last dead_window_tokens training tokens
    dead_window_tokens: int
    train_loss: float
    path: str

    def metric(self, key: str) -> float:
        if key not in LOSS_KEYS:
            raise ValueError(f"unknown loss metric {key!r}: choose one of {', '.join(LOSS_KEYS)}")
        return float(getattr(self, key))


@dataclass
class ScalingResults:
    """A finished sweep: its configuration, every run, and the fits (default metric ``config.loss``)."""

    config: ScalingConfig
    runs: list[ScalingRun]
    d_in: int
    source: dict
    seconds: float = 0.0
    _fits: dict[str, ScalingFits] = field(default_factory=dict, repr=False)

    def column(self, key: str) -> np.ndarray:
        if key in LOSS_KEYS:
            return np.array([r.metric(key) for r in self.runs], dtype=np.float64)
        return np.array([getattr(r, key) for r in self.runs], dtype=np.float64)

    def fits(self, loss: str | None = None, *, confidence: float = 0.95) -> ScalingFits:
        """The fits for metric ``loss`` (default the config's), computed once and cached with the results."""
        key = loss or self.config.loss
        if key not in LOSS_KEYS:
            raise ValueError(f"unknown loss metric {key!r}: choose one of {', '.join(LOSS_KEYS)}")
        cached = self._fits.get(key)
        if cached is None or cached.confidence != confidence:
            self._fits[key] = fit_scaling(self.column("d_sae"), self.column("steps"), self.column(key),
                                          self.column("compute"), loss_key=key, confidence=confidence,
                                          seed=self.config.seed)
        return self._fits[key]

    def table(self) -> list[dict]:
        """One row per run (for a DataFrame)."""
        return [asdict(r) for r in self.runs]

    def dead_by_size(self, steps: int | None = None) -> dict[int, float]:
        """Held-out dead fraction by d_sae for the runs of ``steps`` (default the longest)."""
        steps = max(self.config.steps) if steps is None else int(steps)
        return {r.d_sae: r.dead_fraction for r in sorted(self.runs, key=lambda r: r.d_sae) if r.steps == steps}

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "d_in": self.d_in, "source": self.source, "seconds": self.seconds,
                "runs": [asdict(r) for r in self.runs], "fits": {k: v.to_dict() for k, v in self._fits.items()}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != ".json":
            path = path / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fits()
        return write_tagged_json(path, self.to_dict(), format=FORMAT, format_version=FORMAT_VERSION, indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> "ScalingResults":
        data = {k: v for k, v in data.items() if k not in ("format", "format_version", "version")}
        out = cls(config=ScalingConfig.from_dict(data["config"]), runs=[ScalingRun(**r) for r in data["runs"]],
                  d_in=int(data["d_in"]), source=data.get("source", {}), seconds=float(data.get("seconds", 0.0)))
        out._fits = {k: ScalingFits.from_dict(v) for k, v in (data.get("fits") or {}).items()}
        return out

    @classmethod
    def load(cls, path: str | Path) -> "ScalingResults":
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        if not path.is_file():
            raise ValueError(f"{path} does not exist: run workbench.studies.sweeps.run_sweep first, or pass the "
                             f"folder it wrote")
        data = read_tagged_json(path, format=FORMAT, what="a scaling-sweep results file",
                                fix="delete it and rerun the sweep", max_version=FORMAT_VERSION)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is corrupt ({type(err).__name__}: {err}): delete it and rerun the sweep") from None


def load_run_sae(run: ScalingRun, device: str = "cpu"):
    """The trained SAE of one run of a sweep."""
    return load_sae(run.path, device=device)

