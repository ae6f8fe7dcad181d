"""``workbench train``: train SAEs on an activation store, one SAE or a sweep in a single pass.

    workbench train --store STORE --arch topk --d-sae 8192 --k 32 --tokens 2M
    workbench train --store STORE --arch topk --d-sae 4096 --tokens 150k --epochs 10 --holdout-tokens 32k
    workbench train --store STORE --arch topk --arch relu --d-sae 4096 --d-sae 8192 --tokens 2M   # a 2x2 grid
    workbench train --store STORE --sweep sweep.yaml

A sweep file (YAML or JSON) may hold ``train`` (TrainConfig fields; counts such as "2M" are allowed), ``grid``
(lists of ``arch``, ``d_sae``, ``k``, ``l1``, ``l0``, ``lr``; every combination is one SAE, with each
architecture's sparsity knob: ``k`` for the TopK family, ``l1`` for relu, ``l0`` for jumprelu, ...) and
``runs`` (explicit SAEs: ``arch``, ``d_sae``, ``k``, ``l1``, ``l0``, ``lr``, ``name`` and any other SAEConfig
field)::

    train: {total_tokens: 2M, batch_size: 4096}
    grid: {arch: [topk, batchtopk], d_sae: [4096, 8192], k: [32, 64]}
    runs:
      - {arch: relu, d_sae: 8192, l1: 5}

``--tokens`` (``total_tokens``) counts the training tokens of one epoch; ``--epochs N`` trains N passes over
them, each reshuffled, so the run sees N times as many tokens (the held-out tokens of ``--holdout-tokens`` are
never trained on, and each SAE's held-out FVU is logged at the end of every epoch). One epoch must fit in the
store: training refuses to start otherwise.

Command-line flags override the file's ``train`` values. Re-running the same command resumes from the latest
checkpoint in ``--out`` (``--no-resume`` starts afresh). SIGINT (Ctrl-C) or SIGTERM finishes the current step, writes a
checkpoint and exits with 130 / 143, printing the command that resumes; a mistake in the options exits with 2 and
one line naming the fix, before anything is written.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path
from typing import Any, Sequence

from workbench.core.errors import ConfigError
from workbench.sae.architectures import architectures, get_architecture
from workbench.sae.model import ARCHITECTURES
from workbench.sae.distributed import Distributed, init_from_env
from workbench.sae.train import BatchSource, RunSpec, StoreSource, TrainConfig, train

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}
_RUN_KEYS = {"arch", "architecture", "d_sae", "k", "l1", "l1_coefficient", "l0", "l0_coefficient", "lr", "name",
             "d_in"}
_GRID_KEYS = {"arch", "d_sae", "k", "l1", "l0", "lr"}
_COUNT_FIELDS = {"total_tokens", "batch_size", "dead_window_tokens", "scale_estimate_tokens", "b_dec_init_tokens"}


def parse_count(text: str | int | float) -> int:
    """``2M`` -> 2000000, ``500k`` -> 500000, ``1.5m`` -> 1500000, ``4096`` -> 4096."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgb]?)\s*", str(text).lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: write e.g. 4096, 500k, 2M")
    return int(float(match.group(1)) * _SUFFIX[match.group(2)])


def _spec_from_dict(entry: dict, where: str) -> RunSpec:
    unknown_top = set(entry) - _RUN_KEYS
    options = {k: entry[k] for k in unknown_top}
    arch = entry.get("arch", entry.get("architecture"))
    if arch is None:
        raise ConfigError(f"{where}: each run needs an 'arch' ({', '.join(ARCHITECTURES)})")
    if "d_sae" not in entry:
        raise ConfigError(f"{where}: each run needs a 'd_sae'")
    return RunSpec(architecture=str(arch), d_sae=int(entry["d_sae"]), k=float(entry.get("k", 32)),
                   l1_coefficient=entry.get("l1", entry.get("l1_coefficient")),
                   l0_coefficient=entry.get("l0", entry.get("l0_coefficient")),
                   lr=entry.get("lr"), name=entry.get("name"), d_in=entry.get("d_in"), options=options)


def expand_grid(grid: dict, where: str = "grid") -> list[RunSpec]:
    """Every combination of a grid's ``arch`` x ``d_sae`` x sparsity (``k`` / ``l1`` / ``l0``) x ``lr``."""
    unknown = set(grid) - _GRID_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; a grid takes {sorted(_GRID_KEYS)}")
    as_list = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    if "arch" not in as_list or "d_sae" not in as_list:
        raise ConfigError(f"{where}: a grid needs 'arch' and 'd_sae' lists")
    specs = []
    for arch, d_sae, lr in itertools.product(as_list["arch"], as_list["d_sae"], as_list.get("lr", [None])):
        if arch not in ARCHITECTURES:
            raise ConfigError(f"{where}: unknown arch {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
        knob = get_architecture(arch).sparsity  # "k", "l1" or "l0"
        sparsities = [{knob: v} for v in as_list.get(knob, [32] if knob == "k" else [None])]
        for sparsity in sparsities:
            specs.append(_spec_from_dict({"arch": arch, "d_sae": d_sae, "lr": lr, **sparsity}, where))
    return specs


def load_sweep(path: str | Path) -> tuple[list[RunSpec], dict[str, Any], dict[str, Any]]:
    """Parse a sweep file: (SAEs, TrainConfig overrides, source options ``store`` / ``hook``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read the sweep file {path}: {err}") from err
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError
        mark = getattr(err, "problem_mark", None)
        where = (f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else
                 f" at line {getattr(err, 'lineno')}, column {getattr(err, 'colno')}" if hasattr(err, "lineno") else "")
        problem = getattr(err, "problem", None) or getattr(err, "msg", None) or str(err)
        raise ConfigError(f"the sweep file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}"
                         f"{where}: {' '.join(str(problem).split())}; fix it (see workbench train --help)") from err
    if not isinstance(data, dict):
        raise ConfigError(f"the sweep file {path} must hold a mapping with 'train', 'grid' and/or 'runs'")
    unknown = set(data) - {"train", "grid", "runs", "store", "hook"}
    if unknown:
        raise ConfigError(f"the sweep file {path} has unknown key(s) {sorted(unknown)}; use train, grid, runs, store, "
                         f"hook")
    specs = expand_grid(data["grid"], f"{path}: grid") if data.get("grid") else []
    for i, entry in enumerate(data.get("runs") or []):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: runs[{i}] must be a mapping")
        specs.append(_spec_from_dict(entry, f"{path}: runs[{i}]"))
    train_over = dict(data.get("train") or {})
    for key in _COUNT_FIELDS & set(train_over):
        if train_over[key] is not None:
            train_over[key] = parse_count(train_over[key])
    source = {k: data[k] for k in ("store", "hook") if k in data}
    return specs, train_over, source


def _knob(knob: str) -> str:
    """The architectures whose sparsity ``knob`` ("k", "l1", "l0") sets, for the help text."""
    return " / ".join(n for n, a in architectures().items() if a.sparsity == knob) or "none"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to an argparse ``subparsers`` object (its handler is ``args.func``)."""
    p = subparsers.add_parser("train", help="train SAEs on an activation store", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="activation store directory")
    p.add_argument("--hook", help="hook to train on, when the store holds several")
    p.add_argument("--sweep", help="YAML or JSON sweep file (see above)")
    p.add_argument("--arch", action="append", choices=ARCHITECTURES, help="architecture (repeat for a grid)")
    p.add_argument("--d-sae", action="append", type=parse_count, help="dictionary size (repeat for a grid)")
    p.add_argument("--k", action="append", type=float, help=f"k of {_knob('k')} (repeat for a grid)")
    p.add_argument("--l1", action="append", type=float, help=f"L1 coefficient of {_knob('l1')} (repeat for a grid)")
    p.add_argument("--l0", action="append", type=float, help=f"L0 coefficient of {_knob('l0')} (repeat for a grid)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's, per architecture)")
    p.add_argument("--tokens", type=parse_count, help="training tokens per epoch, e.g. 2M (default 2M)")
    p.add_argument("--epochs", type=int, help="passes over the store's training tokens, each reshuffled (default 1)")
    p.add_argument("--batch-size", type=parse_count, help="tokens per batch (default 4096)")
    p.add_argument("--out", help="output directory (default runs/train-<store name>)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the dense matmuls (CUDA only)")
    p.add_argument("--seed", type=int, help="seed of the initialisation and the batch order")
    p.add_argument("--dead-window", type=parse_count, help="dead-latent window in tokens")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 100)")
    p.add_argument("--log-every", type=int, help="steps between metric lines (default 10)")
    p.add_argument("--holdout-tokens", type=parse_count, default=0,
                   help="tokens at the head of the shuffled store kept out of training")
    p.add_argument("--wandb-project", help="also log to this wandb project (wandb must be installed)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--spread-runs", action="store_true",
                   help="under torchrun: train different SAEs on different ranks (default: data parallel)")
    p.set_defaults(func=run)
    return p


def build_specs(args: argparse.Namespace, sweep_specs: Sequence[RunSpec]) -> list[RunSpec]:
    specs = list(sweep_specs)
    if args.arch or args.d_sae:
        if not (args.arch and args.d_sae):
            raise ConfigError("give both --arch and --d-sae (or a --sweep file)")
        grid: dict[str, Any] = {"arch": args.arch, "d_sae": args.d_sae}
        for flag in ("k", "l1", "l0"):
            if getattr(args, flag):
                grid[flag] = getattr(args, flag)
        if args.lr is not None:
            grid["lr"] = [args.lr]
        specs += expand_grid(grid, "command line")
    if not specs:
        raise ConfigError("nothing to train: give --arch and --d-sae, or --sweep FILE")
    return specs


def build_config(args: argparse.Namespace, overrides: dict[str, Any]) -> TrainConfig:
    values = dict(overrides)
    flags = {"total_tokens": args.tokens, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
             "bf16": args.bf16 or None, "dead_window_tokens": args.dead_window,
             "checkpoint_every": args.checkpoint_every, "log_every": args.log_every,
             "wandb_project": args.wandb_project, "device": args.device}
    values.update({k: v for k, v in flags.items() if v is not None})
    return TrainConfig.from_dict(values)


def build_source(store: str, hook: str | None, seed: int, holdout_tokens: int) -> BatchSource:
    return StoreSource(store, hook=hook, seed=seed, holdout_tokens=holdout_tokens)


def run(args: argparse.Namespace) -> int:
    """Train; a mistake raises a WorkbenchError and a NaN loss TrainingDiverged (``workbench.cli`` prints them)."""
    sweep_specs, overrides, source_opts = load_sweep(args.sweep) if args.sweep else ([], {}, {})
    specs = build_specs(args, sweep_specs)
    config = build_config(args, overrides)
    store = args.store or source_opts.get("store")
    if not store:
        raise ConfigError("no activation store: pass --store PATH (or 'store:' in the sweep file)")
    source = build_source(store, args.hook or source_opts.get("hook"), config.seed, args.holdout_tokens)
    out = Path(args.out) if args.out else Path("runs") / f"train-{Path(store).name}"
    init_from_env(config.resolved_device)  # under torchrun: join the process group (no-op otherwise)
    dist = Distributed.current("runs" if args.spread_runs else "data")
    result = train(specs, config, source, out, resume=not args.no_resume, progress=not args.no_progress,
                   distributed=dist)
    summary = {"out": str(out), "input_scale": result.input_scale, "tokens": result.tokens,
               "epochs": config.epochs, "dead_window_tokens": result.dead_window_tokens,
               "tokens_per_s": result.tokens_per_s,
               "runs": {n: {"path": str(r.path), **{k: r.metrics.get(k) for k in ("fvu", "l0", "dead_fraction")},
                            **{k: (r.epochs[-1] if r.epochs else {}).get(k) for k in ("heldout_fvu", "train_fvu")}}
                        for n, r in result.runs.items()}}
    if dist.rank == 0 or dist.mode == "runs":
        print(json.dumps(summary, indent=2))
    return 0


def main(argv: Sequence[str] | None = None, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
         ) -> int:
    """``workbench train ...`` (``argv`` starts with ``train``) without the command line's error handling (errors
    raise); ``workbench.cli.main`` is the entry point that prints them."""
    parser = parser_class(prog="workbench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
