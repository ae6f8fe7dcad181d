"""The public API of ``workbench`` and the 0.1 import paths kept for one release."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import workbench
from workbench import _legacy


def test_every_public_name_resolves_to_the_object_of_its_owning_module():
    for name, owner in workbench._API.items():
        assert getattr(workbench, name) is getattr(importlib.import_module(owner), name), name
    assert set(workbench.__all__) <= set(dir(workbench))


def test_an_unknown_public_name_lists_the_known_ones():
    with pytest.raises(AttributeError, match="no attribute 'load_modle'.*load_model"):
        workbench.load_modle


@pytest.mark.parametrize("old,new", sorted(_legacy.MOVED.items()))
def test_old_flat_paths_alias_the_new_modules(old, new):
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"import workbench, importlib\n"
            f"try:\n    importlib.import_module({old!r})\nexcept DeprecationWarning as w:\n    print('WARNED', w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"WARNED {old} moved to {new}" in out.stdout, out.stderr[-2000:]
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        sys.modules.pop(old, None)
        mod = importlib.import_module(old)
    target = importlib.import_module(new)
    assert mod is target and target.__spec__.name == new  # one module object, which keeps its own spec


def test_old_names_of_modules_that_became_packages_still_import():
    from workbench.report import write_report
    from workbench.report.page import write_report as page_write_report
    from workbench.sae import SAE, SAEConfig
    from workbench.sae.model import SAE as ModelSAE

    assert SAE is ModelSAE and SAEConfig.__module__ == "workbench.sae.model"
    assert write_report is page_write_report


def test_every_moved_target_exists():
    for new in set(_legacy.MOVED.values()):
        assert importlib.util.find_spec(new) is not None, new
