"""The package installs beside a user's own torch and keeps it.

* always (fast): every runtime requirement on torch, sae-lens and transformer-lens is a range that admits the
  torch builds this machine has (the Makefile's 2.13.0 and the newer CUDA 2.14.1), never an exact pin;
* ``make check-install`` (``WORKBENCH_CHECK_INSTALL=1``; minutes and about 5 GB, so not part of ``make test``): a
  fresh virtual environment gets another torch first (``WORKBENCH_OTHER_TORCH``, default ``torch==2.14.1``, the
  CUDA build, with its own dependencies), then this package's wheel; pip must keep that torch. ``pip list`` before
  and after is written to ``$WORKBENCH_CHECK_INSTALL_OUT`` (default ``check-install.json``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in project["dependencies"]}


def test_runtime_requirements_are_ranges_that_admit_other_torch_builds():
    reqs = _requirements()
    for name in ("torch", "sae-lens", "transformer-lens"):
        assert not any(s.operator in ("==", "===", "~=") for s in reqs[name].specifier), reqs[name]
    torch_spec = reqs["torch"].specifier
    for version in ("2.6.0", "2.13.0", "2.13.0+cpu", "2.14.1", "2.15.0"):
        assert torch_spec.contains(version), (version, torch_spec)
    assert not torch_spec.contains("2.5.1")  # below transformer-lens 3's floor
    assert reqs["sae-lens"].specifier.contains("6.0.0") and reqs["sae-lens"].specifier.contains("6.54.12")
    assert not reqs["sae-lens"].specifier.contains("7.0.0")
    assert reqs["transformer-lens"].specifier.contains("3.0.0") and not reqs["transformer-lens"].specifier.contains("4.0")
    # the exact CPU torch of the offline path lives in the Makefile, installed before the package
    assert "TORCH  := torch==2.13.0" in (REPO / "Makefile").read_text()


def _pip(python: Path, *args: str, timeout: int = 1800) -> str:
    cmd = [sys.executable, "-m", "pip", "--python", str(python), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _listing(python: Path) -> dict[str, str]:
    return {p["name"].lower(): p["version"] for p in json.loads(_pip(python, "list", "--format", "json"))}


@pytest.mark.skipif(os.environ.get("WORKBENCH_CHECK_INSTALL") != "1",
                    reason="installs a second torch into a fresh venv (minutes, ~5 GB): run `make check-install`")
def test_wheel_installs_beside_another_torch_and_keeps_it(tmp_path):
    other = os.environ.get("WORKBENCH_OTHER_TORCH", "torch==2.14.1")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    _pip(python, "install", "-q", other)
    before = _listing(python)
    wheels = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(REPO)], check=True)
    wheel = next(wheels.glob("workbench-*.whl"))
    log = _pip(python, "install", str(wheel))
    after = _listing(python)
    probe = subprocess.run([str(python), "-c", "import torch, workbench, sae_lens, transformer_lens; "
                            "from workbench.data.harvest import HarvestSpec; print(torch.__version__)"],
                           capture_output=True, text=True, timeout=600)
    record = {"other_torch": other, "before": before, "after": after,
              "added": {k: v for k, v in after.items() if k not in before},
              "changed": {k: [before[k], v] for k, v in after.items() if k in before and before[k] != v},
              "import_probe": probe.stdout.strip() or probe.stderr[-2000:]}
    out = Path(os.environ.get("WORKBENCH_CHECK_INSTALL_OUT", REPO / "check-install.json"))
    out.write_text(json.dumps(record, indent=1, sort_keys=True))
    assert after["torch"] == before["torch"], f"pip replaced torch {before['torch']} with {after['torch']}:\n{log[-3000:]}"
    assert "torch" not in record["changed"] and "workbench" in after
    assert probe.returncode == 0 and probe.stdout.strip().split("+")[0] == before["torch"].split("+")[0], record["import_probe"]
