"""SAEBench on a finished run (``workbench saebench RUN``): find the SAE, load its model, run the evals of
:mod:`workbench.analysis.saebench`, keep the results under ``<run>/saebench/`` (docs/methods.md §21).

    from workbench.studies.saebench import saebench_run
    out = saebench_run("runs/demo", evals=("core", "sparse_probing"), config=SAEBenchConfig.demo())
    out["summary"]["core"]["ce_loss_score"]

``RUN`` is a run folder holding exactly one SAE folder below it (the trainer's ``sae/<name>/sae/``; checkpoints
are skipped) or an SAE folder itself (``cfg.json`` + ``sae_weights.safetensors``; results then go in its
``saebench/`` subfolder). Each eval's JSON is reused when the SAE's weights, the config and the SAEBench version
are those it was computed with (``cache_key.json``); ``force`` recomputes. ``summary.json`` holds every eval's
headline metrics (SAEBench's ``eval_result_metrics``, flattened) and wall times.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from workbench.core.errors import InputError
from workbench.analysis.saebench import EVALS, OUTPUT_NAMES, SAEBenchConfig, parse_evals, run_saebench

__all__ = ["find_sae_folder", "saebench_run", "summarise"]

_SKIP = {"checkpoints", "saebench"}


def find_sae_folder(path: str | Path, max_depth: int = 5) -> Path:
    """The SAE folder of ``path``: itself if it holds ``cfg.json``, else the one SAE folder below it."""
    path = Path(path)
    if (path / "cfg.json").is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path} does not exist: point at a run folder (e.g. runs/demo) or an SAE folder",
                         param="run")
    found = []
    for cfg in sorted(path.rglob("cfg.json")):
        parts = cfg.relative_to(path).parts
        if len(parts) <= max_depth + 1 and not _SKIP & set(parts[:-1]) and \
                (cfg.parent / "sae_weights.safetensors").is_file():
            found.append(cfg.parent)
    if not found:
        raise ValueError(f"no SAE folder (cfg.json + sae_weights.safetensors) under {path}: train one first "
                         f"(workbench demo / workbench train) or point at the SAE folder")
    if len(found) > 1:
        names = ", ".join(str(f) for f in found[:6])
        raise ValueError(f"{path} holds {len(found)} SAE folders ({names}): pass the one to evaluate")
    return found[0]


def _weights_digest(sae_dir: Path) -> str:
    h = hashlib.sha256()
    with open(sae_dir / "sae_weights.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update((sae_dir / "cfg.json").read_bytes())
    return h.hexdigest()[:24]


def summarise(results: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Each eval's ``eval_result_metrics``, one level flattened: {eval: {metric: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, res in results.items():
        flat: dict[str, Any] = {}
        for group in (res.get("eval_result_metrics") or {}).values():
            if isinstance(group, dict):
                flat.update({k: v for k, v in group.items() if v is not None})
        out[name] = flat
    return out


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def saebench_run(path: str | Path, evals: str | Sequence[str] = EVALS, config: SAEBenchConfig | None = None, *,
                 model: Any = None, out: str | Path | None = None, force: bool = False,
                 device: str = "cpu") -> dict[str, Any]:
    """Run (or reuse) SAEBench's ``evals`` on the SAE of ``path``; returns {"sae_dir", "out_dir", "results",
    "summary", "timings", "cached"} (``cached``: the evals read back from disk). ``model`` defaults to the
    SAE's ``metadata.model_name`` loaded with :func:`workbench.data.models.load_model`."""
    from importlib.metadata import version

    from workbench.core.persist import atomic_write_text

    config = config or SAEBenchConfig()
    names = parse_evals(evals)
    sae_dir = find_sae_folder(path)
    out_dir = Path(out) if out is not None else (sae_dir if sae_dir == Path(path) else Path(path)) / "saebench"
    out_dir.mkdir(parents=True, exist_ok=True)
    key = json.loads(json.dumps({"sae": _weights_digest(sae_dir), "config": config.to_dict(),
                                 "sae_bench": version("sae-bench")}))  # as it reads back (tuples -> lists)
    keys = _read_json(out_dir / "cache_key.json") or {}
    saved = _read_json(out_dir / "summary.json") or {}
    timings: dict[str, float] = dict(saved.get("timings") or {})
    results: dict[str, dict] = {}
    cached = []
    for name in names:
        prior = None if force or keys.get(name) != key else _read_json(out_dir / f"{OUTPUT_NAMES[name]}.json")
        if prior is not None:
            results[name] = prior
            cached.append(name)
    todo = [n for n in names if n not in results]
    if todo:
        if model is None:
            from workbench.data.models import load_model

            meta = json.loads((sae_dir / "cfg.json").read_text()).get("metadata") or {}
            if not meta.get("model_name"):
                raise ValueError(f"{sae_dir / 'cfg.json'} names no model (metadata.model_name): pass model=")
            model = load_model(meta["model_name"], device=device)
        new_times: dict[str, float] = {}
        for name in todo:  # one at a time, so the key file follows each finished eval
            results.update(run_saebench(model, sae_dir, evals=(name,), config=config, out_dir=out_dir,
                                        sae_id=sae_dir.name, timings=new_times))
            keys[name] = key
            atomic_write_text(out_dir / "cache_key.json", json.dumps(keys, indent=1))
        timings.update(new_times)
    summary = {**(saved.get("summary") or {}), **summarise(results)}
    atomic_write_text(out_dir / "summary.json", json.dumps({"sae_dir": str(sae_dir), "summary": summary,
                                                            "timings": timings}, indent=1))
    return {"sae_dir": sae_dir, "out_dir": out_dir, "results": {n: results[n] for n in names},
            "summary": {n: summary[n] for n in names}, "timings": {n: timings.get(n) for n in names},
            "cached": cached}
