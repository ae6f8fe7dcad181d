"""Finding a finished run's pieces on disk: from a run folder (``runs/demo``) or a feature-results folder, the
feature results, the store they read, the SAE whose weights match them and a held-out store (what
``workbench scorecard`` needs)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from workbench.core.errors import InputError
from workbench.analysis.features import FeatureResults, sae_fingerprint
from workbench.data.store import ActivationStore
from workbench.sae.io import load_sae

__all__ = ["locate_run"]



def _features_dir(path: Path) -> Path:
    for cand in (path, path / "features"):
        if (cand / "features.json").is_file():
            return cand
    raise InputError(f"{path} holds no feature results (no features.json in it or in {path / 'features'}): point at "
                     f"a run folder (e.g. runs/demo) or at the folder compute_features wrote")


def _find_sae(results: FeatureResults, roots: Sequence[Path], max_depth: int = 4):
    want = results.meta.get("sae_fingerprint")
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for cfg in sorted(root.rglob("cfg.json")):
            folder = cfg.parent.resolve()
            if folder in seen or len(cfg.relative_to(root).parts) > max_depth + 1:
                continue
            seen.add(folder)
            try:
                sae = load_sae(folder)
            except ValueError:
                continue
            if int(sae.cfg.d_sae) == results.d_sae and (want is None or sae_fingerprint(sae) == want):
                return sae, folder
    return None, None


def locate_run(path: str | Path, *, sae: str | Path | None = None, store: str | Path | None = None,
               heldout: str | Path | None = None) -> dict:
    """What :func:`scorecard` needs, found from a run folder (e.g. ``runs/demo``: ``features/``, an SAE folder
    below it, ``store/``, ``heldout_store/``) or a feature-results folder.

    The feature results name their store (``meta["store"]["path"]``) and their SAE's fingerprint: the SAE is the
    ``cfg.json`` folder under the run (or the features folder's parent) whose weights match, unless ``sae`` is
    given. Held-out text: ``heldout``, else a ``heldout_store`` folder of the run, else the store's contexts the
    feature pass did not see (``heldout`` None). Returns {"features_dir", "results", "store", "sae", "sae_dir",
    "heldout"}.
    """
    path = Path(path)
    fdir = _features_dir(path)
    results = FeatureResults.load(fdir)
    run = path if fdir != path else fdir.parent
    if store is not None:
        store_path = Path(store)
    else:  # the store the feature pass read, or the run's own if that one moved
        store_path = Path((results.meta.get("store") or {}).get("path") or run / "store")
        if not (store_path / "manifest.json").is_file() and (run / "store" / "manifest.json").is_file():
            store_path = run / "store"
    st = ActivationStore.open(store_path)
    if sae is not None:
        model = load_sae(sae)
        sae_dir = Path(sae)
    else:
        model, sae_dir = _find_sae(results, [run, fdir.parent])
        if model is None:
            raise InputError(f"no SAE under {run} matches the feature results in {fdir} (by its weights' "
                             f"fingerprint): pass sae=<its folder>", param="sae")
    held = None
    if heldout is not None:
        held = ActivationStore.open(heldout)
    elif (run / "heldout_store" / "manifest.json").is_file():
        held = ActivationStore.open(run / "heldout_store")
    return {"features_dir": fdir, "results": results, "store": st, "sae": model, "sae_dir": sae_dir, "heldout": held}
