"""The flat import paths of workbench 0.1 (``workbench.features``, ``workbench.train``...), kept for one release.

Each old module name is an alias of the module that now owns the code (``workbench.features`` *is*
``workbench.analysis.features``), so ``from workbench.features import compute_features`` keeps working and
monkeypatching either name patches the same object. Importing an old name warns once with the new path.
These aliases go away in workbench 0.3.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

__all__ = ["MOVED", "install"]

# old module -> the module that owns its code now
MOVED: dict[str, str] = {
    "workbench.home": "workbench.core.home",
    "workbench.config": "workbench.core.config",
    "workbench.jsonfile": "workbench.core.persist",
    "workbench.hardware": "workbench.core.hardware",
    "workbench.assets": "workbench.data.assets",
    "workbench.models": "workbench.data.models",
    "workbench.chat": "workbench.data.chat",
    "workbench.corpus": "workbench.data.corpus",
    "workbench.hooks": "workbench.data.hooks",
    "workbench.store": "workbench.data.store",
    "workbench.harvest": "workbench.data.harvest",
    "workbench.sae_kernels": "workbench.sae.kernels",
    "workbench.sae_io": "workbench.sae.io",
    "workbench.train": "workbench.sae.train",
    "workbench.train_cli": "workbench.sae.cli",
    "workbench.evaluate": "workbench.sae.evaluate",
    "workbench.features": "workbench.analysis.features",
    "workbench.feature_kernels": "workbench.analysis.feature_kernels",
    "workbench.logits": "workbench.analysis.logits",
    "workbench.search": "workbench.analysis.search",
    "workbench.explain": "workbench.analysis.explain",
    "workbench.neurons": "workbench.analysis.neurons",
    "workbench.neighborhoods": "workbench.analysis.neighborhoods",
    "workbench.splitting": "workbench.analysis.splitting",
    "workbench.scaling": "workbench.analysis.scaling",
    "workbench.completeness": "workbench.analysis.completeness",
    "workbench.multilingual": "workbench.analysis.multilingual",
    "workbench.generation": "workbench.intervene.generation",
    "workbench.steering": "workbench.intervene.steering",
    "workbench.attribution": "workbench.intervene.attribution",
    "workbench.profile": "workbench.studies.profile",
    "workbench.demo": "workbench.studies.demo",
    "widgets.html": "workbench.report.html",
}
# ``workbench.sae`` and ``workbench.report`` are packages now; they re-export what the old modules held.


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target
        self.target_spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.target_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # already executed; the import system stamped the alias's spec on it, so give it back its own
        module.__spec__ = self.target_spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        new = MOVED.get(name)
        if new is None:
            return None
        warnings.warn(f"{name} moved to {new}; the old path goes away in workbench 0.3", DeprecationWarning,
                      stacklevel=3)
        return importlib.machinery.ModuleSpec(name, _AliasLoader(new))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
