"""Class-incremental split tasks, trained one after another with no replay and no task labels, for the SDMLP, its
ablations and the baselines (ReLU MLP, Top-K MLP, EWC, MAS, SDMLP+EWC).

The penalty's step is taken implicitly (see :func:`_proximal_penalty_step`), so no lambda makes training diverge.

After each task the model is scored on the test examples of every class seen so far, over all output classes
(class-incremental: no task label picks a head). EWC and MAS add ``lam * sum_i Omega_i (theta_i - theta*_i)**2``
after each task, with ``Omega`` the diagonal Fisher (EWC: mean squared gradient of the log-likelihood of the model's
own prediction) or the mean absolute gradient of the squared output norm (MAS), accumulated over tasks.

    data = digits_split()                                # sklearn digits, 5 tasks of 2 classes
    res = run_method(data, "sdmlp", ContinualConfig.smoke(), seed=0)
    table = continual_table(data, ContinualConfig())     # {method: {"final": (mean, sem), "per_task": ...}}
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.sdm.sdmlp import MLPConfig, SparseMLP, prepare_inputs

__all__ = ["METHODS", "ContinualConfig", "MethodResult", "SplitData", "continual_table", "digits_split",
           "run_method", "split_from_arrays", "standardise", "tune_lambda"]


@dataclass
class SplitData:
    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    tasks: list[list[int]]
    class_names: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return int(max(max(t) for t in self.tasks)) + 1


def split_from_arrays(name: str, x_tr, y_tr, x_te, y_te, classes_per_task: int = 2,
                      class_names: list[str] | None = None) -> SplitData:
    classes = sorted(set(np.asarray(y_tr).tolist()))
    n_tasks = len(classes) // classes_per_task
    if n_tasks < 2:
        raise ValueError(f"{len(classes)} classes give fewer than 2 tasks of {classes_per_task}: use fewer per task")
    tasks = [classes[i * classes_per_task:(i + 1) * classes_per_task] for i in range(n_tasks)]
    keep = set(c for t in tasks for c in t)
    mtr = np.isin(y_tr, list(keep))
    mte = np.isin(y_te, list(keep))
    return SplitData(name, torch.as_tensor(np.asarray(x_tr)[mtr]).float(), torch.as_tensor(np.asarray(y_tr)[mtr]),
                     torch.as_tensor(np.asarray(x_te)[mte]).float(), torch.as_tensor(np.asarray(y_te)[mte]), tasks,
                     class_names or [str(c) for c in classes])


def digits_split(seed: int = 0) -> SplitData:
    """sklearn's 8x8 digits (ships with scikit-learn), 70/30 stratified split, tasks {0,1}, {2,3}, ..."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.3, stratify=y, random_state=seed)
    return split_from_arrays("digits", x_tr, y_tr, x_te, y_te)


@dataclass(frozen=True)
class ContinualConfig:
    """``lr`` is every method's SGD step (Adam gets ``lr * 0.05``); ``center`` subtracts the first task's training
    mean from every input (and every input is divided by the first task's RMS entry, :func:`standardise`) (known once task 1 arrives: no later data is looked at), without which the mean-pooled
    embeddings all share one dominant direction and every input wakes the same Top-K units; the GABA switch
    (annealing k from the width to k) runs over the first ``anneal_fraction`` of the first task's steps, so that k
    reaches its target before task 2 whatever the data size."""

    epochs: int = 20  # per task
    batch_size: int = 64
    seeds: int = 3
    ewc_lambda: float = 1e3
    mas_lambda: float = 10.0
    width: int = 1000
    k: int = 20
    lr: float = 0.05
    center: bool = True
    anneal_fraction: float = 0.5
    progress: bool = True

    @classmethod
    def smoke(cls) -> "ContinualConfig":
        return cls(epochs=10, seeds=1, width=300, k=10)


def _method_config(method: str, cc: ContinualConfig) -> tuple[MLPConfig, str | None]:
    base = dict(width=cc.width, k=cc.k, lr=cc.lr)
    sd = MLPConfig.sdmlp(**base)
    table = {
        "relu": (MLPConfig.relu(**base), None),
        "topk": (MLPConfig.topk_mlp(**base), None),
        "ewc": (MLPConfig.relu(**base), "ewc"),
        "mas": (MLPConfig.relu(**base), "mas"),
        "sdmlp": (sd, None),
        "sdmlp+ewc": (sd, "ewc"),
        "sdmlp-no_topk": (replace(sd, topk=False), None),
        "sdmlp-no_l2": (replace(sd, normalise=False), None),
        "sdmlp-no_nonneg": (replace(sd, nonneg=False), None),
        "sdmlp-no_gaba": (replace(sd, gaba=False), None),
        "sdmlp+bias": (replace(sd, bias=True), None),
        "sdmlp-adam": (replace(sd, optimizer="adam"), None),
        "sdmlp-fixed_addresses": (replace(sd, address_lr=0.0), None),
        "topk-fixed_addresses": (replace(MLPConfig.topk_mlp(**base), address_lr=0.0), None),
    }
    if method not in table:
        raise ValueError(f"unknown method {method!r}: pick one of {', '.join(table)}")
    return table[method]


METHODS = ("relu", "topk", "ewc", "mas", "sdmlp", "sdmlp+ewc", "sdmlp-no_topk", "sdmlp-no_l2", "sdmlp-no_nonneg",
           "sdmlp-no_gaba", "sdmlp+bias", "sdmlp-adam", "sdmlp-fixed_addresses", "topk-fixed_addresses")


@dataclass
class MethodResult:
    method: str
    seed: int
    per_task: list[float]  # accuracy on all seen classes after each task
    dead: int  # hidden units never among the active ones on the training data after the last task
    task_use: list[list[int]]  # per task: indices of the units most used by that task's examples (top 20)
    unit_class: list[int]  # per unit: the class whose examples activate it most (-1 dead)
    k_at_task2: int = 0  # the Top-K k in force when task 2 starts (the GABA switch must be over by then)

    @property
    def final(self) -> float:
        return self.per_task[-1]


def _importance(model: SparseMLP, x: Tensor, kind: str) -> list[Tensor]:
    params = [p for p in model.parameters()]
    acc = [torch.zeros_like(p) for p in params]
    for i in range(0, len(x), 64):
        xb = x[i:i + 64]
        model.zero_grad()
        out = model(xb)
        if kind == "ewc":
            logp = out.log_softmax(-1)
            loss = -logp.gather(1, out.argmax(-1, keepdim=True)).sum()
            loss.backward()
            for a, p in zip(acc, params):
                assert p.grad is not None  # every parameter takes part in the output
                a += p.grad.detach() ** 2 * (len(xb) / len(x))
        else:
            (out ** 2).sum(-1).mean().backward()
            for a, p in zip(acc, params):
                assert p.grad is not None
                a += p.grad.detach().abs() * (len(xb) / len(x))
    model.zero_grad()
    return acc


@torch.no_grad()
def _proximal_penalty_step(model: SparseMLP, omega: list[Tensor], anchor: list[Tensor], step: float) -> None:
    """The step on ``lam * Omega * (theta - anchor)**2`` taken implicitly (a proximal step): theta moves to
    ``(theta + 2 step Omega anchor) / (1 + 2 step Omega)``. An explicit gradient step overshoots once
    ``2 step Omega > 2`` and the weights blow up (what made EWC collapse to chance at large lambda); this one
    is stable for every lambda and has the same fixed points."""
    for p, o, a in zip(model.parameters(), omega, anchor):
        c = 2 * step * o
        p.copy_((p + c * a) / (1 + c))


@torch.no_grad()
def _accuracy(model: SparseMLP, x: Tensor, y: Tensor) -> float:
    return float((model(x).argmax(-1) == y).float().mean()) if len(y) else float("nan")


def standardise(x_train: Tensor, x_test: Tensor, first: Tensor, center: bool = True) -> tuple[Tensor, Tensor]:
    """Inputs on one scale for every method, from the first task's training examples only (``first``, a mask):
    minus their mean (with ``center``), divided by their root-mean-square entry. Raw residual-stream embeddings have
    norms in the hundreds, on which an unnormalised ReLU MLP at the shared learning rate diverges."""
    mu = x_train[first].mean(0) if center else torch.zeros(x_train.shape[1])
    rms = (x_train[first] - mu).pow(2).mean().sqrt().clamp_min(1e-8)
    return (x_train - mu) / rms, (x_test - mu) / rms


def run_method(data: SplitData, method: str, cc: ContinualConfig, seed: int = 0) -> MethodResult:
    cfg, reg = _method_config(method, cc)
    first = torch.isin(data.y_train, torch.tensor(data.tasks[0]))
    steps1 = cc.epochs * -(-int(first.sum()) // cc.batch_size)
    cfg = replace(cfg, anneal_steps=max(1, int(cc.anneal_fraction * steps1)))
    torch.manual_seed(seed)
    xtr, xte = (prepare_inputs(x, cfg) for x in standardise(data.x_train, data.x_test, first, cc.center))
    model = SparseMLP(xtr.shape[1], data.n_classes, cfg, seed=seed)
    opt = model.make_optimizer()
    lam = cc.ewc_lambda if reg == "ewc" else cc.mas_lambda
    anchors: list[tuple[list[Tensor], list[Tensor]]] = []
    omega: list[Tensor] | None = None
    g = torch.Generator().manual_seed(seed)
    per_task, seen = [], []
    k_at_task2 = None
    for ti, task in enumerate(data.tasks):
        if ti == 1:
            k_at_task2 = model.current_k()
        idx = torch.nonzero(torch.isin(data.y_train, torch.tensor(task))).flatten()
        for _ in range(cc.epochs):
            for b in idx[torch.randperm(len(idx), generator=g)].split(cc.batch_size):
                loss = torch.nn.functional.cross_entropy(model(xtr[b]), data.y_train[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if omega is not None:
                    _proximal_penalty_step(model, omega, anchors[-1][1], lam * cfg.lr)
                model.project()
                model.steps += 1
        if reg is not None:
            imp = _importance(model, xtr[idx], reg)
            omega = imp if omega is None else [o + i for o, i in zip(omega, imp)]
            anchors.append((imp, [p.detach().clone() for p in model.parameters()]))
        seen += task
        mask = torch.isin(data.y_test, torch.tensor(seen))
        per_task.append(_accuracy(model, xte[mask], data.y_test[mask]))
    with torch.no_grad():
        h = model.hidden(xtr)
    active = (h > 0)
    dead = int((~active.any(0)).sum())
    task_use = []
    for task in data.tasks:
        m = torch.isin(data.y_train, torch.tensor(task))
        task_use.append(active[m].float().mean(0).topk(20).indices.tolist())
    per_class = torch.stack([h[data.y_train == c].mean(0) if (data.y_train == c).any() else torch.zeros(h.shape[1])
                             for c in range(data.n_classes)])
    unit_class = torch.where(active.any(0), per_class.argmax(0), torch.tensor(-1)).tolist()
    return MethodResult(method, seed, per_task, dead, task_use, unit_class, k_at_task2 or model.current_k())


def continual_table(data: SplitData, cc: ContinualConfig, methods: tuple[str, ...] = METHODS,
                    lambdas: dict[str, float] | None = None) -> dict[str, dict]:
    """Every method over ``cc.seeds`` seeds: final accuracy mean and s.e.m., per-task means, dead units, and
    the share of units whose preferred class is unique to one task (units read as SDM addresses). ``lambdas``:
    a penalty strength per method (e.g. from :func:`tune_lambda`), else the config's."""
    out = {}
    jobs = [(m, s) for m in methods for s in range(cc.seeds)]
    results: dict[str, list[MethodResult]] = {m: [] for m in methods}
    for m, s in tqdm(jobs, desc=f"continual {data.name}", disable=not cc.progress, leave=False):
        lam = (lambdas or {}).get(m)
        mc = cc if lam is None else (replace(cc, mas_lambda=lam) if m == "mas" else replace(cc, ewc_lambda=lam))
        results[m].append(run_method(data, m, mc, seed=s))
    for m, rs in results.items():
        finals = np.array([r.final for r in rs])
        sem = float(finals.std(ddof=1) / np.sqrt(len(finals))) if len(finals) > 1 else 0.0
        overlap = [len(set(a) & set(b)) / 20 for r in rs for i, a in enumerate(r.task_use)
                   for b in r.task_use[i + 1:]]
        out[m] = {"final_mean": float(finals.mean()), "final_sem": sem,
                  "per_task_mean": np.mean([r.per_task for r in rs], 0).round(4).tolist(),
                  "per_task_sem": (np.std([r.per_task for r in rs], 0, ddof=1) / np.sqrt(len(rs))).round(4).tolist()
                  if len(rs) > 1 else [0.0] * len(rs[0].per_task),
                  "dead_mean": float(np.mean([r.dead for r in rs])),
                  "k_at_task2": int(rs[0].k_at_task2),
                  "task_unit_overlap": float(np.mean(overlap)) if overlap else 0.0,
                  "units_per_class": np.mean([np.bincount([c for c in r.unit_class if c >= 0],
                                                          minlength=data.n_classes) for r in rs], 0).round(1).tolist()}
    return out


def tune_lambda(data: SplitData, method: str, cc: ContinualConfig, grid: tuple[float, ...] = (1, 10, 100, 1e3, 1e4, 1e5),
                seed: int = 0) -> dict[float, float]:
    """Final accuracy of ``method`` ("ewc", "mas", "sdmlp+ewc") for each penalty strength in ``grid`` (one seed).
    Picking the best one on the test classes is generous to the baseline: an upper bound on its tuned accuracy."""
    if _method_config(method, cc)[1] is None:
        raise ValueError(f"{method!r} has no penalty to tune: use 'ewc', 'mas' or 'sdmlp+ewc'")
    def with_lambda(lam: float) -> ContinualConfig:
        return replace(cc, mas_lambda=lam) if method == "mas" else replace(cc, ewc_lambda=lam)

    return {lam: run_method(data, method, with_lambda(lam), seed=seed).final for lam in grid}
